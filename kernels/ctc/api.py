"""CTC loss dispatch.

`ctc_loss(logits, logit_lengths, labels, label_lengths, *, blank_id, reduction, zero_infinity,
implementation)`:
- logits [B, T, V] unnormalized (log-softmax is applied inside, in f32), logit_lengths [B] frames;
- labels [B, L] int, padded past label_lengths [B] (padding values are ignored); labels must not
  contain `blank_id` (negative blank_id counts from the end: -1 is the last class);
- reduction follows `torch.nn.functional.ctc_loss`: 'none' -> [B] per-utterance losses,
  'sum' -> their sum, 'mean' -> mean over the batch of loss[b] / max(label_lengths[b], 1);
- zero_infinity: impossible alignments (too few frames for the labels and their required
  blanks between repeats) give loss 0 and gradient 0 instead of inf. Without it their loss is inf
  and their gradient 0 (not NaN). Losses are clamped at >= 0 (f32 rounding).
- implementation: None (best for the backend: "pallas_gpu" on GPU, "xla" elsewhere), "xla",
  "pallas_gpu" (interpreted off-GPU), "reference" (brute force, tiny inputs, concrete labels), or
  a tuple tried in order. Unavailable choices fall back to "xla" with one warning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels._common import KernelInputError
from kernels._dispatch import Dispatcher, compile_probe, require_compiled
from kernels.ctc import pallas_gpu, reference, xla

IMPLEMENTATIONS = ("pallas_gpu", "xla", "reference")
BACKEND_PREFERENCE = {"gpu": ("pallas_gpu", "xla"), "cpu": ("xla",), "tpu": ("xla",)}
_DISPATCH = Dispatcher("ctc_loss", IMPLEMENTATIONS, BACKEND_PREFERENCE,
                       unknown=lambda name: f"{name!r} is not a CTC implementation {IMPLEMENTATIONS}")
_warned = _DISPATCH.warned


def _validate(logits, logit_lengths, labels, label_lengths, reduction):
    if logits.ndim != 3:
        raise KernelInputError(f"ctc_loss: logits must be [B, T, V], got shape {logits.shape}")
    b = logits.shape[0]
    if labels.ndim != 2 or labels.shape[0] != b:
        raise KernelInputError(f"ctc_loss: labels must be [B={b}, L], got shape {labels.shape}")
    for name, x in (("logit_lengths", logit_lengths), ("label_lengths", label_lengths)):
        if jnp.shape(x) != (b,):
            raise KernelInputError(f"ctc_loss: {name} must be [B={b}], got shape {jnp.shape(x)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise KernelInputError(f"ctc_loss: labels must be integers, got {labels.dtype}")
    if reduction not in ("none", "sum", "mean"):
        raise KernelInputError(f"ctc_loss: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")


@compile_probe
def _gpu_compile_error(dtype):
    """On GPU: a tiny Pallas CTC fwd+bwd (logits [2, 40, 300], labels [2, 7]) per logits dtype."""
    x = jax.ShapeDtypeStruct((2, 40, 300), dtype)
    lab = jax.ShapeDtypeStruct((2, 7), jnp.int32)
    ln = jax.ShapeDtypeStruct((2,), jnp.int32)

    def loss(x, t_len, labels, u_len):
        ext, skip, valid = xla.extended_labels(labels, u_len, 0, pallas_gpu.num_states(7))
        return pallas_gpu.ctc_nll(x, ext, skip, valid, t_len, u_len).sum()

    return jax.grad(loss), (x, ln, lab, ln)


def _check(name: str, dtype) -> None:
    """Only the compiled Pallas kernel can be refused (on GPU, when its probe fails to compile)."""
    if name == "pallas_gpu" and jax.default_backend() == "gpu":
        require_compiled(name, _gpu_compile_error(jnp.dtype(dtype)))


def ctc_loss(logits, logit_lengths, labels, label_lengths, *, blank_id: int, reduction: str = "none",
             zero_infinity: bool = False, implementation=None):
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    _validate(logits, logit_lengths, labels, label_lengths, reduction)
    _, t, v = logits.shape
    blank = blank_id % v
    t_len = jnp.clip(jnp.asarray(logit_lengths).astype(jnp.int32), 0, t)
    u_len = jnp.clip(jnp.asarray(label_lengths).astype(jnp.int32), 0, labels.shape[1])
    name = _DISPATCH.select(implementation, lambda name: _check(name, logits.dtype))
    if name == "reference":
        nll = jnp.maximum(reference.ctc_loss(logits, logit_lengths, labels, label_lengths, blank_id=blank), 0.0)
    else:
        n_states = pallas_gpu.num_states(labels.shape[1]) if name == "pallas_gpu" else 2 * labels.shape[1] + 1
        safe = jnp.clip(labels.astype(jnp.int32), 0, v - 1)
        ext, skip, valid = xla.extended_labels(safe, u_len, blank, n_states)
        fn = pallas_gpu.ctc_nll if name == "pallas_gpu" else xla.ctc_nll
        nll = fn(logits, ext, skip, valid, t_len, u_len)
    if zero_infinity:
        nll = jnp.where(jnp.isinf(nll), 0.0, nll)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    return jnp.mean(nll / jnp.maximum(u_len, 1).astype(nll.dtype))
