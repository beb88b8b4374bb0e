"""`LayerStack`: a torch-ModuleList-like container of layers named "0", "1", ...

Used by the SAN-M encoder (`encoders0/{i}`, `encoders/{i}`, `tp_encoders/{i}`), the adaptor
(`blocks/{i}`) and Qwen3 (`model/layers/{i}`), so parameter paths match PyTorch's `<stack>.{i}.*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn

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
    """

    layer_cls: Any
    layer_args: tuple[tuple, ...]
    collect: bool = False

    @nn.compact
    def __call__(self, h, *args, per_layer: Sequence | None = None):
        if per_layer is not None and len(per_layer) != len(self.layer_args):
            raise ValueError(f"LayerStack: per_layer has {len(per_layer)} entries for {len(self.layer_args)} layers")
        extras = []
        for i, ctor_args in enumerate(self.layer_args):
            layer = self.layer_cls(*ctor_args, name=str(i))
            out = layer(h, *args) if per_layer is None else layer(h, per_layer[i], *args)
            if self.collect:
                out, extra = out
                extras.append(extra)
            h = constrain(out, ACTIVATION_AXES)
        return (h, tuple(extras)) if self.collect else h
