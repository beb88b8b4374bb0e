"""LoRA for the LLM projections (FunASR's `llm_conf.lora_conf`) and pure helpers on parameter trees.

`LoRADense` is a drop-in for a bias-free `nn.Dense`: its base weight sits at `<proj>/kernel`
[in, out] exactly where `nn.Dense` puts it; with `rank > 0` it adds the adapters
`<proj>/lora_A/kernel` [in, r] and `<proj>/lora_B/kernel` [r, out], which the naming contract
(`funasr_jax.io.names`) maps to PyTorch/PEFT `<proj>.lora_A.weight` [r, in] and
`<proj>.lora_B.weight` [out, r]:

    y = x W + (alpha / r) * dropout(x) A B        (torch: W' = W + (alpha / r) B A)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from funasr_jax.models.config import LoraConfig
from sharding.paths import flatten, key_name

ADAPTER_NAMES = ("lora_A", "lora_B")

# PyTorch's nn.Linear / PEFT lora_A default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)).
kaiming_uniform_torch = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class LoRAConfigError(ValueError):
    """A LoRA config or parameter tree is inconsistent (names the offending field / path)."""


class LoRADense(nn.Module):
    """Bias-free dense layer x [..., in] -> [..., features], with an optional low-rank adapter.

    rank 0: exactly `nn.Dense(features, use_bias=False)` (one param, `kernel`).
    Matmul inputs are cast to `dtype`; params are stored in `param_dtype`.
    """

    features: int
    rank: int = 0
    alpha: float = 32.0
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    precision: Any = None

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if self.rank < 0:
            raise LoRAConfigError(f"LoRADense {self.name}: rank must be >= 0, got {self.rank}")
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype),
                       precision=self.precision)
        if self.rank > 0:
            h = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
            a = nn.Dense(self.rank, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                         kernel_init=kaiming_uniform_torch, precision=self.precision, name="lora_A")(h)
            b = nn.Dense(self.features, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                         kernel_init=nn.initializers.zeros, precision=self.precision, name="lora_B")(a)
            y = y + jnp.asarray(self.alpha / self.rank, self.dtype) * b
        return y


def lora_param_filter(path) -> bool:
    """True for LoRA adapter leaves.

    path: tuple of keys (strings) or a jax key path (from `jax.tree_util.tree_map_with_path`),
    or a '/'- or '.'-joined string. Used by the trainer's freeze masks.
    """
    if isinstance(path, str):
        parts = path.replace(".", "/").split("/")
    else:
        parts = [key_name(k) for k in path]
    return any(p in ADAPTER_NAMES for p in parts)


def _is_adapter_node(node: Mapping) -> bool:
    return isinstance(node, Mapping) and "kernel" in node and all(n in node for n in ADAPTER_NAMES)


def fold_lora(params: Mapping, cfg: LoraConfig) -> dict:
    """Merge every adapter into its base kernel: W' = W + (alpha / r) A B; adapters removed.

    params: nested dict (optionally under 'params'), per-layer or stacked (`[L, ...]` adapters of a
    scanned stack fold layer by layer); returns a new nested dict of the same kind and layout,
    usable with the model built with `LoraConfig(rank=0)`. The rank is read from each adapter's
    shape and must equal `cfg.rank`.
    """
    if cfg.rank <= 0:
        raise LoRAConfigError(f"fold_lora: LoraConfig.rank must be > 0 to fold, got {cfg.rank}")

    def walk(node, path):
        if _is_adapter_node(node):
            w = node["kernel"]
            a, b = node["lora_A"]["kernel"], node["lora_B"]["kernel"]
            if a.shape[-1] != cfg.rank or b.shape[-2] != cfg.rank:
                raise LoRAConfigError(
                    f"fold_lora: adapter at {'/'.join(path)} has rank {a.shape[-1]} (lora_A {a.shape}, "
                    f"lora_B {b.shape}) but LoraConfig.rank = {cfg.rank}")
            # [in, r] @ [r, out], or per layer [L, in, r] @ [L, r, out] for stacked layers
            delta = (cfg.alpha / cfg.rank) * (jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32))
            out = {k: v for k, v in node.items() if k not in ADAPTER_NAMES}
            out["kernel"] = (jnp.asarray(w, jnp.float32) + delta).astype(jnp.asarray(w).dtype)
            return out
        if isinstance(node, Mapping):
            for n in ADAPTER_NAMES:
                if n in node:
                    raise LoRAConfigError(f"fold_lora: {'/'.join(path + (n,))} has no partner adapter/kernel")
            return {k: walk(v, path + (str(k),)) for k, v in node.items()}
        return node

    return walk(params, ())


def split_lora(params: Mapping) -> tuple[dict, dict]:
    """(base, adapters): two disjoint nested dicts whose union is `params` (empty dicts dropped)."""

    def walk(node, path):
        base, ad = {}, {}
        for k, v in node.items():
            p = path + (str(k),)
            if isinstance(v, Mapping):
                b, a = walk(v, p)
                if b:
                    base[k] = b
                if a:
                    ad[k] = a
            elif lora_param_filter(p):
                ad[k] = v
            else:
                base[k] = v
        return base, ad

    return walk(params, ())


def merge_lora(base: Mapping, adapters: Mapping) -> dict:
    """Inverse of `split_lora`."""
    out = dict(base)
    for k, v in adapters.items():
        if isinstance(v, Mapping):
            out[k] = merge_lora(out.get(k, {}), v)
        else:
            out[k] = v
    return out


def count_adapter_params(params: Mapping) -> int:
    _, ad = split_lora(params)
    return int(sum(np.prod(np.shape(v)) for v in flatten(ad).values()))
