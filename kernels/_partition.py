"""Running a kernel per shard of the device mesh (`jax.shard_map`).

XLA cannot split a Triton / Mosaic custom call: left to the partitioner, a Pallas kernel inside a
sharded step gathers its inputs and every device computes the global batch. The entry points
(`kernels.attention.attention`, `kernels.ctc.ctc_loss`) therefore run every non-XLA
implementation under `shard_map` over the mesh given by the caller's `kernel_layout(...)`
context, so each device computes only its block:

- attention: q/k/v [B, T, H, D] split as P(batch_axes, None, head_axes, None) (heads only where
  both Hq and Hkv divide by the head axes' size, so a query head and its kv head stay together),
  lengths [B] as P(batch_axes); T, S and D are local;
- CTC: logits [B, T, V] as P(batch_axes, None, None), labels and lengths by rows; T and V local.

The batch axes that do not divide B are dropped from the right (as `sharding.rules.resolve_spec`
does); a layout whose every used axis has size 1 runs the kernel unwrapped. The layout is a
trace-time context (like `sharding.context.activation_sharding`, which the trainer enters next
to it); outside it (tests, decoding, single device) kernels run as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Sequence

import jax
from jax.sharding import PartitionSpec as P

_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("funasr_jax_kernel_layout", default=None)


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """mesh: a `jax.sharding.Mesh`; batch_axes: mesh axes the batch (row) dimension is split
    over, in order; head_axes: mesh axes attention heads are split over (tensor parallelism)."""

    mesh: jax.sharding.Mesh
    batch_axes: tuple[str, ...] = ()
    head_axes: tuple[str, ...] = ()

    def size(self, axes: Sequence[str]) -> int:
        return math.prod(self.mesh.shape[a] for a in axes)

    def fit(self, axes: Sequence[str], dim: int, *others: int) -> tuple[str, ...]:
        """The longest prefix of `axes` (size-1 axes removed) whose size divides `dim` and `others`."""
        out = [a for a in axes if self.mesh.shape.get(a, 1) > 1]
        while out and any(n % self.size(out) for n in (dim, *others)):
            out.pop()
        return tuple(out)


@contextlib.contextmanager
def kernel_layout(mesh, batch_axes: Sequence[str] = (), head_axes: Sequence[str] = ()):
    """Within this block (at trace time) the kernel entry points run their non-XLA
    implementations per shard of `mesh`. Unknown axis names raise ValueError."""
    unknown = [a for a in (*batch_axes, *head_axes) if a not in mesh.shape]
    if unknown:
        raise ValueError(f"kernel_layout: axes {unknown} are not in the mesh {dict(mesh.shape)}")
    token = _LAYOUT.set(KernelLayout(mesh, tuple(batch_axes), tuple(head_axes)))
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def current_layout() -> KernelLayout | None:
    return _LAYOUT.get()


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else axes


def per_shard(fn, layout: KernelLayout | None, in_specs, out_specs):
    """`fn` under `jax.shard_map(mesh=layout.mesh, ...)`, or `fn` itself when there is no layout
    or no spec splits anything. Replication checks are off: the kernels are opaque to them."""
    specs = jax.tree.leaves((in_specs, out_specs), is_leaf=lambda x: isinstance(x, P))
    if layout is None or all(entry is None for spec in specs for entry in spec):
        return fn
    return jax.shard_map(fn, mesh=layout.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def attention_specs(layout: KernelLayout | None, b: int, hq: int, hkv: int):
    """(qkv spec, lengths spec, local batch, local hq, local hkv) for attention inputs."""
    if layout is None:
        return P(), P(), b, hq, hkv
    batch = layout.fit(layout.batch_axes, b)
    heads = tuple(a for a in layout.fit(layout.head_axes, hq, hkv) if a not in batch)
    nb, nh = layout.size(batch), layout.size(heads)
    return P(_entry(batch), None, _entry(heads), None), P(_entry(batch)), b // nb, hq // nh, hkv // nh


def rows_spec(layout: KernelLayout | None, b: int):
    """(spec of dimension 0, local rows) for arrays split by rows only (CTC)."""
    if layout is None:
        return None, b
    batch = layout.fit(layout.batch_axes, b)
    return _entry(batch), b // layout.size(batch)
