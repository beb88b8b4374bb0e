"""The recognizer and the scripting API build their batches with `data.rows.pad_batch`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from helpers.data import CharTokenizer, tone

from funasr_jax.audio.frontend import FrontendConfig, extract_features
from funasr_jax.data.rows import pad_batch
from funasr_jax.decode.generate import greedy_generate, left_pad
from funasr_jax.infer import api
from funasr_jax.infer.recognizer import Recognizer, Utterance, prompt_embeds
from funasr_jax.models.batch import IGNORE_INDEX
from funasr_jax.models.config import audio_token_count
from funasr_jax.text.prompt import build_prompt, instruction_text
from funasr_jax.text.tokenizer import load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="module")
def rec():
    from configs.base import model_for_preset
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    return Recognizer(cfg, init_params(cfg, jax.random.PRNGKey(3)), load_tokenizer(str(DEMO / "tokenizer.model")))


def test_left_padded_prompts_equal_left_shifted_embeddings(rec):
    """Left-padding the ids (pad_batch side='left') gives, on every real position, exactly the
    embeddings of right-padded ids shifted by `decode.left_pad`, and the same greedy tokens."""
    utts = [Utterance(rec.features(tone(d, 200 + 50 * i, seed=i)), instruction_text(), prev_text="ab" * (i == 1))
            for i, d in enumerate([0.4, 1.3, 0.8])]
    feats = [u.feats for u in utts]
    prompts = [build_prompt(rec.tokenizer, system=u.system, instruction=u.instruction, prev_text=u.prev_text,
                            n_audio=int(audio_token_count(len(u.feats)))) for u in utts]
    t, length = rec.padded_frames(feats), 16 * -(-max(len(p.input_ids) for p in prompts) // 16)

    def embeds(side):
        b = pad_batch(feats, prompts, pad_id=0, feat_length=t, token_length=length, side=side, targets=False)
        return b, prompt_embeds(rec.model, rec.params, b.feats, b.feat_lengths, b.input_ids, b.audio_start,
                                b.audio_tokens)

    right, e_right = embeds("right")
    left, e_left = embeds("left")
    np.testing.assert_array_equal(left.token_lengths, right.token_lengths)
    shifted = np.asarray(left_pad(e_right, right.token_lengths))
    real = np.arange(length)[None, :] >= (length - left.token_lengths)[:, None]
    np.testing.assert_array_equal(np.asarray(e_left)[real], shifted[real])
    kw = {"max_new_tokens": 5, "eos_id": rec.tokenizer.eos_id, "pad_id": rec.tokenizer.pad_id}
    want = greedy_generate(rec.decoder, rec.params["llm"], shifted, right.token_lengths, **kw)
    got = greedy_generate(rec.decoder, rec.params["llm"], e_left, left.token_lengths, **kw)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_api_make_batch_rows():
    tok = CharTokenizer()
    waves = [tone(0.5), tone(1.1, 300.0)]
    m = SimpleNamespace(frontend=FrontendConfig())
    b = api.make_batch(m, tok, waves, targets=["ab", "c"], instruction="x")
    feats = [extract_features(w) for w in waves]
    assert b.feats.shape == (2, max(len(f) for f in feats), 560) and b.feat_lengths.tolist() == [len(f) for f in feats]
    for r, (f, target) in enumerate(zip(feats, ["ab", "c"])):
        p = build_prompt(tok, system="You are a helpful assistant.", instruction="x",
                         n_audio=int(audio_token_count(len(f))), target=target)
        n = len(p.input_ids)
        assert b.input_ids[r, :n].tolist() == p.input_ids and (b.input_ids[r, n:] == tok.pad_id).all()
        assert b.labels[r, :n].tolist() == p.labels and (b.labels[r, n:] == IGNORE_INDEX).all()
        assert (b.token_lengths[r], b.audio_start[r], b.audio_tokens[r]) == (n, p.audio_start, p.n_audio)
    assert b.weight.tolist() == [1.0, 1.0] and b.ctc_labels is None and b.example_index is None
    assert (api.make_batch(m, tok, waves).labels == IGNORE_INDEX).all()
    x, lengths = api.features(waves)
    np.testing.assert_array_equal(x, b.feats)
    np.testing.assert_array_equal(lengths, b.feat_lengths)
