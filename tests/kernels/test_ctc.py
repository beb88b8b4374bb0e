"""CTC loss (xla and Pallas-GPU-in-interpret-mode) against brute force, optax and PyTorch.

Brute force enumerates all V**T frame paths (tiny V, T). optax and torch are independent
implementations; torch's F.ctc_loss gets log_softmax(logits) so gradients are wrt the logits.
Torch runs in float64 (an accurate oracle); optax in f32, whose own gradient error is ~1e-5
(autodiff through the scan; ours is ~5e-7 vs float64 thanks to rescaled recursions).
Tolerances: losses 1e-4 relative; gradients (probability differences in [-1, 1]) 2e-6 absolute
vs brute force and float64 torch, 3e-5 vs f32 optax.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers.lowering import custom_call_targets, lower_for_cuda, triton_calls

from kernels._common import KernelInputError, KernelUnsupportedError
from kernels.ctc import api, ctc_loss, pallas_gpu, reference, xla

jax.config.update("jax_default_matmul_precision", "highest")

IMPLS = ["xla", "pallas_gpu"]
GRAD_TOL = 2e-6
OPTAX_GRAD_TOL = 3e-5


def _seed():
    return int(np.random.SeedSequence().entropy % (2**31))


def _loss_and_grad(impl, logits, t_len, labels, u_len, blank, **kw):
    def f(x):
        return ctc_loss(x, t_len, labels, u_len, blank_id=blank, implementation=impl, **kw)

    total = (lambda x: jnp.sum(f(x))) if kw.get("reduction", "none") == "none" else f
    return jax.jit(lambda x: (f(x), jax.grad(total)(x)))(logits)


@pytest.fixture(scope="module")
def brute_force_case():
    """V=3 (blank 2), T<=5: repeats needing a blank, empty labels, an impossible alignment,
    zero frames, padding with junk label values."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(6, 5, 3)).astype(np.float32) * 2)
    labels = np.array([[0, 1, 7], [1, 1, -1], [0, 0, 0], [1, 9, 9], [0, 1, 0], [0, 0, 0]])
    u_len = np.array([2, 2, 3, 0, 3, 0])
    t_len = np.array([5, 3, 4, 4, 5, 0])   # row 2: "0 0 0" needs 5 frames, has 4 -> impossible

    def brute(x):
        return reference.ctc_loss(x, t_len, labels, u_len, blank_id=2)

    ref = jax.jit(brute)(logits)
    finite = np.isfinite(np.asarray(ref))
    ref_grad = jax.jit(jax.grad(lambda x: jnp.sum(jnp.where(finite, brute(x), 0.0))))(logits)
    return seed, logits, labels, u_len, t_len, ref, ref_grad


@pytest.mark.parametrize("impl", IMPLS)
def test_against_brute_force(impl, brute_force_case):
    seed, logits, labels, u_len, t_len, ref, ref_grad = brute_force_case
    got, grad = _loss_and_grad(impl, logits, t_len, labels, u_len, -1)
    assert np.isinf(ref[2]) and np.isinf(got[2])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"seed={seed}")
    np.testing.assert_allclose(grad, ref_grad, atol=GRAD_TOL, err_msg=f"seed={seed}")
    assert float(jnp.abs(grad[2]).max()) == 0.0      # impossible row: zero gradient, not NaN
    assert float(jnp.abs(grad[1, 3:]).max()) == 0.0   # frames past the length


def _random_batch(seed, b=4, t=24, v=9, n=6):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, t, v)).astype(np.float32) * 3
    labels = rng.integers(0, v - 1, (b, n))              # blank = v - 1 never a label
    labels[0, 1] = labels[0, 0]                          # a repeat
    u_len = rng.integers(1, n + 1, b)
    u_len[-1] = 0
    t_len = rng.integers(2 * n + 1, t + 1, b)
    t_len[0] = t
    return logits, labels, u_len, t_len


@pytest.mark.parametrize("impl", IMPLS)
def test_against_optax(impl):
    seed = _seed()
    logits, labels, u_len, t_len = _random_batch(seed)
    b, t, v = logits.shape
    lpad = (np.arange(t)[None] >= t_len[:, None]).astype(np.float32)
    ypad = (np.arange(labels.shape[1])[None] >= u_len[:, None]).astype(np.float32)

    def optax_total(x):
        return jnp.sum(optax.ctc_loss(x, lpad, labels, ypad, blank_id=v - 1))

    want = jax.jit(lambda x: optax.ctc_loss(x, lpad, labels, ypad, blank_id=v - 1))(jnp.asarray(logits))
    want_grad = jax.jit(jax.grad(optax_total))(jnp.asarray(logits))
    got, grad = _loss_and_grad(impl, jnp.asarray(logits), t_len, labels, u_len, v - 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=f"seed={seed}")
    np.testing.assert_allclose(grad, want_grad, atol=OPTAX_GRAD_TOL, err_msg=f"seed={seed}")


@pytest.mark.parametrize("impl,reduction", [("xla", "none"), ("xla", "sum"), ("pallas_gpu", "mean")])
def test_against_torch(impl, reduction):
    seed = _seed()
    logits, labels, u_len, t_len = _random_batch(seed, b=5, t=20, v=7, n=5)
    labels[1, :5] = 3          # 5 repeats need 9 frames...
    u_len[1], t_len[1] = 5, 7  # ...but get 7: impossible (inf; zero_infinity -> 0)
    torch = pytest.importorskip("torch")   # the Python 3.12 leg has no CPU torch wheel
    x = torch.tensor(logits.astype(np.float64), requires_grad=True)
    F = torch.nn.functional
    want = F.ctc_loss(F.log_softmax(x, -1).transpose(0, 1), torch.tensor(labels), torch.tensor(t_len),
                      torch.tensor(u_len), blank=6, reduction=reduction, zero_infinity=True)
    want.sum().backward()
    got, grad = _loss_and_grad(impl, jnp.asarray(logits), t_len, labels, u_len, 6, reduction=reduction,
                               zero_infinity=True)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=f"seed={seed}")
    np.testing.assert_allclose(grad, x.grad.numpy(), atol=GRAD_TOL, err_msg=f"seed={seed}")


def test_impossible_without_zero_infinity_and_clamp():
    logits = jnp.zeros((2, 2, 3)).at[1, :, 0].set(60.0)    # row 1: label [0] is ~certain
    labels = np.array([[0, 0], [0, 0]])
    got = ctc_loss(logits, np.array([2, 2]), labels, np.array([2, 1]), blank_id=2)
    assert np.isinf(got[0]) and 0.0 <= float(got[1]) < 1e-6
    assert float(ctc_loss(logits, np.array([2, 2]), labels, np.array([2, 1]), blank_id=2,
                          zero_infinity=True)[0]) == 0.0


def test_pallas_outputs_fully_written():
    """Interpret mode poisons pallas outputs with NaN: every element (frames past the length,
    padding states, partial V and T tiles) must be overwritten."""
    seed = _seed()
    logits, labels, u_len, t_len = _random_batch(seed, b=3, t=21, v=37, n=4)
    t_len[1], t_len[2] = 9, 0
    st = pallas_gpu._Static(blocks=pallas_gpu.CTCBlocks(bt=16, bv=16), interpret=True)
    x = jnp.asarray(logits)
    tl, ul = jnp.asarray(t_len, jnp.int32), jnp.asarray(u_len, jnp.int32)
    ext, skip, valid = xla.extended_labels(jnp.asarray(labels), ul, 36, pallas_gpu.num_states(4))
    lse = pallas_gpu.log_normalizer(x, tl, st)
    em = xla.emissions(x, lse, ext, valid, tl)
    alpha_buf, nll = pallas_gpu.alpha(em, skip, tl, ul, st)
    post = pallas_gpu.beta_posterior(em, alpha_buf, nll, skip, tl, ul, st)
    grad = pallas_gpu.dense_grad(x, lse, tl, jnp.ones(3), st)
    for name, a in dict(lse=lse, alpha=alpha_buf, nll=nll, post=post, grad=grad).items():
        assert not bool(jnp.isnan(a).any()), f"{name} has unwritten (NaN) elements, seed={seed}"
    # posteriors are distributions over states at every live frame
    live = np.arange(21)[None] < t_len[:, None]
    np.testing.assert_allclose(np.asarray(post.sum(-1))[live], 1.0, atol=1e-5)


def test_pallas_lowers_to_triton():
    """Cross-lower fwd+bwd for CUDA on this CPU machine (Pallas -> Triton IR): four kernels."""
    x = jax.ShapeDtypeStruct((2, 50, 3000), jnp.bfloat16)
    lab = jax.ShapeDtypeStruct((2, 11), jnp.int32)
    ln = jax.ShapeDtypeStruct((2,), jnp.int32)

    def loss(x, tl, lab, ul):
        safe = jnp.clip(lab, 0, 2998)
        ext, skip, valid = xla.extended_labels(safe, ul, 2999, pallas_gpu.num_states(11))
        return pallas_gpu.ctc_nll(x, ext, skip, valid, tl, ul, interpret=False).sum()

    text = lower_for_cuda(jax.grad(loss), x, ln, lab, ln)
    assert triton_calls(text) == 4, custom_call_targets(text)


def test_api_validation_and_fallback():
    x = jnp.zeros((2, 4, 3))
    with pytest.raises(KernelInputError, match="labels"):
        ctc_loss(x, np.array([4, 4]), np.zeros((3, 2), np.int32), np.array([1, 1]), blank_id=2)
    with pytest.raises(KernelInputError, match="reduction"):
        ctc_loss(x, np.array([4, 4]), np.zeros((2, 2), np.int32), np.array([1, 1]), blank_id=2,
                 reduction="avg")
    with pytest.raises(KernelUnsupportedError, match="'cudnn' was requested but cannot serve.*not a CTC"):
        ctc_loss(x, np.array([4, 4]), np.zeros((2, 2), np.int32), np.array([1, 1]), blank_id=2,
                 implementation="cudnn")
    api._warned.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(2):
            ctc_loss(x, np.array([4, 4]), np.zeros((2, 2), np.int32), np.array([1, 1]), blank_id=2,
                     implementation=("cudnn", "xla"))
    assert [str(m.message) for m in w] == ["ctc_loss: using 'xla' ('cudnn' is not a CTC implementation "
                                           "('pallas_gpu', 'xla', 'reference'))"]


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="compiled Triton kernels need a GPU")
def test_compiled_pallas_on_gpu():
    """On a GPU session: compiled Pallas CTC (default tiles) against float64 torch."""
    seed = _seed()
    logits, labels, u_len, t_len = _random_batch(seed, b=4, t=200, v=3001, n=40)
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.tensor(logits.astype(np.float64), requires_grad=True)
    want = F.ctc_loss(F.log_softmax(x, -1).transpose(0, 1), torch.tensor(labels), torch.tensor(t_len),
                      torch.tensor(u_len), blank=3000, reduction="none")
    want.sum().backward()
    got, grad = _loss_and_grad("pallas_gpu", jnp.asarray(logits), t_len, labels, u_len, 3000)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, err_msg=f"seed={seed}")
    np.testing.assert_allclose(grad, x.grad.numpy(), atol=1e-5, err_msg=f"seed={seed}")
