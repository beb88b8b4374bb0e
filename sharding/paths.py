"""Pytree key paths as names: the one helper every layer uses to name a parameter.

A parameter path is the '/'-joined key path of a nested params dict (`llm/model/layers/5/
self_attn/q_proj/kernel`); checkpoint I/O flattens the same trees to tuples of strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def key_name(k) -> str:
    """One component of a jax key path (DictKey / GetAttrKey / SequenceKey) or a plain key, as a string."""
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_str(path) -> str:
    """A jax key path, a tuple of keys, or an already joined string -> 'a/b/c'."""
    if isinstance(path, str):
        return path
    return "/".join(key_name(k) for k in path)


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> {path tuple of strings: leaf}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """Inverse of `flatten`."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return out
