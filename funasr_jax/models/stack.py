"""`LayerStack`: a stack of identical layers, per-layer (unrolled) or stacked at rest (scanned).

Two parameter layouts of the same stack (the SAN-M encoder's `encoders0`, `encoders`,
`tp_encoders`, the adaptor / CTC decoder's `blocks`, Qwen3's `model/layers`):

* **per-layer** (`scan=False`): children named "0", "1", ... — PyTorch's `<stack>.{i}.*`, e.g.
  `llm/model/layers/3/self_attn/q_proj/kernel` [D, H]. The layers run unrolled.
* **stacked** (`scan=True`, `model.scan_layers`): one child named `STACKED` whose every leaf has
  a leading layer axis, e.g. `llm/model/layers/stacked/self_attn/q_proj/kernel` [L, D, H]; its
  logical axis is `layers` (`funasr_jax.models.axes`). The forward is one `nn.scan` over that
  axis with the layer's remat inside it (`prevent_cse=False`, as scanning allows), so one layer
  is traced and compiled, and the train state, the optimizer state and the checkpoints hold one
  array per tensor kind instead of one per layer. Layer i of the stacked tree is exactly layer
  "i" of the per-layer tree (`unstack_layers` / `to_layout` convert, bit-exact).

Per-layer names exist only where parameters cross into PyTorch's world (`funasr_jax.io`:
from-torch, to-torch, from-hf; `init_from` a per-layer checkpoint): those paths call
`unstack_layers` / `to_layout`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.models.remat import remat_layer, static_argnums_of
from sharding.context import constrain
from sharding.paths import flatten, unflatten

ACTIVATION_AXES = ("batch", "length", "embed")  # logical axes of h [B, T, D] between layers
STACKED = "stacked"  # the child of a stack whose leaves are [L, ...] (the scanned layout)
LAYER_AXIS = "layers"  # logical name of the leading axis of a stacked leaf


class LayoutError(ValueError):
    """A parameter tree cannot be converted between the per-layer and the stacked layout; names
    the tensor (missing layers, unequal layer shapes, unexpected layer indices)."""


class LayerStack(nn.Module):
    """Applies `len(layer_args)` layers in order.

    layer_cls: the plain layer class (an nn.Module); `remat` wraps it here, per layer.
    layer_args: one tuple of constructor arguments per layer (its length is the layer count L);
      with `scan` they must all be equal.
    collect: each layer returns (h, extra); the stack then returns (h, tuple of the L extras)
      (the Qwen3 per-layer KV cache). Otherwise each layer returns h and so does the stack.
    scan: parameters stacked at rest under `STACKED` ([L, ...] leaves) and the layers run as one
      `nn.scan`; else children "0", "1", ... run unrolled (see the module docstring). A stack of
      one layer (the encoder's `encoders0`) stays per-layer: there is nothing to scan.
    remat: False / "none", True / "block" or a `funasr_jax.models.remat` policy name, applied to
      each layer (inside the scan with prevent_cse=False).
    static_argnames: the layer's `__call__` parameters that are Python values ("deterministic").

    __call__(h [B, T, D], *args, per_layer=None): layer i is called as
      layer(h, per_layer[i], *args) when `per_layer` (a sequence with one entry per layer, e.g.
      the KV cache) is given, else layer(h, *args). After every layer h is constrained to
      ("batch", "length", "embed") (`sharding.context.constrain`, a no-op outside a mesh).
      Stacked with per-layer inputs (decoding with a KV cache), the layers run one by one on
      static slices of the stacked params (loop-invariant in a decode loop) rather than
      stacking the cache for a scan; callers see the same results either way. With dropout, each
      scanned layer gets its own key (`split_rngs`; a different stream than the unrolled stack's).
    """

    layer_cls: Any
    layer_args: tuple[tuple, ...]
    collect: bool = False
    scan: bool = False
    remat: bool | str = False
    static_argnames: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, h, *args, per_layer: Sequence | None = None):
        n = len(self.layer_args)
        if per_layer is not None and len(per_layer) != n:
            raise ValueError(f"LayerStack {self.name}: per_layer has {len(per_layer)} entries for {n} layers")
        if self.scan and n > 1:
            has_entry = per_layer is not None and len(jax.tree_util.tree_leaves(per_layer)) > 0
            if has_entry and not self.is_initializing() and STACKED in self.variables.get("params", {}):
                return self._sliced(h, args, per_layer)
            return self._scanned(h, args, per_layer)
        layer_cls = remat_layer(self.layer_cls, self.remat, static_argnames=self.static_argnames)
        extras = []
        for i, ctor_args in enumerate(self.layer_args):
            layer = layer_cls(*ctor_args, name=str(i))
            out = layer(h, *args) if per_layer is None else layer(h, per_layer[i], *args)
            if self.collect:
                out, extra = out
                extras.append(extra)
            h = constrain(out, ACTIVATION_AXES)
        return (h, tuple(extras)) if self.collect else h

    def _scanned(self, h, args, per_layer):
        n = len(self.layer_args)
        if any(a != self.layer_args[0] for a in self.layer_args):
            raise ValueError(f"LayerStack {self.name}: scan needs identical layers; constructor arguments differ")
        has_entry = per_layer is not None and len(jax.tree_util.tree_leaves(per_layer)) > 0
        body = _scan_body(self.layer_cls, self.collect, per_layer is not None)
        # the layer's static arguments shift by one in the body's signature (h, entry, *args)
        static = tuple(i + 1 for i in static_argnums_of(self.layer_cls, self.static_argnames))
        body = remat_layer(body, self.remat, static_argnums=static, prevent_cse=False)
        scanned = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                          in_axes=(0,) + (nn.broadcast,) * len(args), length=n,
                          metadata_params={nn.PARTITION_NAME: LAYER_AXIS})
        xs = jax.tree.map(lambda *v: jnp.stack(v), *per_layer) if has_entry else None
        h, extras = scanned(*self.layer_args[0], name=STACKED)(h, xs, *args)
        if not self.collect:
            return h
        if not has_entry:
            return h, (None,) * n
        return h, tuple(jax.tree.map(lambda x, i=i: x[i], extras) for i in range(n))


    def _sliced(self, h, args, per_layer):
        """Stacked params, per-layer inputs (the KV cache while decoding): the layers run one after
        another on static slices of the stacked params. Inside a decode loop those slices are loop
        invariant (XLA hoists them), whereas scanning would stack and unstack the whole cache at
        every step."""
        layer = self.layer_cls(*self.layer_args[0], parent=None)  # unbound: applied to each slice
        stacked = self.variables["params"][STACKED]
        keys = jax.random.split(self.make_rng("dropout"), len(self.layer_args)) if self.has_rng("dropout") else None
        extras = []
        for i, entry in enumerate(per_layer):
            params = jax.tree.map(lambda x, i=i: x[i], stacked)
            out = layer.apply({"params": params}, h, entry, *args,
                              rngs={} if keys is None else {"dropout": keys[i]})
            if self.collect:
                out, extra = out
                extras.append(extra)
            h = constrain(out, ACTIVATION_AXES)
        return (h, tuple(extras)) if self.collect else h


def _scan_body(layer_cls, collect: bool, takes_entry: bool):
    """`layer_cls` with the scan body's signature: (h, entry, *args) -> (h, extra); the layer
    gets `entry` (its slice of the stacked per-layer inputs, or None) only if `takes_entry`."""

    class ScanBody(layer_cls):
        def __call__(self, h, entry, *args):
            out = super().__call__(h, entry, *args) if takes_entry else super().__call__(h, *args)
            if collect:
                out, extra = out
                return constrain(out, ACTIVATION_AXES), extra
            return constrain(out, ACTIVATION_AXES), None

    ScanBody.__name__ = ScanBody.__qualname__ = layer_cls.__name__
    return ScanBody


# ----------------------------------------------------------------------------- layouts


def _is_abstract(x) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def _stack(values):
    if all(_is_abstract(v) for v in values):
        v = values[0]
        return jax.ShapeDtypeStruct((len(values),) + tuple(v.shape), v.dtype)
    if any(isinstance(v, jax.Array) for v in values):
        return jnp.stack([jnp.asarray(v) for v in values])
    return np.stack([np.asarray(v) for v in values])


def _layer(x, i: int):
    if _is_abstract(x):
        return jax.ShapeDtypeStruct(tuple(x.shape[1:]), x.dtype)
    return x[i]


def _is_stacked_node(node) -> bool:
    return isinstance(node, Mapping) and STACKED in node


def layer_count(stacked_node: Mapping, where: str = "") -> int:
    """L of a stacked subtree ({STACKED: {...}}): the common leading dim of its leaves."""
    dims = {path: np.shape(v)[0] if not _is_abstract(v) else v.shape[0]
            for path, v in flatten(stacked_node[STACKED]).items()}
    if len(set(dims.values())) != 1:
        raise LayoutError(f"{where}/{STACKED}: leaves disagree on the layer count: "
                          + ", ".join(f"{'/'.join(p)} {d}" for p, d in sorted(dims.items())))
    return next(iter(dims.values()))


def unstack_layers(tree, where: str = ""):
    """Every stacked subtree ({STACKED: leaves [L, ...]}) of `tree` -> per-layer children "0" ..
    "L-1" (leaves [...]). Leaves: numpy / jax arrays (sliced exactly) or ShapeDtypeStructs.
    Trees without stacked parts come back as they are (dicts copied)."""
    if not isinstance(tree, Mapping):
        return tree
    if _is_stacked_node(tree):
        if set(tree) != {STACKED}:
            raise LayoutError(f"{where}: a stacked stack holds {STACKED!r} and nothing else, got {sorted(tree)}")
        n = layer_count(tree, where)
        inner = unstack_layers(tree[STACKED], f"{where}/{STACKED}")  # (a stack nested in a layer)
        return {str(i): jax.tree.map(lambda x, i=i: _layer(x, i), inner,
                                     is_leaf=_is_abstract) for i in range(n)}
    return {k: unstack_layers(v, f"{where}/{k}" if where else str(k)) for k, v in tree.items()}


def is_stacked(tree) -> bool:
    """True when some part of `tree` is in the stacked layout."""
    if not isinstance(tree, Mapping):
        return False
    return _is_stacked_node(tree) or any(is_stacked(v) for v in tree.values())


def to_layout(tree, like, where: str = ""):
    """`tree` converted to the layout of `like` (a params tree or its ShapeDtypeStructs): where
    `like` has a stacked stack and `tree` per-layer children "0" .. "L-1", those are stacked
    (per leaf; bit-exact); where `like` is per-layer and `tree` stacked, it is unstacked. Parts
    of `tree` absent from `like` are kept as they are, parts absent from `tree` stay absent (a
    partial tree — `init_from`, a checkpoint missing its CTC branch — converts as far as it goes).

    Raises LayoutError naming the tensor when a leaf is present for some layers but not all, when
    `tree` has layer indices at or past L, or when the layers' shapes differ.
    """
    if not isinstance(tree, Mapping) or not isinstance(like, Mapping):
        return tree
    if _is_stacked_node(like):
        if _is_stacked_node(tree):
            return {STACKED: to_layout(tree[STACKED], like[STACKED], f"{where}/{STACKED}")}
        if not tree:
            return {}
        return {STACKED: _stack_children(tree, like, where)}
    if _is_stacked_node(tree):
        return to_layout(unstack_layers(tree, where), like, where)
    return {k: (to_layout(v, like[k], f"{where}/{k}" if where else str(k)) if k in like else v)
            for k, v in tree.items()}


def _stack_children(tree: Mapping, like: Mapping, where: str) -> dict:
    n = layer_count(like, where)
    bad = [k for k in tree if not (str(k).isdigit() and int(k) < n)]
    if bad:
        raise LayoutError(f"{where}: the model stacks {n} layers here; the tree has children {sorted(bad)} "
                          f"(expected layer indices 0..{n - 1})")
    inner_like = like[STACKED]
    # a stack nested inside the layer: bring each layer to the per-layer form first
    layers = [flatten(to_layout(tree[str(i)], unstack_layers({STACKED: inner_like})["0"], f"{where}/{i}"))
              if str(i) in tree else {} for i in range(n)]
    out = {}
    for path in flatten(unstack_layers({STACKED: inner_like})["0"]):
        have = [i for i in range(n) if path in layers[i]]
        if not have:
            continue
        name = "/".join(path)
        if len(have) != n:
            lost = [i for i in range(n) if i not in have]
            raise LayoutError(f"{where}/{{i}}/{name}: missing for layers {lost} (present for {have}); a stacked "
                              f"tensor needs all {n}")
        shapes = {tuple(np.shape(layers[i][path]) if not _is_abstract(layers[i][path]) else layers[i][path].shape)
                  for i in range(n)}
        if len(shapes) != 1:
            raise LayoutError(f"{where}/{{i}}/{name}: layers have different shapes {sorted(shapes)}")
        out[path] = _stack([layers[i][path] for i in range(n)])
    return unflatten(out)


def stacked_depth(path) -> int:
    """How many stacked layer axes lead a leaf at `path` (a '/'-joined string or a tuple of key
    names): the number of `STACKED` components in it."""
    parts = path.split("/") if isinstance(path, str) else [str(p) for p in path]
    return sum(p == STACKED for p in parts)
