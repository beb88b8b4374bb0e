"""The LLM's output is bounded by the audio length: per-row caps in `greedy_generate`, and the
recognizer's ceil(tokens_per_second x seconds) + slack rule, checked against a hand computation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import model_for_preset
from funasr_jax.decode.generate import GenerateInputError, greedy_generate
from funasr_jax.infer import recognizer as recognizer_mod
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.models.funasr import init_params
from funasr_jax.text.tokenizer import load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SR = 16000


def tiny_recognizer(tokenizer=None, **kw) -> Recognizer:
    """The tiny preset, randomly initialised, sized for the demo tokenizer."""
    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    cfg = model_for_preset("tiny")
    cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, vocab_size=tok.vocab_size),
                      ctc=dataclasses.replace(cfg.ctc, vocab_size=tok.vocab_size + 1))
    return Recognizer(cfg, init_params(cfg, jax.random.PRNGKey(5)), tokenizer or tok, **kw)


class NoEos:
    """The demo tokenizer with an EOS id no model can emit, so only the caps stop generation."""

    eos_id = -1

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)


class GenerateSpy:
    """Wraps `recognizer.greedy_generate`: records each call's row caps and generated lengths."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kw):
        tokens, n = greedy_generate(*args, **kw)
        self.calls.append((np.asarray(kw["row_max_new_tokens"]).tolist(), np.asarray(n).tolist(),
                           np.asarray(tokens)))
        return tokens, n


@pytest.fixture(scope="module")
def rec():
    return tiny_recognizer()


def _prompt(rec, b, p, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 1.0, (b, p, rec.cfg.llm.hidden_size)).astype(np.float32)
    lengths = np.array([p, p - 3, p - 5][:b])
    return jnp.asarray(emb), jnp.asarray(lengths)


def test_per_row_caps_cut_each_row_at_its_own_length(rec):
    emb, lengths = _prompt(rec, 3, 9)
    kw = {"max_new_tokens": 12, "pad_id": 0}
    free, n_free = greedy_generate(rec.decoder, rec.params["llm"], emb, lengths, eos_id=-1, **kw)
    free = np.asarray(free)
    assert np.asarray(n_free).tolist() == [12, 12, 12]
    caps = [3, 20, 1]  # 20 > max_new_tokens: clipped to 12
    tokens, n = greedy_generate(rec.decoder, rec.params["llm"], emb, lengths, eos_id=-1,
                                row_max_new_tokens=jnp.asarray(caps), **kw)
    tokens = np.asarray(tokens)
    for b, cap in enumerate([3, 12, 1]):
        np.testing.assert_array_equal(tokens[b, :cap], free[b, :cap])  # the same greedy tokens ...
        assert (tokens[b, cap:] == 0).all()  # ... then padding
    assert np.asarray(n).tolist() == [3, 12, 1]
    # An EOS before the cap still ends the row there (EOS included in the count).
    eos = int(free[1, 2])
    first = int(np.argmax(free[1] == eos)) + 1
    _, n = greedy_generate(rec.decoder, rec.params["llm"], emb, lengths, eos_id=eos,
                           row_max_new_tokens=jnp.asarray([12, 12, 12]), **kw)
    assert int(np.asarray(n)[1]) == first <= 3
    for bad in ([1, 2], [0, 3, 3]):
        with pytest.raises(GenerateInputError, match="row_max_new_tokens"):
            greedy_generate(rec.decoder, rec.params["llm"], emb, lengths, eos_id=-1,
                            row_max_new_tokens=jnp.asarray(bad), **kw)


def _hand_bound(num_samples: int, tokens_per_second: int, slack: int) -> int:
    """ceil(tokens_per_second x 60 ms x T) + slack, T = LFR frames of the clip, in integers."""
    t_fb = 1 + (num_samples - 400) // 160  # Kaldi snip-edges fbank frames
    t = -(-t_fb // 6)  # LFR 7/6 frames
    return -(-(tokens_per_second * 6 * t) // 100) + slack


def test_recognizer_output_is_bounded_by_audio_length(monkeypatch):
    """With EOS unreachable each row emits exactly its bound, computed by hand per row, all rows
    in one batch; without the audio bound they run to max_new_tokens."""
    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in (1.0, 2.5, 0.5)]
    spy = GenerateSpy()
    monkeypatch.setattr(recognizer_mod, "greedy_generate", spy)
    bounded = tiny_recognizer(NoEos(tok), tokens_per_second=10.0, token_slack=3)
    texts = bounded.transcribe(waves, max_new_tokens=64)
    want = [_hand_bound(len(w), 10, 3) for w in waves]
    assert want == [14, 29, 8]  # 1 s: T = 17 LFR frames, ceil(0.6 x 17) + 3; 2.5 s: T = 42; 0.5 s: T = 8
    assert len(spy.calls) == 1  # one batch, each row with its own bound
    caps, lengths, _ = spy.calls[0]
    order = np.argsort([len(w) for w in waves], kind="stable")  # the batch is sorted by length
    assert caps == lengths == [want[i] for i in order]
    assert all(isinstance(t, str) for t in texts)
    spy.calls.clear()
    unbounded = tiny_recognizer(NoEos(tok), tokens_per_second=None)
    unbounded.transcribe(waves, max_new_tokens=20)
    assert spy.calls[0][1] == [20, 20, 20]
    spy.calls.clear()
    default = tiny_recognizer(NoEos(tok))
    default.transcribe(waves[:1], max_new_tokens=128)
    assert spy.calls[0][1] == [_hand_bound(len(waves[0]), 15, 8)]  # the defaults: 15 tokens/s + 8


def test_token_limit_rule_and_arguments():
    assert recognizer_mod.token_limit(1.02, 15.0, 8) == 16 + 8
    assert recognizer_mod.token_limit(1.5, 12.0, 8) == 18 + 8  # 12 x 1.5 = 18.000000000000004 -> 18
    for kw in ({"tokens_per_second": 0.0}, {"token_slack": 0}, {"max_segment_s": 0.0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            tiny_recognizer(**kw)
