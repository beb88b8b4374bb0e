"""Device meshes with the axes ("data", "fsdp", "tensor") and the named presets.

Presets (sizes of data x fsdp x tensor; -1 = all remaining devices):
    1              1 x 1 x 1   one device
    8x-data        8 x 1 x 1   one 8-GPU node, pure data parallel
    8x-fsdp        1 x 8 x 1   one node, params/optimizer FSDP-sharded 8 ways
    2fsdp-4tensor  1 x 2 x 4   one node, FSDP 2 x tensor parallel 4
    2x8, 4x8, 8x8  N x 8 x 1   N nodes of 8 GPUs: data across nodes, FSDP within a node
    auto           all x 1 x 1 every device on the data axis
An explicit shape "data=2,fsdp=4,tensor=1" (one size may be -1) also works.

Devices are ordered by (process_index, id), so with one process per node each node owns one
contiguous block of the fsdp x tensor axes and only the data axis crosses the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from sharding.rules import MESH_AXES

MESH_PRESETS: dict[str, dict[str, int]] = {
    "1": {"data": 1, "fsdp": 1, "tensor": 1},
    "8x-data": {"data": 8, "fsdp": 1, "tensor": 1},
    "8x-fsdp": {"data": 1, "fsdp": 8, "tensor": 1},
    "2fsdp-4tensor": {"data": 1, "fsdp": 2, "tensor": 4},
    "2x8": {"data": 2, "fsdp": 8, "tensor": 1},
    "4x8": {"data": 4, "fsdp": 8, "tensor": 1},
    "8x8": {"data": 8, "fsdp": 8, "tensor": 1},
    "auto": {"data": -1, "fsdp": 1, "tensor": 1},
}


class MeshError(ValueError):
    """A mesh preset is unknown or does not fit the devices."""


def parse_mesh_shape(preset: str) -> dict[str, int]:
    """Preset name or "data=2,fsdp=4" -> {axis: size} (may hold one -1)."""
    if preset in MESH_PRESETS:
        return dict(MESH_PRESETS[preset])
    if "=" not in preset:
        raise MeshError(f"mesh.preset: unknown preset {preset!r}; choose one of {sorted(MESH_PRESETS)} "
                        "or give sizes like 'data=2,fsdp=4,tensor=1'")
    shape = {a: 1 for a in MESH_AXES}
    for part in preset.split(","):
        name, _, size = part.partition("=")
        name = name.strip()
        if name not in MESH_AXES:
            raise MeshError(f"mesh.preset {preset!r}: unknown axis {name!r} (have {MESH_AXES})")
        try:
            shape[name] = int(size)
        except ValueError:
            raise MeshError(f"mesh.preset {preset!r}: size of {name!r} is not an integer") from None
    return shape


def mesh_shape(preset: str, n_devices: int) -> dict[str, int]:
    """Resolve -1 and check the product equals `n_devices`."""
    shape = parse_mesh_shape(preset)
    fill = [a for a, s in shape.items() if s == -1]
    if len(fill) > 1:
        raise MeshError(f"mesh.preset {preset!r}: at most one axis may be -1")
    known = math.prod(s for s in shape.values() if s != -1)
    if fill:
        if n_devices % known:
            raise MeshError(f"mesh.preset {preset!r}: {n_devices} devices are not a multiple of {known}")
        shape[fill[0]] = n_devices // known
    if any(s < 1 for s in shape.values()):
        raise MeshError(f"mesh.preset {preset!r}: axis sizes must be >= 1, got {shape}")
    if math.prod(shape.values()) != n_devices:
        raise MeshError(f"mesh.preset {preset!r} needs {math.prod(shape.values())} devices "
                        f"({' x '.join(f'{a}={shape[a]}' for a in MESH_AXES)}) but {n_devices} are available")
    return shape


def make_mesh(preset: str = "auto", devices: Sequence | None = None) -> Mesh:
    """A `Mesh` over `devices` (default all) with Auto axis types (classic GSPMD sharding)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(preset, len(devices))
    devices.sort(key=lambda d: (d.process_index, d.id))
    grid = np.asarray(devices, dtype=object).reshape(tuple(shape[a] for a in MESH_AXES))
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_sizes(mesh) -> dict[str, int]:
    """{axis: size} for a Mesh or AbstractMesh."""
    return dict(mesh.shape)
