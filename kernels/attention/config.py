"""Block sizes of the Pallas GPU flash-attention kernel, per device kind and head_dim.

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


# (device-kind substring, head_dim upper bound) -> BlockSizes. First match wins.
_TABLE: list[tuple[str, int, BlockSizes]] = [
    ("H100", 64, BlockSizes(128, 128, 64, 64, 64, 64, num_warps=4, num_stages=3, num_warps_bwd=4)),
    ("H100", 128, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=8, num_stages=3, num_warps_bwd=8)),
    ("H200", 64, BlockSizes(128, 128, 64, 64, 64, 64, num_warps=4, num_stages=3, num_warps_bwd=4)),
    ("H200", 128, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=8, num_stages=3, num_warps_bwd=8)),
    ("A100", 64, BlockSizes(128, 64, 64, 64, 64, 64, num_warps=4, num_stages=3)),
    ("A100", 128, BlockSizes(128, 32, 64, 32, 32, 64, num_warps=8, num_stages=2, num_warps_bwd=8)),
    ("", 64, BlockSizes(64, 64, 32, 32, 32, 32)),
    ("", 1 << 30, BlockSizes(64, 32, 32, 32, 32, 32)),
]


def block_sizes_for(device_kind: str, head_dim: int) -> BlockSizes:
    """The tuned BlockSizes for a device kind (substring match) and a (padded) head_dim."""
    for kind, max_d, bs in _TABLE:
        if kind in device_kind and head_dim <= max_d:
            return bs
    return _TABLE[-1][2]
