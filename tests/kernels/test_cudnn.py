"""The cuDNN attention path's handling of empty rows, on CPU.

The training pipeline pads batches with rows whose lengths are 0 (`kv_len = 0`). cuDNN's padding
mask has no defined output for a row with no key. Here the one cuDNN call
(`kernels.attention.cudnn.cudnn_call`) is replaced by a stand-in with that hazard made concrete:
a naive masked softmax, which gives NaN (forward and backward) on a row with no visible key. The
wrapper `cudnn.attention` (clamp the lengths to >= 1, zero the rows that see nothing) must then
match the plain-JAX oracle `reference.attention` exactly where it defines zeros and to f32
rounding elsewhere, with finite gradients. The same stand-in WITHOUT the wrapper must be caught by
the dispatch's numerics probe (its probe batch has kv_len = 0 rows): an automatic choice falls
back to xla with one warning naming the difference; asked for by name it raises.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels._common import KernelNumericsError
from kernels._dispatch import PROBE_ENV
from kernels.attention import api, cudnn, reference, xla

TOL = 2e-5   # f32 on CPU: the stand-in and the oracle differ only by summation order


def naive_masked_attention(q, k, v, *, scale, causal, q_lengths, kv_lengths):
    """Stand-in for cuDNN: softmax over -inf-masked logits with no guard (a row with no visible
    key is 0/0 = NaN). Records the lengths it was handed when called eagerly."""
    if not isinstance(kv_lengths, jax.core.Tracer):
        naive_masked_attention.seen.append((q_lengths, kv_lengths))
    b, t, hq, d = q.shape
    s, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    scale = d ** -0.5 if scale is None else scale
    mask = reference.attention_mask(b, t, s, kv_lengths=kv_lengths, causal=causal)   # [B, T, S]
    qg = q.astype(jnp.float32).reshape(b, t, hkv, g, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)) * scale
    p = jax.nn.softmax(jnp.where(mask[:, None, None], logits, -jnp.inf), axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", p, v.astype(jnp.float32))
    return out.reshape(b, t, hq, d).astype(q.dtype)


naive_masked_attention.seen = []


@pytest.fixture
def fake_cudnn(monkeypatch):
    """cuDNN replaced by the stand-in; its GPU / dtype checks passed on CPU."""
    monkeypatch.setattr(cudnn, "cudnn_call", naive_masked_attention)
    monkeypatch.setattr(cudnn, "check_supported", lambda *a, **kw: None)
    monkeypatch.setitem(api._SUPPORT_CHECKS, "cudnn", lambda *a, **kw: None)
    naive_masked_attention.seen.clear()
    yield


def _case(seed=0, b=4, t=24, s=20, hq=4, hkv=2, d=16):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, hq, d), np.float32))
    k, v = (jnp.asarray(rng.standard_normal((b, s, hkv, d), np.float32)) for _ in range(2))
    do = jnp.asarray(rng.standard_normal((b, t, hq, d), np.float32))
    q_len = jnp.array([t, 9, 7, 0], jnp.int32)      # row 3: a padding row
    kv_len = jnp.array([s, 5, 0, 0], jnp.int32)     # row 2: queries but no key
    return q, k, v, do, q_len, kv_len


def _out_and_grads(fn, q, k, v, do, **kw):
    def loss(q, k, v):
        return jnp.sum(fn(q, k, v, **kw).astype(jnp.float32) * do)

    return jax.jit(lambda q, k, v: (fn(q, k, v, **kw), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))(q, k, v)


def _err(a, b):
    return float(jnp.max(jnp.abs(a - b)))


def test_the_stand_in_has_the_hazard():
    """Without the wrapper, a kv_len = 0 row is NaN: the stand-in is a fair model of the risk."""
    q, k, v, do, q_len, kv_len = _case()
    out, grads = _out_and_grads(naive_masked_attention, q, k, v, do, scale=None, causal=False,
                                q_lengths=q_len, kv_lengths=kv_len)
    assert bool(jnp.isnan(out[2]).all()) and bool(jnp.isfinite(out[:2]).all())
    assert not all(bool(jnp.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("causal", [False, True])
def test_wrapper_zeroes_empty_rows_and_matches_the_reference(fake_cudnn, causal):
    q, k, v, do, q_len, kv_len = _case(seed=1)
    kw = dict(q_lengths=q_len, kv_lengths=kv_len, causal=causal)
    out, grads = _out_and_grads(cudnn.attention, q, k, v, do, **kw)
    ref_out, ref_grads = _out_and_grads(reference.attention, q, k, v, do, **kw)
    assert all(bool(jnp.isfinite(x).all()) for x in (out, *grads))
    assert float(jnp.abs(out[2:]).max()) == 0.0                      # the rows that see no key
    assert float(jnp.abs(out[1, 9:]).max()) == 0.0                   # rows past q_lengths
    assert _err(out, ref_out) < TOL
    for g, r in zip(grads, ref_grads):
        assert _err(g, r) < TOL
    assert float(jnp.abs(grads[0][2:]).max()) == 0.0 and float(jnp.abs(grads[1][2:]).max()) == 0.0
    # cuDNN itself never sees an empty row (an eager call, so the stand-in records concrete lengths)
    eager = cudnn.attention(q, k, v, **kw)
    (ql, kl), = naive_masked_attention.seen
    assert ql.tolist() == [24, 9, 7, 1] and kl.tolist() == [20, 5, 1, 1]
    assert _err(eager, ref_out) < TOL


def test_wrapper_without_lengths_passes_none(fake_cudnn):
    """No lengths: one call with none (cuDNN's unmasked path), nothing zeroed."""
    q, k, v, _, _, _ = _case(seed=2)
    out = cudnn.attention(q, k, v, causal=True)
    assert naive_masked_attention.seen[-1] == (None, None)
    assert _err(out, reference.attention(q, k, v, causal=True)) < TOL


def test_clamped_lengths():
    ql, kl = cudnn.clamped_lengths(jnp.array([0, 3, 1]), jnp.array([0, 0, 8]))
    assert ql.tolist() == [1, 3, 1] and kl.tolist() == [1, 1, 8]


@pytest.fixture
def probes(monkeypatch):
    monkeypatch.setenv(PROBE_ENV, "1")
    for c in (api._compiles, api._agrees):
        c.cache_clear()
    api._warned.clear()
    yield
    for c in (api._compiles, api._agrees):
        c.cache_clear()


def _bare_cudnn(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, mask=None):
    """The stand-in called the way the cuDNN path was before the clamp (lengths as given)."""
    return naive_masked_attention(q, k, v, scale=scale, causal=causal, q_lengths=q_lengths, kv_lengths=kv_lengths)


def _qkv(seed=3):
    q, k, v, _, _, _ = _case(seed=seed, b=2, t=20, s=20)
    return q, k, v, jnp.array([20, 10], jnp.int32)   # the call itself has no empty row


def test_probe_catches_an_unclamped_cudnn_automatic_falls_back(fake_cudnn, probes, monkeypatch):
    """The probe's kv_len = 0 rows expose the bare call: None falls back to xla, one warning."""
    monkeypatch.setitem(api.IMPLEMENTATIONS, "cudnn", _bare_cudnn)
    monkeypatch.setitem(api.BACKEND_PREFERENCE, "cpu", ("cudnn", "xla"))
    q, k, v, ln = _qkv()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(2):
            out = api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and msgs[0].startswith("attention: using 'xla' (cudnn disagrees with 'xla'"), msgs
    assert "max error inf" in msgs[0], msgs
    np.testing.assert_allclose(out, xla.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True), atol=1e-6)


def test_probe_catches_an_unclamped_cudnn_named_raises(fake_cudnn, probes, monkeypatch):
    monkeypatch.setitem(api.IMPLEMENTATIONS, "cudnn", _bare_cudnn)
    q, k, v, ln = _qkv()
    with pytest.raises(KernelNumericsError, match=r"cudnn disagrees with 'xla'.*max error inf"):
        api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True, implementation="cudnn")


def test_clamped_cudnn_passes_the_probe(fake_cudnn, probes, monkeypatch):
    """The real wrapper around the same stand-in is chosen with no warning and serves the call."""
    monkeypatch.setitem(api.BACKEND_PREFERENCE, "cpu", ("cudnn", "xla"))
    q, k, v, ln = _qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.select(q, k, v, causal=True) == "cudnn"
        out = api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True)
    assert api._agrees.cache_info().currsize == 1
    assert _err(out, reference.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True)) < TOL
