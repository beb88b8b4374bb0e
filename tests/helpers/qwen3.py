"""Small Qwen3 pairs for the decoder tests: a Flax config, the transformers PyTorch model with the
same shapes and random weights (f32, eager attention, built offline), and its weights in Flax.

Shared by tests/models/test_qwen3_parity.py and tests/decode/test_generate.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from funasr_jax.io.names import params_from_state_dict
from funasr_jax.models.config import LoraConfig, Qwen3Config
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

jax.config.update("jax_default_matmul_precision", "highest")


def make_cfg(tie: bool, theta: float, head_dim: int, lora: LoraConfig | None = None) -> Qwen3Config:
    """V=97, D=64, FFN 128, 3 layers, 4 query / 2 kv heads of `head_dim`; `lora` default: none."""
    return Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                       rope_theta=theta, rms_norm_eps=1e-6, tie_word_embeddings=tie,
                       max_position_embeddings=256, lora=lora or LoraConfig())


def make_hf(cfg: Qwen3Config, seed: int = 0) -> transformers.Qwen3ForCausalLM:
    """transformers.Qwen3ForCausalLM of `cfg`'s shapes, eval mode, weights from torch seed `seed`."""
    hc = transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
        max_position_embeddings=cfg.max_position_embeddings, attn_implementation="eager")
    torch.manual_seed(seed)
    m = transformers.Qwen3ForCausalLM(hc).eval()
    # Larger-than-default random weights and non-unit norm gains so every part matters.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    assert m.config.rope_parameters["rope_theta"] == cfg.rope_theta
    assert (m.lm_head.weight is m.model.embed_tokens.weight) == cfg.tie_word_embeddings
    return m


def to_flax(model: Qwen3ForCausalLM, sd, cfg: Qwen3Config):
    """Torch state dict -> Flax params of `model` (renaming only, via `params_from_state_dict`)."""
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, cfg.hidden_size))))
    ignore = ("lm_head.",) if cfg.tie_word_embeddings else ()
    params, _ = params_from_state_dict(sd, template, ignore=ignore, source="HF Qwen3")
    return jax.tree_util.tree_map(jnp.asarray, params)


def make_pair(tie: bool, theta: float, head_dim: int, seed: int = 0):
    """(hf model, Qwen3ForCausalLM, its params with hf's weights) for `make_cfg(tie, theta, head_dim)`."""
    cfg = make_cfg(tie, theta, head_dim)
    hf = make_hf(cfg, seed)
    model = Qwen3ForCausalLM(cfg)
    return hf, model, to_flax(model, hf.state_dict(), cfg)


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
