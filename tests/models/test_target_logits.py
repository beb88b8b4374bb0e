"""The training LLM loss from hidden states (LM head only at scored positions, chunked) equals the
full-logits `llm_cross_entropy` in values and gradients, and never builds a [B, L, V] tensor."""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.sharding import SLIM, abstract_mesh, host_params

from funasr_jax.models.batch import IGNORE_INDEX
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.losses import (chunk_positions, llm_cross_entropy, llm_cross_entropy_from_hidden,
                                      local_rows, pack_scored, scored_targets)
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

B, L, D, V = 4, 13, 8, 203  # V odd so that the shape strings below cannot match anything else


def _head_module(tie: bool, dtype=jnp.float32):
    cfg = Qwen3Config(vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, tie_word_embeddings=tie)
    m = Qwen3ForCausalLM(cfg, dtype=dtype)
    params = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, D)))["params"]
    # Scale the head up so that the softmax is far from uniform (argmax hits and gradients matter).
    params = jax.tree_util.tree_map(lambda p: p * 20.0 if p.ndim == 2 and V in p.shape else p, params)
    return m, params


def _labels(hits=None):
    """Rows with 5, 1, 0 (a padding row, weight 0) and 7 targets; row 0 has a gap in its targets.
    hits: logits [B, L, V]; every other target is then set to the argmax at its position (hits)."""
    rng = np.random.default_rng(1)
    labels = np.full((B, L), IGNORE_INDEX, np.int32)
    labels[0, 6:11] = rng.integers(0, V, 5)
    labels[0, 8] = IGNORE_INDEX
    labels[1, 12] = rng.integers(0, V)
    labels[2, 3:9] = rng.integers(0, V, 6)  # scored only if its weight were > 0
    labels[3, 6:13] = rng.integers(0, V, 7)
    weight = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
    if hits is not None:
        best = np.asarray(jnp.argmax(hits, -1))
        b, pos = np.nonzero(labels != IGNORE_INDEX)
        labels[b[::2], pos[::2]] = best[b[::2], pos[::2] - 1]
    return jnp.asarray(labels), jnp.asarray(weight)


def _head(m):
    """The LM head as `llm_cross_entropy_from_hidden` takes it: head(w, h), w = `_head_params`."""
    return lambda w, x: m.apply({"params": w}, x, method="logits_from_hidden")


def _head_params(p):
    return {"lm_head": p["lm_head"]} if "lm_head" in p else {"model": {"embed_tokens": p["model"]["embed_tokens"]}}


def _losses(m, params, h, labels, weight, chunk):
    def full(p, x):
        out = llm_cross_entropy(_head(m)(p, x), labels, weight)
        return out["loss"], out  # the mean: the backward's incoming cotangent is not 1

    def chunked(p, x):
        out = llm_cross_entropy_from_hidden(x, labels, _head(m), _head_params(p), weight, chunk=chunk)
        return out["loss"], out

    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))  # noqa: E731
    return grad(full)(params, h), grad(chunked)(params, h)


def _assert_close(ref, got, rtol, atol):
    (_, mr), gr = ref
    (_, mg), gg = got
    assert int(mg["count"]) == int(mr["count"]) == 5 - 1 + 1 + 7  # row 0's gap, row 2 dropped
    assert int(mg["correct"]) == int(mr["correct"])
    np.testing.assert_allclose(float(mg["sum"]), float(mr["sum"]), rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(mg["loss"]), float(mr["loss"]), rtol=rtol, atol=atol)
    for a, b in zip(jax.tree_util.tree_leaves(gr), jax.tree_util.tree_leaves(gg)):
        scale = float(jnp.max(jnp.abs(a.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), rtol=rtol,
                                   atol=atol * max(scale, 1.0))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("chunk", [1, 3, 5, None])  # 5 does not divide L - 1 = 12; None: the default size
def test_equals_full_logits_f32(tie, chunk):
    """f32: sum / loss / count / correct and d/d(params, hidden) agree to rtol 1e-5 (atol 1e-6 x max|grad|)."""
    m, params = _head_module(tie)
    h = jax.random.normal(jax.random.PRNGKey(2), (B, L, D), jnp.float32)
    labels, weight = _labels(m.apply({"params": params}, h, method="logits_from_hidden"))
    ref, got = _losses(m, params, h, labels, weight, chunk)
    assert int(ref[0][1]["correct"]) > 0  # the argmax metric is exercised
    _assert_close(ref, got, rtol=1e-5, atol=1e-6)
    dh = np.asarray(got[1][1])
    assert np.all(dh[2] == 0) and np.all(dh[1, :11] == 0)  # padding row / unscored positions get nothing
    assert np.any(dh[1, 11] != 0)


def test_matches_numpy_brute_force():
    """An independent numpy loss: the metrics are those of next-token prediction at each labelled slot."""
    m, params = _head_module(True)
    h = jax.random.normal(jax.random.PRNGKey(3), (B, L, D), jnp.float32)
    labels, weight = _labels(m.apply({"params": params}, h, method="logits_from_hidden"))
    got = llm_cross_entropy_from_hidden(h, labels, _head(m), _head_params(params), weight, chunk=2)
    w = np.asarray(params["model"]["embed_tokens"]["embedding"], np.float64)
    total, count, hits = 0.0, 0, 0
    for b in range(B):
        for pos in range(1, L):
            y = int(labels[b, pos])
            if y == IGNORE_INDEX or weight[b] == 0:
                continue
            z = np.asarray(h[b, pos - 1], np.float64) @ w.T
            total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[y]
            count += 1
            hits += int(np.argmax(z) == y)
    assert int(got["count"]) == count and int(got["correct"]) == hits
    np.testing.assert_allclose(float(got["sum"]), total, rtol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_bf16_compute_close_to_full_logits(tie):
    """bf16 matmuls (f32 accumulation), f32 softmax: the sums agree with the full-logits bf16 path to
    rtol 1e-3 and with f32 to 2e-2; gradients to 2e-2 of their largest entry."""
    m16, params = _head_module(tie, jnp.bfloat16)
    m32 = Qwen3ForCausalLM(m16.cfg, dtype=jnp.float32)
    h = jax.random.normal(jax.random.PRNGKey(4), (B, L, D), jnp.float32).astype(jnp.bfloat16)
    labels, weight = _labels()
    ref, got = _losses(m16, params, h, labels, weight, 3)
    (_, mg), _ = got
    assert mg["sum"].dtype == jnp.float32
    np.testing.assert_allclose(float(mg["sum"]), float(ref[0][1]["sum"]), rtol=1e-3)
    _assert_close(ref, got, rtol=2e-2, atol=2e-2)
    ref32, _ = _losses(m32, params, h.astype(jnp.float32), labels, weight, 3)
    np.testing.assert_allclose(float(mg["sum"]), float(ref32[0][1]["sum"]), rtol=2e-2)


def test_packing_puts_each_rows_targets_first():
    labels, weight = _labels()
    valid, targets = scored_targets(labels, weight)
    h = jnp.broadcast_to(jnp.arange(L, dtype=jnp.float32)[None, :, None], (B, L, 1))  # h = its position
    hs, ts, ms = pack_scored(h, valid, targets, 5)
    assert hs.shape == (3, B, 5, 1) and ms.shape == (3, B, 5)
    flat = lambda x: np.asarray(jnp.moveaxis(x, 0, 1).reshape((B, 15) + x.shape[3:]))  # noqa: E731
    pos, ok, tg = flat(hs)[..., 0], flat(ms), flat(ts)
    np.testing.assert_array_equal(ok.sum(1), [4, 1, 0, 7])
    np.testing.assert_array_equal(pos[0, :4], [5, 6, 8, 9])  # hidden l predicts label l + 1; 8 is the gap
    np.testing.assert_array_equal(tg[0, :4], np.asarray(labels)[0, [6, 7, 9, 10]])
    assert np.all(~ok[:, 7:])  # the third chunk is empty: skipped


def test_no_full_vocabulary_tensor_in_the_compiled_loss():
    """With chunk < L - 1, the jitted loss + gradient holds [B, chunk, V] logits, never [B, L(-1), V]
    (and the gradient comes from the forward scan: no second scan recomputes logits)."""
    m, params = _head_module(True)
    h = jax.ShapeDtypeStruct((B, L, D), jnp.float32)
    labels, weight = _labels()

    def chunked(p, x):
        return llm_cross_entropy_from_hidden(x, labels, _head(m), _head_params(p), weight, chunk=3)["sum"]

    def full(p, x):
        return llm_cross_entropy(_head(m)(p, x), labels, weight)["sum"]

    def largest_vocab_tensor(f):
        """Elements of the largest f32 [..., V] array in the lowered and in the compiled program."""
        lowered = jax.jit(jax.grad(f, argnums=(0, 1))).lower(params, h)
        dims = re.findall(rf"tensor<([0-9x]+)x{V}xf32>", lowered.as_text())
        dims += [d.replace(",", "x") for d in re.findall(rf"f32\[([0-9,]+),{V}\]", lowered.compile().as_text())]
        return max(math.prod(int(n) for n in d.split("x")) for d in dims) * V

    assert D < B * 3 < B * (L - 1)  # so that the head weight [D, V] is not the largest
    assert largest_vocab_tensor(full) >= B * (L - 1) * V  # the check sees the tensor where it exists
    assert largest_vocab_tensor(chunked) == B * 3 * V
    grad_text = jax.jit(jax.grad(chunked, argnums=(0, 1))).lower(params, h).as_text()
    assert grad_text.count("stablehlo.while") == 1  # one scan: the backward does not revisit the chunks


@pytest.mark.parametrize("tie", [True, False])
def test_frozen_head_costs_no_weight_gradient(tie):
    """A stop_gradient'ed head (LoRA stages freeze it): d hidden still equals the full-logits one,
    and the program has no [D, V] / [V, D] weight-gradient matmul; a trained head has one."""
    m, params = _head_module(tie)
    h = jax.random.normal(jax.random.PRNGKey(5), (B, L, D), jnp.float32)
    labels, weight = _labels()

    def chunked(p, x):
        return llm_cross_entropy_from_hidden(x, labels, _head(m), _head_params(p), weight, chunk=3)["sum"]

    def full(p, x):
        return llm_cross_entropy(_head(m)(p, x), labels, weight)["sum"]

    frozen = lambda f: (lambda p, x: f(jax.lax.stop_gradient(p), x))  # noqa: E731
    np.testing.assert_allclose(jax.grad(frozen(chunked), 1)(params, h), jax.grad(frozen(full), 1)(params, h),
                               rtol=1e-5, atol=1e-6)

    def weight_grad_dots(f):
        text = jax.jit(jax.grad(f, argnums=(0, 1))).lower(params, h).as_text()
        return [ln for ln in text.splitlines() if "dot_general" in ln
                and re.search(rf"-> tensor<({D}x{V}|{V}x{D})xf32>", ln)]

    assert weight_grad_dots(chunked)
    assert not weight_grad_dots(frozen(chunked))


def test_chunk_size_follows_the_rows_per_device():
    from sharding import get_rules
    from sharding.context import activation_sharding

    assert local_rows(16) == 16
    with activation_sharding(abstract_mesh(data=2, fsdp=4), get_rules()):
        assert local_rows(16) == 2
        assert local_rows(6) == 3  # fsdp does not divide 6: rows split over data only
    assert chunk_positions(16, 191) == 32 and chunk_positions(2, 191) == 64 and chunk_positions(2, 10) == 10


@pytest.mark.parametrize("tie", [True, False])
def test_train_loss_equals_full_logits_loss(tie):
    """train.step.loss_fn (LoRA on the LLM, hidden-state loss) against the full-logits loss on the
    same model: loss (rtol 1e-5) and the gradient of every parameter, frozen ones included (f32,
    rtol 1e-4, atol 1e-4 x the leaf's largest entry, at least 1e-6 x the largest of all)."""
    from funasr_jax.models.funasr import FunASRNano
    from train import setup
    from train.main import load_config
    from train.step import loss_fn
    from train.synthetic import synthetic_batch

    cfg = load_config("sft4.py", "tiny", SLIM + ["stage.ctc_weight=0", f"model.llm.tie_word_embeddings={tie}"])
    parts = setup.stage_parts(cfg, total_steps=10)
    assert cfg.model.llm.lora.rank > 0
    params = jax.tree_util.tree_map(jnp.asarray, host_params(parts.abstract_params))
    batch = synthetic_batch(cfg.model, 3, 2.0, text_tokens=6, ctc=False)
    labels = np.asarray(batch.labels).copy()
    first = int(np.argmax(labels[0] != IGNORE_INDEX))
    labels[1, first:first + 3] = IGNORE_INDEX  # a row with fewer targets
    batch = dataclasses.replace(batch, labels=labels, weight=np.array([1, 1, 0], np.float32)).on_device_fields()
    batch = batch.map(jnp.asarray)
    norm = {"tokens": jnp.asarray(7.0), "utts": jnp.asarray(1.0)}
    model, weights = parts.model, parts.weights

    def ours(p):
        return loss_fn(p, batch, jax.random.PRNGKey(0), norm, model=model, weights=weights, deterministic=True)

    def reference(p):
        out = model.apply({"params": p}, batch, deterministic=True, with_ctc=False)
        ce = llm_cross_entropy(out["logits"], batch.labels, batch.weight)
        return weights.llm * ce["sum"] / norm["tokens"], {"llm_sum": ce["sum"], "llm_count": ce["count"],
                                                          "llm_correct": ce["correct"]}

    assert isinstance(model, FunASRNano)
    (lo, mo), go = jax.jit(jax.value_and_grad(ours, has_aux=True))(params)
    (lr, mr), gr = jax.jit(jax.value_and_grad(reference, has_aux=True))(params)
    scored = int(((np.asarray(batch.labels)[:, 1:] != IGNORE_INDEX) & (np.asarray(batch.weight) > 0)[:, None]).sum())
    assert int(mo["llm_count"]) == int(mr["llm_count"]) == scored > 0
    assert int(mo["llm_correct"]) == int(mr["llm_correct"])
    np.testing.assert_allclose(float(lo), float(lr), rtol=1e-5)
    flat_o, flat_r = jax.tree_util.tree_leaves_with_path(go), jax.tree_util.tree_leaves(gr)
    top = max(float(jnp.max(jnp.abs(b))) for b in flat_r)
    for (path, a), b in zip(flat_o, flat_r):
        # Leaves whose exact gradient is 0 (attention key biases) hold rounding noise: atol floor.
        atol = max(1e-4 * float(jnp.max(jnp.abs(b))), 1e-6 * top)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))
    lora = [k for k, _ in flat_o if "lora_B" in jax.tree_util.keystr(k)]
    assert lora  # LoRA adapters are among the compared gradients
