"""Rules tables: logical axis names -> mesh axes (`data`, `fsdp`, `tensor`).

Two mappings per table, as levanter separates them: `params` says how weights (and their
optimizer moments) are STORED, `activations` how intermediate values are laid out during
compute. Parameters are FSDP-sharded over `embed` and tensor-parallel over heads / mlp / vocab;
activations are batch-sharded over data x fsdp and tensor-parallel over heads / mlp / vocab.
`components` overrides the parameter mapping for one model part (`audio_encoder`,
`audio_adaptor`, `llm`, `ctc_decoder`, `ctc`), e.g. to keep the small encoder free of tensor
parallelism.

Resolution (`resolve_spec`) drops mesh axes of size 1, axes already used by an earlier
dimension, and trailing axes whose size does not divide the dimension (the CTC vocabulary
60,515 is odd): such a dimension is replicated, and `specs.check_sufficiently_sharded` catches
a large tensor that ends up replicated everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jax.sharding import PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# The logical axis names models may give parameters and activations (funasr_jax.models.axes).
LOGICAL_AXES = ("batch", "length", "audio_frames", "embed", "heads", "kv_heads", "head_dim", "mlp",
                "vocab", "lora", "norm", "conv", "layers")  # layers: a stacked stack's layer axis (replicated)
BATCH_AXES = ("data", "fsdp")

MeshAxes = tuple[str, ...]


class RulesError(ValueError):
    """A rules table or an override names an unknown table, logical axis or mesh axis."""


def _norm(v) -> MeshAxes:
    if v is None or v == "" or v == ():
        return ()
    if isinstance(v, str):
        return tuple(a for a in v.replace("+", ",").split(",") if a)
    return tuple(v)


@dataclass(frozen=True)
class ShardingRules:
    name: str
    params: Mapping[str, MeshAxes]
    activations: Mapping[str, MeshAxes]
    components: Mapping[str, Mapping[str, MeshAxes]] = field(default_factory=dict)

    def param_axes(self, logical: str | None, component: str | None = None) -> MeshAxes:
        if logical is None:
            return ()
        comp = self.components.get(component or "", {})
        if logical in comp:
            return _norm(comp[logical])
        return _norm(self.params.get(logical))

    def activation_axes(self, logical: str | None) -> MeshAxes:
        return () if logical is None else _norm(self.activations.get(logical))

    def with_overrides(self, items: Sequence[str]) -> "ShardingRules":
        """Apply `mesh.rule_overrides` entries.

        "embed=fsdp"              parameter rule for every component
        "llm/heads=tensor"        parameter rule for one component
        "act:batch=data+fsdp"     activation rule
        "vocab="                  replicate that logical axis
        """
        params = dict(self.params)
        acts = dict(self.activations)
        comps = {k: dict(v) for k, v in self.components.items()}
        for item in items:
            if "=" not in item:
                raise RulesError(f"mesh.rule_overrides: {item!r} is not 'logical=axis[+axis]'")
            key, value = item.split("=", 1)
            axes = _norm(value.strip())
            bad = [a for a in axes if a not in MESH_AXES]
            if bad:
                raise RulesError(f"mesh.rule_overrides: {item!r} names unknown mesh axes {bad} (have {MESH_AXES})")
            key = key.strip()
            if key.startswith("act:"):
                acts[_check_logical(key[4:], item)] = axes
            elif "/" in key:
                comp, logical = key.split("/", 1)
                comps.setdefault(comp, {})[_check_logical(logical, item)] = axes
            else:
                params[_check_logical(key, item)] = axes
        return dataclasses.replace(self, params=params, activations=acts, components=comps)


def _check_logical(name: str, where: str) -> str:
    if name not in LOGICAL_AXES:
        raise RulesError(f"mesh.rule_overrides: {where!r}: unknown logical axis {name!r} (have {LOGICAL_AXES})")
    return name


_TP = {"heads": ("tensor",), "kv_heads": ("tensor",), "mlp": ("tensor",), "vocab": ("tensor",)}

RULE_TABLES: dict[str, ShardingRules] = {
    # FSDP over embed + tensor parallelism everywhere.
    "default": ShardingRules(
        "default",
        params={"embed": ("fsdp",), **_TP},
        activations={"batch": BATCH_AXES, **_TP},
    ),
    # Tensor parallelism only in the LLM; the audio parts (4-8 heads) are FSDP-only.
    "llm-tp": ShardingRules(
        "llm-tp",
        params={"embed": ("fsdp",), **_TP},
        activations={"batch": BATCH_AXES, **_TP},
        components={c: {"heads": (), "kv_heads": (), "mlp": (), "vocab": ()}
                    for c in ("audio_encoder", "audio_adaptor", "ctc_decoder", "ctc")},
    ),
    # Pure data parallelism: every parameter replicated (for meshes with only a data axis).
    "replicated": ShardingRules("replicated", params={}, activations={"batch": BATCH_AXES}),
}


def get_rules(name: str = "default", overrides: Sequence[str] = ()) -> ShardingRules:
    try:
        rules = RULE_TABLES[name]
    except KeyError:
        raise RulesError(f"mesh.rules: unknown rules table {name!r}; choose one of {sorted(RULE_TABLES)}") from None
    return rules.with_overrides(overrides) if overrides else rules


def resolve_spec(logical: Sequence[str | None], shape: Sequence[int], lookup, mesh_shape: Mapping[str, int]
                 ) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dims carry `logical` names.

    lookup(name) -> mesh axes. Size-1 axes, axes already used, and axes that do not divide the
    dimension are dropped (that dimension is then less sharded, never wrong).
    """
    used: set[str] = set()
    entries = []
    for name, dim in zip(logical, shape):
        axes = [a for a in lookup(name) if mesh_shape.get(a, 1) > 1 and a not in used]
        while axes and dim % math.prod(mesh_shape[a] for a in axes):
            axes.pop()
        used.update(axes)
        entries.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)
