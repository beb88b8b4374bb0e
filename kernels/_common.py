"""Shared helpers for the kernel packages: typed errors, backend probes, padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp


class KernelInputError(ValueError):
    """Bad input to a kernel entry point (wrong rank, shape or dtype); the message names the tensor."""


class KernelUnsupportedError(NotImplementedError):
    """An implementation cannot run this call here (backend, dtype, head_dim, missing library)."""


class KernelNumericsError(RuntimeError):
    """A compiled kernel disagrees with the XLA implementation on the probe input (a bug: never
    answered by falling back)."""


def validate_attention_inputs(q, k, v, mask=None) -> None:
    """q [B, T, Hq, D], k/v [B, S, Hkv, D] with Hq % Hkv == 0, optional mask [B, T, S];
    raises KernelInputError naming the offending shapes."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise KernelInputError(f"attention: q/k/v must be [B, T, H, D]; got {q.shape}, {k.shape}, {v.shape}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise KernelInputError(f"attention: incompatible q {q.shape}, k {k.shape}, v {v.shape}")
    if k.shape[2] == 0 or q.shape[2] % k.shape[2]:
        raise KernelInputError(f"attention: q heads {q.shape[2]} not a multiple of kv heads {k.shape[2]}")
    if mask is not None and tuple(mask.shape) != (q.shape[0], q.shape[1], k.shape[1]):
        raise KernelInputError(f"attention: mask must be [B, T, S] = {(q.shape[0], q.shape[1], k.shape[1])},"
                               f" got {tuple(mask.shape)}")


def backend() -> str:
    """'cpu', 'gpu' or 'tpu' for the default device."""
    return jax.default_backend()


def device_kind() -> str:
    """The default device's kind string, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu'."""
    try:
        return jax.devices()[0].device_kind
    except Exception:  # pragma: no cover - no devices at all
        return "unknown"


def default_interpret() -> bool:
    """Pallas GPU kernels run compiled on a GPU and interpreted everywhere else."""
    return backend() != "gpu"


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def pad_axis(x, axis: int, size: int, value=0):
    """Pad `x` along `axis` at the end up to `size` (no-op when already that size)."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def lengths_or_full(lengths, batch: int, full: int, name: str):
    """int32 [B] lengths clamped to [0, full]; `None` means every row is `full` long."""
    if lengths is None:
        return jnp.full((batch,), full, jnp.int32)
    lengths = jnp.asarray(lengths)
    if lengths.shape != (batch,):
        raise KernelInputError(f"{name} must have shape [{batch}], got {lengths.shape}")
    return jnp.clip(lengths.astype(jnp.int32), 0, full)
