"""The accelerator checks behind the dispatch, run on CPU with FUNASR_JAX_KERNEL_PROBES=1 on the
interpreted Pallas kernels: a kernel that compiles but computes wrong numbers raises
KernelNumericsError when asked for by name, and is passed over with one warning naming the
difference when chosen automatically (None / a tuple); one that fails to compile is refused
(named: KernelUnsupportedError with the reason; tuple / None: one warning, then the next
candidate). And the block table: keyed by dtype and head_dim, each entry inside its device's
shared memory, an oversized tiling refused before compiling."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels._common import KernelNumericsError, KernelUnsupportedError
from kernels._dispatch import PROBE_ENV
from kernels.attention import api, config, xla
from kernels.attention.config import BlockSizes
from kernels.ctc import api as ctc_api
from kernels.ctc import pallas_gpu as ctc_pallas


@pytest.fixture
def probes(monkeypatch):
    """Probes on, with empty caches before and after (patched kernels must not leak)."""
    monkeypatch.setenv(PROBE_ENV, "1")
    caches = (api._compiles, api._agrees, ctc_api._compiles, ctc_api._agrees)
    for c in caches:
        c.cache_clear()
    api._warned.clear()
    ctc_api._DISPATCH.warned.clear()
    yield
    for c in caches:
        c.cache_clear()


def _qkv(b=2, t=20, hq=4, hkv=2, d=16, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, t, hq, d)).astype(np.float32)
    k, v = (rng.standard_normal((b, t, hkv, d)).astype(np.float32) for _ in range(2))
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.array([t, t // 2], jnp.int32)


def _wrong_attention(q, k, v, *, q_lengths=None, kv_lengths=None, causal=False, scale=None, **_):
    return 1.05 * xla.attention(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths, causal=causal, scale=scale)


def _failing_attention(*args, **kwargs):
    raise NotImplementedError("Triton lowering failed (stand-in)")


def test_the_real_interpreted_kernel_passes_its_probe(probes):
    q, k, v, ln = _qkv()
    out = api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True, implementation="pallas_gpu")
    ref = xla.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True)
    assert float(jnp.abs(out - ref).max()) < 1e-4
    assert api._agrees.cache_info().currsize == 1   # checked once, at the call's tiling
    # the first call of a signature inside a jitted function (the trainer's case) probes too
    q2, k2, v2, ln2 = _qkv(t=40)
    jax.jit(lambda q, k, v: api.attention(q, k, v, q_lengths=ln2, kv_lengths=ln2, causal=True,
                                          implementation="pallas_gpu"))(q2, k2, v2)
    assert api._agrees.cache_info().currsize == 2


def test_wrong_numbers_named_raise(probes, monkeypatch):
    monkeypatch.setitem(api.IMPLEMENTATIONS, "pallas_gpu", _wrong_attention)
    q, k, v, ln = _qkv()
    with pytest.raises(KernelNumericsError, match=r"pallas_gpu disagrees with 'xla'.*max error"):
        api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True, implementation="pallas_gpu")


@pytest.mark.parametrize("implementation", [None, ("pallas_gpu", "xla")])
def test_wrong_numbers_chosen_automatically_fall_back_with_one_warning(probes, monkeypatch, implementation):
    """The 5% error of the stand-in is named in the one warning; the call is served by xla."""
    monkeypatch.setitem(api.IMPLEMENTATIONS, "pallas_gpu", _wrong_attention)
    monkeypatch.setitem(api.BACKEND_PREFERENCE, "cpu", ("pallas_gpu", "xla"))   # None: this table
    q, k, v, ln = _qkv()
    # the probe's tolerance depends on the matmul precision, which other test modules set globally
    with warnings.catch_warnings(record=True) as w, jax.default_matmul_precision("default"):
        warnings.simplefilter("always")
        for _ in range(3):
            out = api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True, implementation=implementation)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("attention: using 'xla' (pallas_gpu disagrees with 'xla'"), msgs
    assert "max error 0.05 x max|xla| > 0.02" in msgs[0], msgs   # the difference and the tolerance
    np.testing.assert_allclose(out, xla.attention(q, k, v, q_lengths=ln, kv_lengths=ln, causal=True), atol=1e-6)


def test_without_probes_the_check_is_not_run(monkeypatch):
    """CPU default: no probes (the interpreted kernel is what runs, nothing to check against)."""
    monkeypatch.delenv(PROBE_ENV, raising=False)
    monkeypatch.setitem(api.IMPLEMENTATIONS, "pallas_gpu", _wrong_attention)
    q, k, v, ln = _qkv()
    api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, implementation="pallas_gpu")


def test_compile_failure_named_raises_tuple_warns_once(probes, monkeypatch):
    monkeypatch.setitem(api.IMPLEMENTATIONS, "pallas_gpu", _failing_attention)
    q, k, v, ln = _qkv()
    with pytest.raises(KernelUnsupportedError,
                       match=r"'pallas_gpu' was requested but cannot serve this call: pallas_gpu: "
                             r"pallas_gpu failed to compile here \(NotImplementedError: Triton lowering"):
        api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, implementation="pallas_gpu")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(2):
            out = api.attention(q, k, v, q_lengths=ln, kv_lengths=ln, implementation=("pallas_gpu", "xla"))
    msgs = [str(x.message) for x in w if "attention: using 'xla'" in str(x.message)]
    assert len(msgs) == 1 and "failed to compile" in msgs[0], msgs
    np.testing.assert_allclose(out, xla.attention(q, k, v, q_lengths=ln, kv_lengths=ln), atol=1e-6)


def _ctc_case(seed=0):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.standard_normal((2, 10, 6)).astype(np.float32))
    labels = jnp.asarray(rng.integers(1, 6, (2, 3)).astype(np.int32))
    return logits, jnp.array([10, 7]), labels, jnp.array([3, 2])


def test_ctc_wrong_numbers_raise(probes, monkeypatch):
    real = ctc_pallas.ctc_nll
    monkeypatch.setattr(ctc_pallas, "ctc_nll", lambda *a, **kw: 1.01 * real(*a, **kw))
    with pytest.raises(KernelNumericsError, match="pallas_gpu disagrees with 'xla'"):
        ctc_api.ctc_loss(*_ctc_case(), blank_id=0, implementation="pallas_gpu")


def test_ctc_wrong_numbers_chosen_automatically_fall_back(probes, monkeypatch):
    real = ctc_pallas.ctc_nll
    monkeypatch.setattr(ctc_pallas, "ctc_nll", lambda *a, **kw: 1.01 * real(*a, **kw))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(2):
            got = ctc_api.ctc_loss(*_ctc_case(), blank_id=0, implementation=("pallas_gpu", "xla"))
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and msgs[0].startswith("ctc_loss: using 'xla' (pallas_gpu disagrees with 'xla'"), msgs
    assert "max error 0.01" in msgs[0], msgs
    np.testing.assert_allclose(got, ctc_api.ctc_loss(*_ctc_case(), blank_id=0, implementation="xla"), rtol=1e-6)


def test_ctc_real_kernel_passes_its_probe(probes):
    got = ctc_api.ctc_loss(*_ctc_case(), blank_id=0, implementation="pallas_gpu")
    want = ctc_api.ctc_loss(*_ctc_case(), blank_id=0, implementation="xla")
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ----------------------------------------------------------------------------- block table


def test_block_table_is_keyed_by_dtype_and_head_dim():
    bf16 = config.block_sizes_for("NVIDIA H100 80GB HBM3", 128, "bfloat16")
    f32 = config.block_sizes_for("NVIDIA H100 80GB HBM3", 128, "float32")
    assert bf16 != f32
    assert config.block_sizes_for("NVIDIA H100", 64, "bfloat16") != bf16
    assert config.block_sizes_for("NVIDIA H100", 128, "float16") == bf16   # by itemsize


@pytest.mark.parametrize("kind", ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("head_dim", [16, 64, 128, 256])
def test_every_table_entry_fits_its_device(kind, dtype, head_dim):
    bs = config.block_sizes_for(kind, head_dim, dtype)
    assert config.tiling_problem(bs, head_dim, dtype, kind) is None, (kind, dtype, head_dim, bs)


def test_oversized_tiling_is_refused_by_name():
    big = BlockSizes(256, 256, 256, 256, 256, 256, num_stages=4)
    msg = config.tiling_problem(big, 256, "float32", "NVIDIA A100-SXM4-80GB")
    assert msg and "KiB of shared memory" in msg and "163 KiB" in msg and "float32" in msg
    # the estimate grows with every factor it depends on
    base = config.shared_memory_bytes(BlockSizes(64, 64, 64, 64, 64, 64), 64, "bfloat16")
    for bs, d, dt in [(BlockSizes(128, 64, 64, 64, 64, 64), 64, "bfloat16"),
                      (BlockSizes(64, 64, 64, 64, 64, 64), 128, "bfloat16"),
                      (BlockSizes(64, 64, 64, 64, 64, 64), 64, "float32")]:
        more = config.shared_memory_bytes(bs, d, dt)
        assert all(more[k] >= base[k] for k in base) and any(more[k] > base[k] for k in base)


def test_kernel_layout_names_unknown_axes():
    from jax.sharding import Mesh

    from kernels import kernel_layout

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match=r"kernel_layout: axes \['fsdp'\] are not in the mesh"):
        with kernel_layout(mesh, ("fsdp",)):
            pass
