"""Mesh construction, logical-axis rules, sharding helpers, remat policies and the memory planner.

Reads nothing from the models: parameter specs come from parameter PATHS (`axes.PARAM_RULES`),
and activation constraints (`context.constrain`) are no-ops unless a trainer activates them.
"""

from sharding.axes import LOGICAL_AXES, PARAM_RULES, UnmatchedParamError, param_logical_axes
from sharding.context import activation_sharding, constrain
from sharding.mesh import MESH_PRESETS, MeshError, make_mesh, mesh_shape
from sharding.rules import MESH_AXES, RULE_TABLES, RulesError, ShardingRules, get_rules, resolve_spec
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
    "LOGICAL_AXES", "PARAM_RULES", "UnmatchedParamError", "param_logical_axes", "activation_sharding",
    "constrain", "MESH_PRESETS", "MeshError", "make_mesh", "mesh_shape", "MESH_AXES", "RULE_TABLES",
    "RulesError", "ShardingRules", "get_rules", "resolve_spec", "InsufficientShardingError", "batch_sharding",
    "batch_spec", "check_sufficiently_sharded", "opt_state_shardings", "param_shardings", "param_specs",
    "replicated",
]
