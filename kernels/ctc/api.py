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
  a tuple tried in order. A name asked for explicitly serves the call or raises
  `KernelUnsupportedError`; None / a tuple falls back to "xla" with one warning. On an accelerator
  the first call per (dtype, tiling, states) compiles that tiling and checks loss and gradient
  against "xla" on a small input (when they differ: `KernelNumericsError` if "pallas_gpu" was
  asked for by name; for None / a tuple, one warning naming the difference, then "xla").

Under `kernels.kernel_layout(mesh, batch_axes)` "pallas_gpu" runs per shard (`jax.shard_map`):
logits [B, T, V] split as P(batch_axes, None, None), labels and lengths by rows; frames and the
vocabulary stay local (`kernels/_partition.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from kernels._common import KernelInputError
from kernels._dispatch import (Dispatcher, accelerator_checks, compile_probe, max_rel_error, numerics_probe,
                               require_accurate, require_compiled)
from kernels._partition import current_layout, per_shard, rows_spec
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


def _probe_case(dtype, blocks, n_states: int, v: int, seed: int = 0):
    """logits [2, T, V] (T spans two frame tiles and fits the longest label sequence), labels
    [2, L] with L the most labels `n_states` holds; row 1 is shorter in frames and labels."""
    n_labels = (n_states - 1) // 2
    t = max(2 * blocks.bt + 5, 2 * n_labels + 3)
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((2, t, v), np.float32).astype(dtype)
    labels = rng.integers(0, v - 1, (2, n_labels)).astype(np.int32)   # class v - 1 is the blank
    return logits, np.array([t, t - 4], np.int32), labels, np.array([n_labels, n_labels // 2], np.int32)


def _nll_and_grad(name: str, n_states: int, blocks):
    def run(logits, t_len, labels, u_len):
        v = logits.shape[-1]

        def total(x):
            ext, skip, valid = xla.extended_labels(labels, u_len, v - 1, n_states)
            if name == "pallas_gpu":
                return pallas_gpu.ctc_nll(x, ext, skip, valid, t_len, u_len, blocks=blocks).sum()
            return xla.ctc_nll(x, ext, skip, valid, t_len, u_len).sum()
        return jax.value_and_grad(total)(logits)

    return run


@compile_probe
def _compiles(dtype, blocks, n_states: int, v: int):
    """Pallas CTC fwd+bwd at the call's tiles, states and vocabulary (two frame tiles)."""
    args = _probe_case(dtype, blocks, n_states, v)
    return _nll_and_grad("pallas_gpu", n_states, blocks), [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]


NUMERICS_TOLERANCE = 1e-3   # max error relative to max |xla| (loss and gradient; the math is f32 in both)


@numerics_probe
def _agrees(dtype, blocks, n_states: int, v: int):
    def compare(got, want):
        err = max_rel_error(got, want)
        return None if err <= NUMERICS_TOLERANCE else f"max error {err:.3g} x max|xla| > {NUMERICS_TOLERANCE:g}"

    return (_nll_and_grad("pallas_gpu", n_states, blocks), _nll_and_grad("xla", 2 * ((n_states - 1) // 2) + 1, None),
            _probe_case(dtype, blocks, n_states, v), compare)


def _check(name: str, dtype, t: int, v: int, max_labels: int) -> None:
    """The compiled Pallas kernel is refused when its probe does not compile; it raises
    KernelNumericsError when it compiles but disagrees with xla."""
    if name == "pallas_gpu" and accelerator_checks():
        key = (jnp.dtype(dtype), pallas_gpu.resolve_blocks(t, v), pallas_gpu.num_states(max_labels), v)
        require_compiled(name, _compiles(*key))
        require_accurate(name, _agrees(*key), f"a {key[0].name} probe input (tiles {key[1]}, {key[2]} states, V {v})")


def ctc_loss(logits, logit_lengths, labels, label_lengths, *, blank_id: int, reduction: str = "none",
             zero_infinity: bool = False, implementation=None):
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    _validate(logits, logit_lengths, labels, label_lengths, reduction)
    _, t, v = logits.shape
    blank = blank_id % v
    t_len = jnp.clip(jnp.asarray(logit_lengths).astype(jnp.int32), 0, t)
    u_len = jnp.clip(jnp.asarray(label_lengths).astype(jnp.int32), 0, labels.shape[1])
    name = _DISPATCH.select(implementation, lambda name: _check(name, logits.dtype, t, v, labels.shape[1]))
    if name == "reference":
        nll = jnp.maximum(reference.ctc_loss(logits, logit_lengths, labels, label_lengths, blank_id=blank), 0.0)
    else:
        n_states = pallas_gpu.num_states(labels.shape[1]) if name == "pallas_gpu" else 2 * labels.shape[1] + 1
        safe = jnp.clip(labels.astype(jnp.int32), 0, v - 1)
        ext, skip, valid = xla.extended_labels(safe, u_len, blank, n_states)
        if name == "pallas_gpu":
            layout = current_layout()
            rows, _ = rows_spec(layout, logits.shape[0])
            fn = per_shard(pallas_gpu.ctc_nll, layout,
                           (P(rows, None, None), P(rows, None), P(rows, None), P(rows, None), P(rows), P(rows)),
                           P(rows))
        else:
            fn = xla.ctc_nll
        nll = fn(logits, ext, skip, valid, t_len, u_len)
    if zero_infinity:
        nll = jnp.where(jnp.isinf(nll), 0.0, nll)
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    return jnp.mean(nll / jnp.maximum(u_len, 1).astype(nll.dtype))
