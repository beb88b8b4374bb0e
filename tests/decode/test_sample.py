"""Sampled generation: greedy at temperature -> 0, deterministic per key, the top-k / top-p filters
against a brute-force numpy definition, and sampled frequencies against the filtered softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.decode import greedy_generate, left_pad
from funasr_jax.decode.generate import GenerateInputError
from funasr_jax.decode.sample import SamplingConfig, filter_logits, row_keys_for, sample_generate, sampling_chooser
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

V, EOS, PAD, N = 97, 5, 96, 12


@pytest.fixture(scope="module")
def lm():
    cfg = Qwen3Config(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    model = Qwen3ForCausalLM(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 64)))["params"]
    rng = np.random.default_rng(0)
    lengths = np.array([6, 3, 9, 4])
    right = rng.normal(0, 1.0, (4, 9, 64)).astype(np.float32)
    right[np.arange(9)[None] >= lengths[:, None]] = 0.0
    return model, params, left_pad(jnp.asarray(right), jnp.asarray(lengths)), jnp.asarray(lengths)


def test_temperature_to_zero_is_greedy(lm):
    model, params, emb, lengths = lm
    want, want_n = greedy_generate(model, params, emb, lengths, max_new_tokens=N, eos_id=EOS, pad_id=PAD)
    for t in (0.0, 1e-4):
        got, n = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(3), max_new_tokens=N, eos_id=EOS,
                                 pad_id=PAD, temperature=t)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        np.testing.assert_array_equal(np.asarray(n), np.asarray(want_n))


def test_samples_are_deterministic_per_key_and_vary_across_keys(lm):
    model, params, emb, lengths = lm
    kw = dict(max_new_tokens=N, eos_id=EOS, pad_id=PAD, temperature=1.0, top_k=20, top_p=0.95)
    a, la = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(7), **kw)
    b, lb = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(7), **kw)
    c, _ = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(8), **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # EOS handling: pad after each row's length, EOS (if any) last
    for row, k in zip(np.asarray(a), np.asarray(la)):
        assert (row[k:] == PAD).all()
        assert EOS not in row[:k - 1]
    # per-row caps hold
    _, lc = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(7), row_max_new_tokens=jnp.array([2, 3, 1, 12]),
                            **kw)
    assert (np.asarray(lc) <= np.array([2, 3, 1, 12])).all()


def np_filter(logits, t, k, p):
    """Brute force: the set of kept token ids per row."""
    out = []
    for row in logits / t:
        order = np.argsort(-row, kind="stable")
        keep = set(order[:k]) if 0 < k < len(row) else set(order)
        kept_row = np.array([x if i in keep else -np.inf for i, x in enumerate(row)])
        probs = np.exp(kept_row - kept_row.max())
        probs /= probs.sum()
        mass, nucleus = 0.0, set()
        for i in np.argsort(-kept_row, kind="stable"):
            if mass >= p or i not in keep:
                break
            nucleus.add(int(i))
            mass += probs[i]
        out.append(nucleus)
    return out


@pytest.mark.parametrize("t,k,p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (1.0, 8, 0.5), (0.5, 3, 0.99)])
def test_filters_keep_what_the_definition_keeps(t, k, p):
    logits = np.random.default_rng(1).normal(0, 2.0, (6, 30)).astype(np.float32)
    got = np.asarray(filter_logits(jnp.asarray(logits), SamplingConfig(t, k, p)))
    want = np_filter(logits.astype(np.float64), t, k, p)
    for row, src, keep in zip(got, logits, want):
        assert set(np.flatnonzero(np.isfinite(row)).tolist()) == keep
        np.testing.assert_allclose(row[sorted(keep)], src[sorted(keep)] / t, rtol=1e-6)  # kept logits only scaled


def test_sampled_frequencies_follow_the_filtered_softmax():
    logits = jnp.asarray([[2.0, 1.5, 0.5, 0.0, -1.0, -3.0]])
    cfg = SamplingConfig(temperature=0.8, top_k=4, top_p=0.9)
    n = 20000
    choose, t = sampling_chooser(row_keys_for(jax.random.PRNGKey(0), n), cfg)
    toks, _ = choose(jnp.repeat(logits, n, axis=0), t)
    freq = np.bincount(np.asarray(toks), minlength=6) / n
    f = np.asarray(filter_logits(logits, cfg))[0]
    want = np.where(np.isfinite(f), np.exp(f - f[np.isfinite(f)].max()), 0.0)
    want /= want.sum()
    np.testing.assert_allclose(freq, want, atol=0.015)
    assert freq[want == 0].sum() == 0


def test_ids_past_the_tokenizer_vocabulary_are_never_drawn(lm):
    model, params, emb, lengths = lm
    for t in (0.0, 1.0, 3.0):
        tok, n = sample_generate(model, params, emb, lengths, jax.random.PRNGKey(1), max_new_tokens=N, eos_id=EOS,
                                 pad_id=PAD, temperature=t, vocab_size=10)
        tok, n = np.asarray(tok), np.asarray(n)
        assert all((row[:k] < 10).all() for row, k in zip(tok, n))


def test_bad_sampling_settings_are_named(lm):
    model, params, emb, lengths = lm
    for kw, msg in (({"temperature": -1.0}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p")):
        with pytest.raises(GenerateInputError, match=msg):
            sample_generate(model, params, emb, lengths, jax.random.PRNGKey(0), max_new_tokens=4, eos_id=EOS,
                            pad_id=PAD, **kw)
