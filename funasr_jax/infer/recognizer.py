"""Batch speech recognition with a loaded model: LLM greedy decoding or CTC greedy decoding.

    rec = Recognizer.from_checkpoint("runs/sft4")
    rec.transcribe(["a.wav", "b.flac"])          # -> ["...", "..."]

Audio is bucketed to a few static LFR lengths (multiples of `frame_bucket`) so the jitted
encoder and generator compile once per bucket, not once per file.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.audio.frontend import FrontendConfig, extract_features, load_cmvn
from funasr_jax.audio.io import load_audio
from funasr_jax.data.rows import pad_batch, pad_feats
from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.io.checkpoint import CheckpointError, LoadedModel, load_model
from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID
from funasr_jax.models.config import FunASRConfig, audio_token_count
from funasr_jax.models.ctc_head import ctc_greedy
from funasr_jax.models.funasr import FunASRNano
from funasr_jax.models.qwen3 import Qwen3ForCausalLM
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt, instruction_text, with_first_pass
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEFAULT_FRONTEND = FrontendConfig()  # no CMVN


@functools.partial(jax.jit, static_argnums=0)
def prompt_embeds(model: FunASRNano, params, feats, feat_lengths, input_ids, audio_start, audio_tokens):
    """LLM input embeddings [B, P, D] laid out like `input_ids` (left-padded for generation), with
    the audio rows spliced in at [audio_start, audio_start + audio_tokens)."""
    def f(module, feats, feat_lengths, input_ids, audio_start, audio_tokens):
        adapted, _, _ = module.audio_embeds(feats, feat_lengths)
        return module.embed_prompt(input_ids, adapted, audio_start, audio_tokens)

    return model.apply({"params": params}, feats, feat_lengths, input_ids, audio_start, audio_tokens, method=f)


@functools.partial(jax.jit, static_argnums=0)
def ctc_log_probs(model: FunASRNano, params, feats, feat_lengths):
    """CTC log-posteriors [B, T, V] from features."""
    def f(module, feats, feat_lengths):
        enc, lens = module.encode(feats, feat_lengths)
        return jax.nn.log_softmax(module.ctc_logits(enc, lens), axis=-1)

    return model.apply({"params": params}, feats, feat_lengths, method=f)


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


@dataclass
class Utterance:
    """What one decode needs: features [T, 560] and its prompt pieces."""

    feats: np.ndarray
    instruction: str
    system: str = DEFAULT_SYSTEM_PROMPT
    prev_text: str = ""


def shares_vocabulary(tokenizer, ctc_vocab) -> bool:
    """True when the CTC labels (blank aside) are the LLM tokenizer's ids: both built on the
    same sentencepiece model (the tiny preset). Fun-ASR-Nano's CTC head uses its own tokenizer."""
    a, b = getattr(tokenizer, "path", None), getattr(getattr(ctc_vocab, "sp", None), "path", None)
    if a is None or b is None:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class Recognizer:
    """first_pass_prompt: the LLM prompt carries the CTC head's greedy hypothesis
    (`prompt.with_first_pass`), as for a model trained with `data.first_pass_prompt`.
    ctc_weight: > 0 decodes the LLM jointly with the CTC head's prefix scores
    (`decode.ctc_prefix`; needs a CTC head that shares the LLM's vocabulary)."""

    def __init__(self, cfg: FunASRConfig, params, tokenizer, ctc_vocab=None,
                 frontend: FrontendConfig = DEFAULT_FRONTEND, frame_bucket: int = 32, token_bucket: int = 16,
                 first_pass_prompt: bool = False, ctc_weight: float = 0.0):
        needs_ctc = [n for n, on in (("first_pass_prompt", first_pass_prompt), ("ctc_weight", ctc_weight > 0)) if on]
        if needs_ctc and (not cfg.ctc.enabled or ctc_vocab is None):
            raise ValueError(f"{needs_ctc[0]} needs a model with the CTC branch and a CTC vocabulary")
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1), got {ctc_weight}")
        if ctc_weight > 0 and not shares_vocabulary(tokenizer, ctc_vocab):
            raise ValueError("ctc_weight > 0 (joint CTC/LLM decoding) needs a CTC vocabulary built on the LLM's "
                             "sentencepiece model; this model's CTC head has its own tokenizer")
        self.first_pass_prompt, self.ctc_weight = first_pass_prompt, float(ctc_weight)
        self.cfg, self.params, self.tokenizer, self.ctc_vocab = cfg, params, tokenizer, ctc_vocab
        self.frontend, self.frame_bucket, self.token_bucket = frontend, frame_bucket, token_bucket
        self.cmvn = load_cmvn(frontend.cmvn_file) if frontend.cmvn_file else None
        self.model = FunASRNano(cfg)
        self.decoder = CausalDecoder(Qwen3ForCausalLM(cfg.llm, dtype=jnp.dtype(cfg.dtype),
                                                      attention_impl=cfg.attention_impl))

    @classmethod
    def from_checkpoint(cls, path, tokenizer_path=None, ctc_tokenizer_path=None, **kw) -> Recognizer:
        return cls.from_loaded(load_model(path), tokenizer_path, ctc_tokenizer_path, **kw)

    @classmethod
    def from_loaded(cls, m: LoadedModel, tokenizer_path=None, ctc_tokenizer_path=None, tokenizer=None,
                    **kw) -> Recognizer:
        """A recognizer for a `load_model` result: its tokenizers, front end (CMVN), prompt and
        decoding defaults unless overridden."""
        if tokenizer is None:
            tok_path = tokenizer_path or m.tokenizer_path
            if tok_path is None:
                raise CheckpointError(f"{m.source}: no tokenizer recorded; pass --tokenizer")
            tokenizer = load_tokenizer(tok_path)
        ctc_path = ctc_tokenizer_path or m.ctc_tokenizer_path
        ctc = CTCVocabulary(ctc_path) if ctc_path and str(ctc_path).endswith(".model") else None
        kw.setdefault("frontend", m.frontend)
        kw.setdefault("first_pass_prompt", m.first_pass_prompt)
        if kw.get("ctc_weight") is None:
            kw["ctc_weight"] = m.ctc_weight
        return cls(m.cfg, m.params, tokenizer, ctc, **kw)

    # ------------------------------------------------------------------ batching helpers

    def padded_frames(self, feats: Sequence[np.ndarray]) -> int:
        """T of a batch: the longest utterance rounded up to `frame_bucket` LFR frames."""
        return _round_up(max(len(f) for f in feats), self.frame_bucket)

    def pad_feats(self, feats: Sequence[np.ndarray]):
        """-> (feats [B, T, 560] zero-padded to `padded_frames`, lengths [B])."""
        return pad_feats(feats, self.padded_frames(feats))

    # ------------------------------------------------------------------ decoding

    def decode_llm(self, utts: Sequence[Utterance], max_new_tokens: int = 128) -> list[str]:
        """Greedy LLM transcripts for a batch of utterances."""
        return self.decode_llm_with_first_pass(utts, max_new_tokens)[0]

    def decode_llm_with_first_pass(self, utts: Sequence[Utterance], max_new_tokens: int = 128):
        """(greedy LLM transcripts, the CTC first-pass hypotheses put in their prompts or None).

        One CTC forward serves both the first-pass prompt and joint decoding.
        """
        first_pass = None
        feats = [u.feats for u in utts]
        instructions = [u.instruction for u in utts]
        logp = None
        if self.ctc_weight > 0 or self.first_pass_prompt:
            x, lengths = self.pad_feats(feats)
            logp = ctc_log_probs(self.model, self.params, x, lengths)
        if self.first_pass_prompt:
            first_pass = self._ctc_texts(np.asarray(logp), lengths)
            instructions = [with_first_pass(i, h) for i, h in zip(instructions, first_pass)]
        prompts = [build_prompt(self.tokenizer, system=u.system, instruction=ins,
                                n_audio=int(audio_token_count(len(f))), prev_text=u.prev_text)
                   for u, ins, f in zip(utts, instructions, feats)]
        # Left padding (decode.generate's layout); pad columns are masked out, so any in-vocabulary id does.
        batch = pad_batch(feats, prompts, pad_id=AUDIO_PLACEHOLDER_ID, feat_length=self.padded_frames(feats),
                          token_length=_round_up(max(len(q.input_ids) for q in prompts), self.token_bucket),
                          side="left", targets=False)
        embeds = prompt_embeds(self.model, self.params, batch.feats, batch.feat_lengths, batch.input_ids,
                               batch.audio_start, batch.audio_tokens)
        tokens, n = greedy_generate(self.decoder, self.params["llm"], embeds, batch.token_lengths,
                                    max_new_tokens=max_new_tokens, eos_id=self.tokenizer.eos_id,
                                    pad_id=self.tokenizer.pad_id,
                                    ctc_log_probs=logp if self.ctc_weight > 0 else None,
                                    ctc_lengths=batch.feat_lengths,
                                    ctc_weight=self.ctc_weight, ctc_blank=self.cfg.ctc.blank)
        tokens, n = np.asarray(tokens), np.asarray(n)
        out = []
        for row, k in zip(tokens, n):
            ids_row = [int(t) for t in row[:k] if int(t) != self.tokenizer.eos_id]
            out.append(" ".join(self.tokenizer.decode(ids_row).split()))
        return out, first_pass

    def decode_ctc(self, feats_list: Sequence[np.ndarray]) -> list[str]:
        """Greedy CTC transcripts (needs the CTC branch and a CTC vocabulary)."""
        if not self.cfg.ctc.enabled or self.ctc_vocab is None:
            raise ValueError("CTC decoding needs a model with the CTC branch and a CTC vocabulary")
        feats, lengths = self.pad_feats(feats_list)
        return self._ctc_texts(np.asarray(ctc_log_probs(self.model, self.params, feats, lengths)), lengths)

    def _ctc_texts(self, logp: np.ndarray, lengths) -> list[str]:
        seqs = ctc_greedy(logp, lengths, self.cfg.ctc.blank)
        return [" ".join(self.ctc_vocab.decode(list(s)).split()) for s in seqs]

    def features(self, wave: np.ndarray) -> np.ndarray:
        return extract_features(wave, self.frontend, self.cmvn)

    def transcribe(self, audio: Sequence, *, language=None, hotwords: Sequence[str] = (), itn: bool = True,
                   batch_size: int = 8, max_new_tokens: int = 128, mode: str = "llm") -> list[str]:
        """Paths or 16 kHz float waveforms -> transcripts, in order."""
        instruction = instruction_text(language, hotwords, itn)
        out: list[str] = []
        for i in range(0, len(audio), batch_size):
            chunk = audio[i: i + batch_size]
            feats = [self.features(load_audio(a) if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__")
                                   else np.asarray(a, np.float32)) for a in chunk]
            if mode == "ctc":
                out += self.decode_ctc(feats)
            else:
                out += self.decode_llm([Utterance(f, instruction) for f in feats], max_new_tokens)
        return out
