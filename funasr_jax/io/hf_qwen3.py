"""Hugging Face Qwen3 folders <-> our LLM part: `config.json` and `*.safetensors` weights.

Names convert through `funasr_jax.io.names` (rename + transpose); a tensor that is missing,
unexpected or mis-shaped is listed in one `CheckpointMismatchError`.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.io.names import CheckpointError, params_from_state_dict
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.qwen3 import Qwen3ForCausalLM


def qwen3_config_from_hf(cfg: dict, source="config.json") -> Qwen3Config:
    """Hugging Face Qwen3 `config.json` dict -> Qwen3Config."""
    try:
        rope = cfg.get("rope_theta")
        if rope is None:
            rope = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        heads = cfg["num_attention_heads"]
        return Qwen3Config(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, rope_theta=float(rope),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=cfg.get("max_position_embeddings", 40960),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: missing Qwen3 config field {e}") from None


def qwen3_config_to_hf(c: Qwen3Config) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
        "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tie_word_embeddings, "attention_bias": False,
        "max_position_embeddings": c.max_position_embeddings, "torch_dtype": "bfloat16", "use_cache": True,
        # Qwen3's special ids, only where the vocabulary has them (tiny test vocabularies do not)
        **({"bos_token_id": 151643, "eos_token_id": 151645} if c.vocab_size > 151645 else {}),
    }


def read_safetensors_dir(qwen_dir) -> dict:
    """All `*.safetensors` in a Hugging Face model folder -> {key: np.float32 array}."""
    from safetensors import safe_open

    files = sorted(Path(qwen_dir).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{qwen_dir}: no *.safetensors files")
    out = {}
    for f in files:
        with safe_open(str(f), framework="flax") as fh:
            for k in fh.keys():
                out[k] = np.asarray(fh.get_tensor(k).astype("float32"))
    return out


def llm_params_from_hf(qwen_dir, llm_cfg: Qwen3Config, *, scan_layers: bool = False):
    """HF Qwen3 safetensors -> our `llm` params (tied lm_head accepted); per-layer
    (`model/layers/{i}/...`), or stacked (`model/layers/stacked/...` [L, ...]) with `scan_layers`."""
    sd = read_safetensors_dir(qwen_dir)
    module = Qwen3ForCausalLM(llm_cfg, scan_layers=scan_layers)
    template = jax.eval_shape(
        lambda r: module.init(r, jnp.zeros((1, 4, llm_cfg.hidden_size)), method=module.__call__),
        jax.random.PRNGKey(0))["params"]
    # embed_tokens is only created when `embed` runs; take its shape from the config.
    template = dict(template)
    template.setdefault("model", {})
    ignore = ("lm_head.",) if llm_cfg.tie_word_embeddings else ()
    full = {"model": {**template["model"], "embed_tokens": {"embedding": jax.ShapeDtypeStruct(
        (llm_cfg.vocab_size, llm_cfg.hidden_size), jnp.float32)}}}
    if "lm_head" in template:
        full["lm_head"] = template["lm_head"]
    params, _ = params_from_state_dict(sd, full, ignore=ignore, source=str(qwen_dir))
    return params
