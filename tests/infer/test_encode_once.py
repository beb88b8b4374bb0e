"""The recognizer runs the audio encoder once per batch: the CTC head (joint decoding, first-pass
prompt, hotword retrieval, timestamps, RL selection's CTC hypothesis) and the adaptor read the same
encoder output, and the transcripts equal those of the two-pass flow (an encoder run for the CTC
posteriors, another for the prompt embeddings)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.data import tone

from funasr_jax.audio.io import load_audio
from funasr_jax.data.manifest import read_manifests
from funasr_jax.data.rows import pad_batch
from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.infer import recognizer as R
from funasr_jax.infer.long_audio import segment_words, transcribe_long
from funasr_jax.infer.recognizer import Recognizer, Utterance
from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID
from funasr_jax.models.config import audio_token_count, tiny_config
from funasr_jax.models.ctc_head import ctc_greedy
from funasr_jax.models.encoder import SenseVoiceEncoderSmall
from funasr_jax.models.funasr import FunASRNano, llm_module
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.prompt import build_prompt, instruction_text, with_context, with_first_pass
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SR = 16000

# (ctc_weight, first_pass_prompt, hotwords): every way the CTC head feeds the LLM decode
CASES = {"joint": (0.5, False, False), "first_pass": (0.0, True, False), "hotwords": (0.0, False, True),
         "all": (0.5, True, True)}


@pytest.fixture(scope="module")
def model():
    from configs.base import model_for_preset
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    return cfg, init_params(cfg, jax.random.PRNGKey(11))


def make_rec(model, ctc_weight=0.0, first_pass=False, **kw) -> Recognizer:
    cfg, params = model
    tok = str(DEMO / "tokenizer.model")
    return Recognizer(cfg, params, load_tokenizer(tok), CTCVocabulary(tok), ctc_weight=ctc_weight,
                      first_pass_prompt=first_pass, tokens_per_second=6.0, **kw)


def waves(n=3):
    return [tone(0.5 + 0.35 * k, 200 + 70 * k, seed=k) for k in range(n)]


def utterances(rec, with_hotwords):
    index = HotwordIndex(["今天", "天气", "hello"]) if with_hotwords else None
    return [Utterance(rec.features(w), instruction_text(), hotwords=index) for w in waves()]


class EncoderSpy:
    """Counts calls of the recognizer's jitted `encoder_outputs` and every trace of the SAN-M
    encoder module (jit caches cleared first, so each jitted program that holds the encoder
    traces it when first called). Every trace made inside `encoder_outputs`, and n calls of it:
    the encoder ran n times."""

    def __init__(self, monkeypatch):
        self.calls, self.traces, self.inside = 0, [], False
        real_encode, real_call = R.encoder_outputs, SenseVoiceEncoderSmall.__call__

        def encode(*a, **kw):
            self.calls += 1
            self.inside = True
            try:
                return real_encode(*a, **kw)
            finally:
                self.inside = False

        def call(module, *a, **kw):
            self.traces.append(self.inside)
            return real_call(module, *a, **kw)

        jax.clear_caches()
        monkeypatch.setattr(R, "encoder_outputs", encode)
        monkeypatch.setattr(SenseVoiceEncoderSmall, "__call__", call)

    def assert_runs(self, n: int):
        assert self.traces and all(self.traces), f"encoder traces (True: inside encoder_outputs): {self.traces}"
        assert self.calls == n


@pytest.mark.parametrize("case", CASES)
def test_one_encoder_pass_per_batch(model, monkeypatch, case):
    ctc_weight, first_pass, hot = CASES[case]
    rec = make_rec(model, ctc_weight, first_pass)
    utts = utterances(rec, hot)
    spy = EncoderSpy(monkeypatch)
    texts, firsts = rec.decode_llm_with_first_pass(utts, max_new_tokens=6)
    spy.assert_runs(1)
    assert len(texts) == 3 and (firsts is not None) == first_pass


def test_recognize_encodes_each_batch_once(model, monkeypatch):
    rec = make_rec(model, 0.5, True)
    ws = waves(5)
    spy = EncoderSpy(monkeypatch)
    out = rec.recognize(ws, [instruction_text()] * 5, batch_size=2, max_new_tokens=4,
                        hotwords=[HotwordIndex(["天气"])] * 5, ctc_text=True, ctc_posteriors=True)
    spy.assert_runs(3)  # batches of 2, 2, 1 segments
    assert all(t.segments == 1 and t.ctc_text is not None for t in out)


# ---------------------------------------------------------------- the two-pass reference


@functools.partial(jax.jit, static_argnums=0)
def two_pass_ctc(model: FunASRNano, params, feats, lengths):
    """First encoder run: CTC log-posteriors [B, T, V] from features [B, T, 560]."""
    def f(m, feats, lengths):
        enc, enc_lengths = m.encode(feats, lengths)
        return jax.nn.log_softmax(m.ctc_logits(enc, enc_lengths), axis=-1)

    return model.apply({"params": params}, feats, lengths, method=f)


@functools.partial(jax.jit, static_argnums=0)
def two_pass_embeds(model: FunASRNano, params, feats, lengths, ids, start, n_audio):
    """Second encoder run: prompt embeddings [B, P, D] with the adaptor rows spliced in."""
    def f(m, feats, lengths, ids, start, n_audio):
        adapted, _, _ = m.audio_embeds(feats, lengths)
        return m.embed_prompt(ids, adapted, start, n_audio)

    return model.apply({"params": params}, feats, lengths, ids, start, n_audio, method=f)


def two_pass_ids(rec: Recognizer, utts, max_new_tokens: int):
    """New token ids per row the plain way: features encoded for the CTC head, hypotheses,
    prompts (hotwords retrieved, first pass), features encoded again for the prompt, greedy."""
    feats = [u.feats for u in utts]
    x, lengths = rec.pad_feats(feats)
    logp = two_pass_ctc(rec.model, rec.params, x, lengths)
    hyps = [" ".join(rec.ctc_vocab.decode(list(s)).split())
            for s in ctc_greedy(np.asarray(logp), lengths, rec.cfg.ctc.blank)]
    instructions = [with_context(u.instruction, hotwords=rec.prompt_hotwords(u, h)) for u, h in zip(utts, hyps)]
    if rec.first_pass_prompt:
        instructions = [with_first_pass(i, h) for i, h in zip(instructions, hyps)]
    prompts = [build_prompt(rec.tokenizer, system=u.system, instruction=i, n_audio=int(audio_token_count(len(f))))
               for u, i, f in zip(utts, instructions, feats)]
    width = 16 * -(-max(len(p.input_ids) for p in prompts) // 16)
    b = pad_batch(feats, prompts, pad_id=AUDIO_PLACEHOLDER_ID, feat_length=x.shape[1], token_length=width,
                  side="left", targets=False)
    embeds = two_pass_embeds(rec.model, rec.params, b.feats, b.feat_lengths, b.input_ids, b.audio_start,
                             b.audio_tokens)
    tokens, n = greedy_generate(rec.decoder, rec.params["llm"], embeds, b.token_lengths,
                                max_new_tokens=max_new_tokens, eos_id=rec.tokenizer.eos_id,
                                pad_id=rec.tokenizer.pad_id, ctc_log_probs=logp if rec.ctc_weight > 0 else None,
                                ctc_lengths=b.feat_lengths, ctc_weight=rec.ctc_weight, ctc_blank=rec.cfg.ctc.blank,
                                row_max_new_tokens=rec.token_limits([len(f) for f in feats], max_new_tokens))
    eos = rec.tokenizer.eos_id
    return [[int(t) for t in row[:int(k)] if int(t) != eos] for row, k in zip(np.asarray(tokens), np.asarray(n))], hyps


@pytest.mark.parametrize("case", CASES)
def test_transcripts_equal_the_two_pass_reference(model, case):
    ctc_weight, first_pass, hot = CASES[case]
    rec = make_rec(model, ctc_weight, first_pass)
    utts = utterances(rec, False)
    if hot:  # words of the CTC hypotheses, so that retrieval really puts some into the prompts
        hyps = rec.decode_ctc([u.feats for u in utts])
        words = [w for h in hyps for w in re.findall(r"[\u4e00-\u9fff]{2,}", h)][:3] + ["甲乙丙"]
        utts = [Utterance(u.feats, u.instruction, hotwords=HotwordIndex(words)) for u in utts]
        assert any(rec.prompt_hotwords(u, h) for u, h in zip(utts, hyps))
    want, want_hyps = two_pass_ids(rec, utts, 8)
    got, first = rec.generate_ids(utts, 8)
    assert got == want and any(got)
    assert first == (want_hyps if first_pass else None)


# ---------------------------------------------------------------- CTC outputs of recognize and their users


def test_ctc_text_and_posteriors_come_with_the_llm_transcript(model):
    """recognize(ctc_text, ctc_posteriors) keeps the LLM transcripts and gives the CTC mode's text
    (what rl_select compares against) and each segment's posteriors."""
    rec = make_rec(model, 0.5)
    ws = waves(4)
    ins = [instruction_text()] * 4
    plain = rec.recognize(ws, ins, batch_size=3, max_new_tokens=6)
    both = rec.recognize(ws, ins, batch_size=3, max_new_tokens=6, ctc_text=True, ctc_posteriors=True)
    ctc = rec.recognize(ws, ins, batch_size=3, mode="ctc")
    assert [t.text for t in both] == [t.text for t in plain] and all(t.ctc_posteriors is None for t in plain)
    assert [t.ctc_text for t in both] == [t.text for t in ctc]
    for t, w in zip(both, ws):
        (seg,) = t.ctc_posteriors
        assert (seg.start, seg.end) == (0, len(w))
        feats = rec.features(w)
        x, n = rec.pad_feats([feats])
        alone = np.asarray(R.ctc_log_probs(rec.model, rec.params, x, n))[0, :len(feats)]
        np.testing.assert_allclose(seg.log_probs, alone, atol=1e-5)
    with pytest.raises(ValueError, match="mode 'llm'"):
        rec.recognize(ws, ins, mode="ctc", ctc_text=True)


def test_long_audio_aligns_from_the_decoding_pass(model, monkeypatch):
    """Word times equal a separate CTC pass's (the former flow), with one encoder run per batch."""
    rec = make_rec(model, 0.0)
    gap = np.zeros(SR, np.float32)
    exs = [e for e in read_manifests([str(DEMO / "test.jsonl")]) if e.subset != "noise"][:3]
    wave = np.concatenate([x for e in exs for x in (gap, load_audio(e.audio_path))] + [gap])
    spy = EncoderSpy(monkeypatch)
    segs = transcribe_long(rec, wave, batch_size=2, max_new_tokens=6)
    spy.assert_runs(2)  # three VAD segments (the utterances): batches of 2 and 1
    assert len(segs) == 3 and any(s.words for s in segs)
    pieces = [wave[int(s.start_ms * 16): int(s.end_ms * 16)] for s in segs]
    want = segment_words(rec, pieces, [s.text for s in segs], [s.start_ms for s in segs])
    assert [s.words for s in segs] == want



def test_the_recognizer_never_emits_an_id_past_its_tokenizer():
    """An LLM embedding larger than the tokenizer (Qwen3: 151,936 rows, 151,669 tokens): the
    recognizer decodes through a CausalDecoder that masks the rows the tokenizer has no token for
    (the masking itself: tests/decode/test_generate.py::test_vocab_limit_keeps_ids_the_tokenizer_has)."""

    class SevenTokens:
        vocab_size = 7

    cfg = tiny_config()
    rec = Recognizer(cfg, None, SevenTokens())
    assert rec.decoder == CausalDecoder(llm_module(cfg), vocab_size=7)
