"""PartitionSpec / NamedSharding trees for parameters, optimizer state and batches.

Parameter specs come from the caller's `axes_of(path, ndim) -> logical axes` (the models' table,
`funasr_jax.models.axes.logical_axes_for`) + a `ShardingRules` table.
Optimizer-state leaves take the spec of the parameter they mirror: optax states hold copies
of the param tree (Adam's mu / nu), so a leaf whose dict-key path and shape equal a
parameter's gets that parameter's sharding; everything else (step counts, scalars) is
replicated. Frozen leaves under `optax.multi_transform` + `set_to_zero` have no state at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from sharding.mesh import mesh_sizes
from sharding.paths import key_name, path_str
from sharding.rules import BATCH_AXES, ShardingRules, resolve_spec


class InsufficientShardingError(ValueError):
    """Large tensors would stay fully replicated on a mesh that has fsdp / tensor axes."""


AxesOf = Callable[[str, int], Sequence[str | None]]


def param_specs(params, mesh, rules: ShardingRules, axes_of: AxesOf):
    """Pytree of PartitionSpec, one per parameter leaf (params or their ShapeDtypeStructs).

    axes_of(path, ndim): the logical axis names of the parameter at the '/'-joined `path`;
    the path's first component names the model part that per-component rules key on.
    """
    sizes = mesh_sizes(mesh)

    def one(path, x):
        p = path_str(path)
        comp = p.split("/", 1)[0]
        logical = axes_of(p, len(x.shape))
        return resolve_spec(logical, x.shape, lambda n: rules.param_axes(n, comp), sizes)

    return jax.tree_util.tree_map_with_path(one, params)


def param_shardings(params, mesh, rules: ShardingRules, axes_of: AxesOf):
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), param_specs(params, mesh, rules, axes_of),
                                  is_leaf=lambda s: isinstance(s, PartitionSpec))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _dict_path(path) -> tuple[str, ...]:
    return tuple(key_name(k) for k in path if isinstance(k, jax.tree_util.DictKey))


def opt_state_shardings(opt_state, params, param_sharding_tree, mesh):
    """Shardings for an optimizer state (or its eval_shape) that mirrors `params`.

    A state leaf whose dict-key path ends with a parameter path and whose shape equals that
    parameter's takes the parameter's sharding; other leaves (counts, scalars, anything
    factored) are replicated.
    """
    flat_params = {_dict_path(p): (tuple(x.shape), s) for (p, x), s in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(
            param_sharding_tree, is_leaf=lambda s: isinstance(s, NamedSharding)))}
    rep = replicated(mesh)

    def one(path, x):
        keys = _dict_path(path)
        # optax wrappers add dict keys of their own in front (multi_transform's label "train").
        for i in range(len(keys)):
            hit = flat_params.get(keys[i:])
            if hit is not None:
                return hit[1] if hit[0] == tuple(x.shape) else rep
        return rep

    return jax.tree_util.tree_map_with_path(one, opt_state)


def batch_spec(mesh) -> PartitionSpec:
    """Batch dim over data x fsdp (size-1 axes dropped); other dims replicated."""
    sizes = mesh_sizes(mesh)
    axes = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
    return PartitionSpec(axes if len(axes) > 1 else (axes[0] if axes else None))


def batch_sharding(mesh) -> NamedSharding:
    """One NamedSharding usable as a pytree prefix for every array of a batch dict."""
    return NamedSharding(mesh, batch_spec(mesh))


def batch_shards(mesh) -> int:
    sizes = mesh_sizes(mesh)
    return math.prod(sizes.get(a, 1) for a in BATCH_AXES)


def check_sufficiently_sharded(tree, shardings, mesh, *, min_size: int = 1_000_000, what: str = "parameter"):
    """Raise InsufficientShardingError naming every leaf with more than `min_size` elements that
    is fully replicated although the mesh has an fsdp or tensor axis > 1. min_size <= 0: off."""
    sizes = mesh_sizes(mesh)
    if min_size <= 0 or (sizes.get("fsdp", 1) == 1 and sizes.get("tensor", 1) == 1):
        return
    bad = []
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    shs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    for (path, x), s in zip(leaves, shs):
        n = math.prod(x.shape)
        if n > min_size and all(e is None for e in s.spec):
            bad.append((n, f"{path_str(path)} {tuple(x.shape)}"))
    if bad:
        bad = [b for _, b in sorted(bad, key=lambda t: -t[0])]  # largest first
        raise InsufficientShardingError(
            f"{len(bad)} {what} tensors with more than {min_size:,} elements stay fully replicated on mesh "
            f"{sizes}: " + "; ".join(bad[:20]) + (" ..." if len(bad) > 20 else "")
            + ". Change mesh.rules / mesh.rule_overrides, or raise mesh.min_sharded_size.")


def describe(tree, shardings) -> dict[str, str]:
    """{path: 'shape spec'} for logs and golden tests."""
    out = {}
    shs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(tree), shs):
        out[path_str(path)] = f"{tuple(x.shape)} {s.spec}"
    return out
