"""Activation sharding constraints that are no-ops unless a mesh + rules context is active.

Models call `constrain(x, ("batch", "length", "embed"))` at block outputs; the trainer traces
its step inside `activation_sharding(mesh, rules)`. Outside that context (tests, decoding,
single-device runs) `constrain` returns `x` untouched, so model code never depends on a mesh.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
from jax.sharding import NamedSharding

from sharding.mesh import mesh_sizes
from sharding.rules import ShardingRules, resolve_spec

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("funasr_jax_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh, rules: ShardingRules):
    """Within this block (at trace time), `constrain` applies `rules.activations` on `mesh`."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active():
    """(mesh, rules) or None."""
    return _ACTIVE.get()


def constrain(x, logical: tuple[str | None, ...]):
    """`with_sharding_constraint(x, rules(logical))` under an active context, else `x`.

    logical: one name per dimension of x, e.g. ("batch", "length", "vocab").
    """
    ctx = _ACTIVE.get()
    if ctx is None:
        return x
    mesh, rules = ctx
    sizes = mesh_sizes(mesh)
    if all(s == 1 for s in sizes.values()):
        return x
    if len(logical) != x.ndim:
        raise ValueError(f"constrain: {len(logical)} logical axes {logical} for an array of shape {x.shape}")
    spec = resolve_spec(logical, x.shape, rules.activation_axes, sizes)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
