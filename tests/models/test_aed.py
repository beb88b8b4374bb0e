"""AED decoder (funasr_jax.models.aed): masks against brute force, parity with FunASR's
TransformerDecoder and LabelSmoothingLoss (random weights), incremental decoding against the
teacher-forced forward, greedy / beam decoding against a brute-force search."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from funasr_jax.decode.aed_search import aed_decode
from funasr_jax.models.aed import (AEDDecoder, causal_padding_mask, cached_self_mask, decoder_io, label_smoothing_loss,
                                   memory_padding_mask)
from funasr_jax.models.batch import IGNORE_INDEX
from funasr_jax.models.config import AEDConfig
from tests.helpers.torch_refs import assert_close_valid, flax_params, padded_batch, state_dict_np, transformer_decoder

V, D = 11, 16


def test_causal_padding_mask_matches_brute_force():
    lengths = np.array([4, 1, 6, 0])
    got = np.asarray(causal_padding_mask(jnp.asarray(lengths), 6))
    want = np.zeros((4, 6, 6), bool)
    for b in range(4):
        for i in range(6):
            for j in range(6):
                want[b, i, j] = j <= i and j < lengths[b]
    np.testing.assert_array_equal(got, want)


def test_memory_and_cached_masks_match_brute_force():
    lengths = np.array([3, 7, 1])
    got = np.asarray(memory_padding_mask(jnp.asarray(lengths), 7))
    want = np.array([[[t < n for t in range(7)]] for n in lengths])
    np.testing.assert_array_equal(got, want)
    kv = np.array([[False, True, True, True, True], [True, True, True, True, True]])
    m = np.asarray(cached_self_mask(jnp.asarray(kv), 2, 2))
    for b in range(2):
        for i in range(2):
            for s in range(5):
                assert m[b, i, s] == (s <= 2 + i and kv[b, s])


def test_decoder_io_shifts_and_pads():
    labels = np.array([[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    ys_in, ys_out, lens = (np.asarray(x) for x in decoder_io(labels, np.array([3, 1, 0]), sos_eos=10))
    np.testing.assert_array_equal(ys_in, [[10, 5, 6, 7], [10, 8, 10, 10], [10, 10, 10, 10]])
    np.testing.assert_array_equal(ys_out, [[5, 6, 7, 10], [8, 10, -100, -100], [10, -100, -100, -100]])
    np.testing.assert_array_equal(lens, [4, 2, 1])


def _pair(seed=0, blocks=2):
    ref = transformer_decoder(V, D, attention_heads=4, linear_units=24, num_blocks=blocks, seed=seed)
    dec = AEDDecoder(AEDConfig(enabled=True, num_blocks=blocks, attention_heads=4, linear_units=24,
                               dropout_rate=0.0, positional_dropout_rate=0.0), D, V)
    mem = jnp.zeros((1, 5, D))
    params = flax_params(dec, state_dict_np(ref), mem, jnp.full((1,), 5), jnp.zeros((1, 3), jnp.int32),
                         jnp.full((1,), 3))
    return ref, dec, params


def test_teacher_forced_logits_match_funasr_transformer_decoder():
    ref, dec, params = _pair()
    mem_len, ys_len = np.array([9, 4, 6]), np.array([5, 2, 7])
    memory = padded_batch(mem_len, 9, D, seed=1)
    ys = np.random.default_rng(2).integers(0, V, (3, 7))
    with torch.no_grad():
        want, _ = ref(torch.from_numpy(memory), torch.from_numpy(mem_len), torch.from_numpy(ys), torch.from_numpy(ys_len))
    got = dec.apply({"params": params}, jnp.asarray(memory), jnp.asarray(mem_len), jnp.asarray(ys), jnp.asarray(ys_len))
    assert_close_valid(got, want.numpy(), ys_len, "AED logits vs FunASR TransformerDecoder", rel=1e-4)


def test_label_smoothing_matches_funasr():
    from funasr.losses.label_smoothing_loss import LabelSmoothingLoss

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 5, V)).astype(np.float32) * 3
    targets = rng.integers(0, V, (3, 5))
    targets[0, 3:] = IGNORE_INDEX
    targets[2, 1:] = IGNORE_INDEX
    crit = LabelSmoothingLoss(size=V, padding_idx=IGNORE_INDEX, smoothing=0.1, normalize_length=False)
    want = float(crit(torch.from_numpy(logits), torch.from_numpy(targets)))
    got = label_smoothing_loss(jnp.asarray(logits), jnp.asarray(targets), 0.1)
    np.testing.assert_allclose(float(got["sum"]) / 3, want, rtol=1e-5)
    assert float(got["count"]) == (targets != IGNORE_INDEX).sum()
    # a zero-weight row is not scored
    w = label_smoothing_loss(jnp.asarray(logits), jnp.asarray(targets), 0.1, jnp.array([1.0, 0.0, 1.0]))
    keep = targets.copy()
    keep[1] = IGNORE_INDEX
    np.testing.assert_allclose(float(w["sum"]) / 3, float(crit(torch.from_numpy(logits), torch.from_numpy(keep))),
                               rtol=1e-5)


def _memory(seed, lengths, t=8):
    return jnp.asarray(padded_batch(lengths, t, D, seed=seed, scale=2.0)), jnp.asarray(lengths)


def _teacher_scorer(dec, params, memory, lengths, sos):
    """prefix -> log p(next | prefix) [V] for one utterance by the full teacher-forced forward (no cache);
    memoised by prefix, so a brute-force search costs one forward per distinct prefix."""
    forward = jax.jit(lambda ys: dec.apply({"params": params}, memory, lengths, ys, jnp.asarray([ys.shape[1]])))
    cache = {}

    def scores(prefix):
        key = tuple(prefix)
        if key not in cache:
            logits = forward(jnp.asarray([[sos] + list(key)]))
            cache[key] = np.asarray(jax.nn.log_softmax(logits[0, -1]))
        return cache[key]
    return scores


def test_greedy_decoding_matches_step_by_step_teacher_forcing():
    _, dec, params = _pair(seed=4)
    memory, lengths = _memory(5, np.array([8, 3]))
    sos = V - 1
    ids, tokens, n = aed_decode(dec, params, memory, lengths, sos_eos=sos, beam=1, max_new_tokens=6)
    for b in range(2):
        scores, prefix = _teacher_scorer(dec, params, memory[b:b + 1], lengths[b:b + 1], sos), []
        for _ in range(6):
            nxt = int(np.argmax(scores(prefix)))
            if nxt == sos:
                break
            prefix.append(nxt)
        assert ids[b] == prefix, (b, ids[b], prefix)


def test_beam_search_finds_the_brute_force_best_sequence():
    _, dec, params = _pair(seed=6, blocks=1)
    memory, lengths = _memory(7, np.array([6, 4]))
    sos, n_max = V - 1, 3
    ids, _, _ = aed_decode(dec, params, memory, lengths, sos_eos=sos, beam=V * V, max_new_tokens=n_max)
    for b in range(2):
        scores, best, best_seq = _teacher_scorer(dec, params, memory[b:b + 1], lengths[b:b + 1], sos), -np.inf, None
        # every hypothesis: up to n_max tokens, EOS included when it ends before the cap
        for n in range(1, n_max + 1):
            for seq in itertools.product(range(V), repeat=n):
                if sos in seq[:-1] or (n < n_max and seq[-1] != sos):
                    continue
                score, prefix = 0.0, []
                for tok in seq:
                    score += scores(prefix)[tok]
                    prefix.append(tok)
                if score > best + 1e-6:
                    best, best_seq = score, [t for t in seq if t != sos]
        assert ids[b] == best_seq, (b, ids[b], best_seq)


def test_aed_forward_without_ctc_labels_raises():
    from funasr_jax.models.config import tiny_config
    from funasr_jax.models.funasr import FunASRNano, dummy_batch, init_params

    cfg = tiny_config().replace(aed=AEDConfig(enabled=True, num_blocks=1, linear_units=32)).validate()
    params = init_params(cfg, jax.random.PRNGKey(0))
    assert "aed_decoder" in params
    with pytest.raises(ValueError, match="batch.ctc_labels"):
        FunASRNano(cfg).apply({"params": params}, dummy_batch(cfg), with_llm=False, with_aed=True)
