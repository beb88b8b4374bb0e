"""`LayerStack`: a torch-ModuleList-like container of layers named "0", "1", ...

Used by the SAN-M encoder (`encoders0/{i}`, `encoders/{i}`, `tp_encoders/{i}`), the adaptor
(`blocks/{i}`) and Qwen3 (`model/layers/{i}`), so parameter paths match PyTorch's `<stack>.{i}.*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sharding.context import constrain

ACTIVATION_AXES = ("batch", "length", "embed")  # logical axes of h [B, T, D] between layers


class LayerStack(nn.Module):
    """Applies `len(layer_args)` layers in order; child i is `layer_cls(*layer_args[i], name=str(i))`.

    layer_cls: an nn.Module class, possibly wrapped by `remat.remat_layer` (same constructor and
      call signature).
    layer_args: one tuple of constructor arguments per layer (its length is the layer count).
    collect: each layer returns (h, extra); the stack then returns (h, tuple of the `count` extras)
      (the Qwen3 per-layer KV cache). Otherwise each layer returns h and so does the stack.

    __call__(h [B, T, D], *args, per_layer=None): layer i is called as
      layer(h, per_layer[i], *args) when `per_layer` (a sequence with one entry per layer) is given,
      else layer(h, *args). After every layer h is constrained to ("batch", "length", "embed")
      (`sharding.context.constrain`, a no-op outside a mesh).

    scan: run the layers as one `jax.lax.scan` (`model.scan_layers`): one layer is traced and
      compiled instead of `count`. The parameters keep their per-layer names ("0", "1", ... —
      PyTorch's, so conversion, LoRA, freeze plans, sharding rules and remat are unchanged) and
      are stacked along a new leading axis at apply time; `per_layer` entries are stacked too and
      the extras unstacked, so callers see the unrolled stack's results. Initialisation, a single
      layer and layers whose constructor arguments differ run unrolled. With dropout each layer
      gets its own key split from the stack's (a different stream than the unrolled stack's).
    """

    layer_cls: Any
    layer_args: tuple[tuple, ...]
    collect: bool = False
    scan: bool = False

    @nn.compact
    def __call__(self, h, *args, per_layer: Sequence | None = None):
        if per_layer is not None and len(per_layer) != len(self.layer_args):
            raise ValueError(f"LayerStack: per_layer has {len(per_layer)} entries for {len(self.layer_args)} layers")
        if self.scan and self._scannable():
            return self._scanned(h, args, per_layer)
        extras = []
        for i, ctor_args in enumerate(self.layer_args):
            layer = self.layer_cls(*ctor_args, name=str(i))
            out = layer(h, *args) if per_layer is None else layer(h, per_layer[i], *args)
            if self.collect:
                out, extra = out
                extras.append(extra)
            h = constrain(out, ACTIVATION_AXES)
        return (h, tuple(extras)) if self.collect else h

    def _scannable(self) -> bool:
        n = len(self.layer_args)
        return (n > 1 and not self.is_initializing() and all(a == self.layer_args[0] for a in self.layer_args)
                and all(str(i) in self.variables.get("params", {}) for i in range(n)))

    def _scanned(self, h, args, per_layer):
        n = len(self.layer_args)
        layer = self.layer_cls(*self.layer_args[0], parent=None)   # unbound: applied to each slice
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                               *[{col: tree[str(i)] for col, tree in self.variables.items()} for i in range(n)])
        inputs = None if per_layer is None else jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
        keys = jax.random.split(self.make_rng("dropout"), n) if self.has_rng("dropout") else None

        def body(h, xs):
            variables, entry, key = xs
            rngs = {"dropout": key} if key is not None else {}
            call_args = args if per_layer is None else (entry, *args)
            out = layer.apply(variables, h, *call_args, rngs=rngs)
            extra = None
            if self.collect:
                out, extra = out
            return constrain(out, ACTIVATION_AXES), extra

        h, extras = jax.lax.scan(body, h, (stacked, inputs, keys))
        if not self.collect:
            return h
        return h, tuple(jax.tree.map(lambda x, i=i: x[i], extras) for i in range(n))
