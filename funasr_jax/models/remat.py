"""Rematerialisation (activation checkpointing) policies per block type.

`FunASRConfig.remat` grammar:
    "none"                       no remat anywhere
    "block"                      jax.checkpoint around every transformer block, saving only
                                 the block inputs (the original behaviour)
    "<policy>"                   every block with a named jax.checkpoint_policies policy:
                                 dots_saveable, dots_with_no_batch_dims_saveable,
                                 nothing_saveable (= block), everything_saveable
    "encoder:block,llm:dots_saveable"
                                 per block type (encoder, adaptor, llm, ctc); parts not named
                                 get "none"
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax

COMPONENTS = ("encoder", "adaptor", "llm", "ctc")

POLICIES = {
    "block": None,
    "nothing_saveable": "nothing_saveable",
    "dots_saveable": "dots_saveable",
    "dots_with_no_batch_dims_saveable": "dots_with_no_batch_dims_saveable",
    "everything_saveable": "everything_saveable",
}


class RematConfigError(ValueError):
    """model.remat does not follow the grammar; the message names the bad part."""


def _check_value(v: str, spec: str) -> str:
    if v != "none" and v not in POLICIES:
        raise RematConfigError(f"model.remat {spec!r}: unknown policy {v!r}; use 'none' or one of {sorted(POLICIES)}")
    return v


def parse_remat(spec) -> dict[str, str]:
    """model.remat -> {component: 'none' | policy name}. Also accepts a bool (True = 'block')."""
    if isinstance(spec, bool):
        spec = "block" if spec else "none"
    spec = (spec or "none").strip()
    if ":" not in spec:
        v = _check_value(spec, spec)
        return {c: v for c in COMPONENTS}
    out = {c: "none" for c in COMPONENTS}
    for part in spec.split(","):
        comp, _, v = part.partition(":")
        comp = comp.strip()
        if comp not in COMPONENTS:
            raise RematConfigError(f"model.remat {spec!r}: unknown block type {comp!r}; use {COMPONENTS}")
        out[comp] = _check_value(v.strip(), spec)
    return out


def static_argnums_of(layer_cls, names) -> tuple[int, ...]:
    """Positions (self = 0, as `nn.remat` counts) of the `__call__` parameters called `names`."""
    params = list(inspect.signature(layer_cls.__call__).parameters)
    missing = [n for n in names if n not in params]
    if missing:
        raise RematConfigError(f"{layer_cls.__name__}.__call__ has no parameter(s) {missing}; it takes {params}")
    return tuple(params.index(n) for n in names)


def remat_layer(layer_cls, remat, static_argnames=(), *, static_argnums=None, prevent_cse: bool = True):
    """`layer_cls` wrapped in `nn.remat` as `remat` asks (False / None / 'none' -> unchanged).

    remat: bool or a policy name from POLICIES. static_argnames: `__call__` parameters that are
    Python values (e.g. "deterministic"); they are found by name in the signature and passed
    positionally (or give their positions, self = 0, as `static_argnums`). prevent_cse: False
    inside a scan (`funasr_jax.models.stack`), where the loop already keeps XLA from merging the
    recomputation into the forward, so the extra barriers would only cost. Array arguments, and pytrees whose static parts are non-pytree fields (the Qwen3
    `DecoderContext`), need no entry: jax.checkpoint keeps a pytree's treedef static.
    """
    if remat is False or remat is None or remat == "none":
        return layer_cls
    name = "block" if remat is True else remat
    if name not in POLICIES:
        raise RematConfigError(f"remat policy {name!r} is unknown; use one of {sorted(POLICIES)}")
    policy = None if POLICIES[name] is None else getattr(jax.checkpoint_policies, POLICIES[name])
    if static_argnums is None:
        static_argnums = static_argnums_of(layer_cls, static_argnames)
    return nn.remat(layer_cls, static_argnums=static_argnums, policy=policy, prevent_cse=prevent_cse)
