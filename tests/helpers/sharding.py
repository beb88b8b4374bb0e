"""Shared helpers for the sharding / planner / multi-host tests: a slim tiny config, abstract
meshes and an independent numpy parameter init."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AbstractMesh

from train.main import load_config

# Slim tiny model: tiny widths, fewer blocks (compiles in seconds on CPU).
SLIM = ["model.encoder.num_blocks=2", "model.encoder.tp_blocks=1", "model.adaptor.n_layer=1",
        "model.llm.num_hidden_layers=1", "model.ctc.decoder.n_layer=1", "stage.ctc_weight=0.5",
        "optim.warmup_steps=0", "optim.schedule=constant",
        "model.llm.vocab_size=1664"]  # the demo tokenizer's 1600, padded to a multiple of 128


def slim_cfg(extra=()):
    return load_config("sft4.py", "tiny", SLIM + list(extra))


def abstract_mesh(data=1, fsdp=1, tensor=1):
    return AbstractMesh((data, fsdp, tensor), ("data", "fsdp", "tensor"))


def host_params(abstract, seed=0):
    """Independent numpy init (kernels ~ N(0, 1/fan_in), scales 1, biases 0, lora_B small)."""
    rng = np.random.default_rng(seed)

    def one(path, x):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("scale"):
            return np.ones(x.shape, np.float32)
        if name.endswith("bias"):
            return np.zeros(x.shape, np.float32)
        std = 0.02 if name.endswith("embedding") else 1.0 / np.sqrt(max(1, int(np.prod(x.shape[:-1]))))
        if "lora_B" in name:
            std = 0.01  # non-zero so the LoRA path carries gradient into lora_A
        return (rng.standard_normal(x.shape) * std).astype(np.float32)

    return jax.tree_util.tree_map_with_path(one, abstract)
