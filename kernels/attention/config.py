"""Block sizes of the Pallas GPU flash-attention kernel, per device kind, dtype and head_dim.

The table is a starting point chosen from the shapes of the Triton FA2 design (128-row query
tiles for the forward, 64x64 tiles for the backward) and the shared-memory budget of Ampere/Hopper
(~227 KiB per SM); refine it from `python -m kernels.bench` on the target card.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes (rows) of the three kernels, and Triton launch parameters.

    block_q/block_k: forward query / key tile; block_q_dq/block_k_dq: dq kernel;
    block_q_dkv/block_k_dkv: dk/dv kernel. All powers of two >= 16.
    """

    block_q: int = 128
    block_k: int = 64
    block_q_dq: int = 64
    block_k_dq: int = 64
    block_q_dkv: int = 64
    block_k_dkv: int = 64
    num_warps: int = 4
    num_stages: int = 2
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("block") and (v < 16 or v & (v - 1)):
                raise ValueError(f"BlockSizes.{f.name}={v} must be a power of two >= 16")


# (device-kind substring, input itemsize, head_dim upper bound) -> BlockSizes. First match wins.
# f32 tiles hold twice the bytes of bf16 ones, so their entries use half the key rows or fewer
# stages; `shared_memory_bytes` below is what `check_fits` holds each entry to.
_TABLE: list[tuple[str, int, int, BlockSizes]] = [
    ("H100", 2, 64, BlockSizes(128, 128, 64, 64, 64, 64, num_warps=4, num_stages=3, num_warps_bwd=4)),
    ("H100", 2, 128, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=8, num_stages=3, num_warps_bwd=8)),
    ("H100", 4, 64, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=4, num_stages=2, num_warps_bwd=4)),
    ("H100", 4, 128, BlockSizes(64, 64, 64, 32, 32, 64, num_warps=8, num_stages=2, num_warps_bwd=8)),
    ("H200", 2, 64, BlockSizes(128, 128, 64, 64, 64, 64, num_warps=4, num_stages=3, num_warps_bwd=4)),
    ("H200", 2, 128, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=8, num_stages=3, num_warps_bwd=8)),
    ("H200", 4, 64, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=4, num_stages=2, num_warps_bwd=4)),
    ("H200", 4, 128, BlockSizes(64, 64, 64, 32, 32, 64, num_warps=8, num_stages=2, num_warps_bwd=8)),
    ("A100", 2, 64, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=4, num_stages=3)),
    ("A100", 2, 128, BlockSizes(128, 32, 64, 32, 32, 64, num_warps=8, num_stages=2, num_warps_bwd=8)),
    ("A100", 4, 64, BlockSizes(64, 64, 64, 32, 32, 64, num_warps=4, num_stages=2)),
    ("A100", 4, 128, BlockSizes(64, 32, 32, 32, 32, 32, num_warps=8, num_stages=2, num_warps_bwd=8)),
    ("", 2, 64, BlockSizes(64, 64, 32, 32, 32, 32)),
    ("", 2, 128, BlockSizes(64, 32, 32, 32, 32, 32)),
    ("", 2, 1 << 30, BlockSizes(32, 32, 32, 32, 32, 32, num_stages_bwd=1)),   # head_dim 256 in 99 KiB
    ("", 4, 64, BlockSizes(64, 32, 32, 32, 32, 32)),
    ("", 4, 1 << 30, BlockSizes(32, 16, 16, 16, 16, 16)),
]

# Shared memory per thread block (opt-in maximum), bytes; first substring match wins.
SHARED_MEMORY: list[tuple[str, int]] = [
    ("H100", 227 * 1024), ("H200", 227 * 1024), ("H20", 227 * 1024), ("GH200", 227 * 1024),
    ("B200", 227 * 1024), ("A100", 163 * 1024), ("A800", 163 * 1024), ("", 99 * 1024),
]


def block_sizes_for(device_kind: str, head_dim: int, dtype="bfloat16") -> BlockSizes:
    """The tuned BlockSizes for a device kind (substring match), input dtype (by itemsize: 2 for
    bf16/f16, 4 for f32) and (padded) head_dim."""
    size = 4 if _itemsize(dtype) > 2 else 2
    for kind, itemsize, max_d, bs in _TABLE:
        if kind in device_kind and itemsize == size and head_dim <= max_d:
            return bs
    return _TABLE[-1][3]


def _itemsize(dtype) -> int:
    import numpy as np
    return np.dtype(dtype).itemsize


def shared_memory_bytes(bs: BlockSizes, head_dim: int, dtype) -> dict[str, int]:
    """Estimated shared memory of each kernel (bytes), as Triton software-pipelines them: the
    tiles loaded inside the loop are buffered `num_stages` times, the resident ones once, and
    the probability tile of the second matmul is staged once in the input dtype.
    fwd: q [bq, D] + stages x (k, v) [bk, D] + p [bq, bk];
    dq:  q, do [bq, D] + stages x (k, v) [bk, D] + ds [bq, bk];
    dkv: k, v [bk, D] + stages x (q, do) [bq, D] + p, ds [bq, bk]."""
    e, d = _itemsize(dtype), head_dim
    return {
        "fwd": e * (bs.block_q * d + bs.num_stages * 2 * bs.block_k * d + bs.block_q * bs.block_k),
        "dq": e * (2 * bs.block_q_dq * d + bs.num_stages_bwd * 2 * bs.block_k_dq * d + bs.block_q_dq * bs.block_k_dq),
        "dkv": e * (2 * bs.block_k_dkv * d + bs.num_stages_bwd * 2 * bs.block_q_dkv * d
                    + 2 * bs.block_q_dkv * bs.block_k_dkv),
    }


def shared_memory_limit(device_kind: str) -> int:
    for kind, limit in SHARED_MEMORY:
        if kind in device_kind:
            return limit
    return SHARED_MEMORY[-1][1]


def tiling_problem(bs: BlockSizes, head_dim: int, dtype, device_kind: str) -> str | None:
    """Why this tiling cannot run on `device_kind` (its shared memory), or None."""
    need = shared_memory_bytes(bs, head_dim, dtype)
    limit = shared_memory_limit(device_kind)
    over = {k: v for k, v in need.items() if v > limit}
    if not over:
        return None
    parts = ", ".join(f"{k} {v // 1024} KiB" for k, v in over.items())
    return (f"tiling {bs} needs {parts} of shared memory at head_dim {head_dim}, "
            f"{_dtype_name(dtype)}; {device_kind!r} has {limit // 1024} KiB per block")


def _dtype_name(dtype) -> str:
    import numpy as np
    return np.dtype(dtype).name
