"""Sharding mechanism: meshes, logical->mesh rule tables, spec trees, activation constraints.

Imports nothing from the models or the trainer: which logical axes a parameter has is the
models' business (`funasr_jax.models.axes`), passed in as `axes_of`; activation constraints
(`context.constrain`) are no-ops unless a trainer activates them. `paths` names pytree leaves.
"""

from sharding.context import activation_sharding, constrain
from sharding.mesh import MESH_PRESETS, MeshError, make_mesh, mesh_shape
from sharding.rules import LOGICAL_AXES, MESH_AXES, RULE_TABLES, RulesError, ShardingRules, get_rules, resolve_spec
from sharding.specs import (
    InsufficientShardingError,
    batch_sharding,
    batch_spec,
    check_sufficiently_sharded,
    opt_state_shardings,
    param_shardings,
    param_specs,
    replicated,
)

__all__ = [
    "LOGICAL_AXES", "activation_sharding",
    "constrain", "MESH_PRESETS", "MeshError", "make_mesh", "mesh_shape", "MESH_AXES", "RULE_TABLES",
    "RulesError", "ShardingRules", "get_rules", "resolve_spec", "InsufficientShardingError", "batch_sharding",
    "batch_spec", "check_sufficiently_sharded", "opt_state_shardings", "param_shardings", "param_specs",
    "replicated",
]
