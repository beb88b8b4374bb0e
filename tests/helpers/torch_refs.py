"""PyTorch reference builders for the audio-side parity tests (FunASR classes, random weights).

Shared by tests/models/test_encoder_parity.py and tests/models/test_adaptor_parity.py. Everything is float32,
eval mode, built offline.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import torch

from funasr_jax.io.names import params_from_state_dict

jax.config.update("jax_default_matmul_precision", "highest")


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter random values; LayerNorm gains/biases too (torch inits them 1/0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif "norm" in name:
                p.copy_(0.2 * noise)
            else:
                fan_in = p.shape[-1] if p.ndim > 1 else 16
                if p.ndim == 3:  # depthwise conv [D, 1, K]
                    fan_in = p.shape[-1]
                p.copy_(noise / np.sqrt(fan_in))
    return module.float().eval()


def sense_voice_encoder(input_size, output_size=64, attention_heads=4, linear_units=128, num_blocks=3,
                        tp_blocks=2, kernel_size=11, sanm_shfit=0, seed=0):
    from funasr.models.sense_voice.model import SenseVoiceEncoderSmall

    torch.manual_seed(seed)
    enc = SenseVoiceEncoderSmall(
        input_size=input_size, output_size=output_size, attention_heads=attention_heads,
        linear_units=linear_units, num_blocks=num_blocks, tp_blocks=tp_blocks,
        dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
        kernel_size=kernel_size, sanm_shfit=sanm_shfit,
    )
    return randomize_(enc, seed)


def llm_asr_transformer(downsample_rate, encoder_dim, llm_dim, ffn_dim, n_layer, attention_heads, seed=0):
    from funasr.models.llm_asr.adaptor import Transformer

    torch.manual_seed(seed)
    m = Transformer(downsample_rate=downsample_rate, encoder_dim=encoder_dim, llm_dim=llm_dim,
                    ffn_dim=ffn_dim, n_layer=n_layer, attention_heads=attention_heads)
    return randomize_(m, seed)


def state_dict_np(module: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def flax_params(model, state_dict, *init_args, prefix: str = ""):
    """Template from jax.eval_shape(model.init) and the torch weights moved in by name."""
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), *init_args)["params"]
    params, _ = params_from_state_dict(state_dict, template, prefix=prefix)
    return jax.tree_util.tree_map(jnp.asarray, params)


def padded_batch(lengths, t, dim, seed=0, scale=1.0):
    """Random [B, T, dim] float32 features, zero past each length (as a collator pads)."""
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((len(lengths), t, dim))).astype(np.float32)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x


def max_err_on_valid(got, ref, lengths):
    """(max |got - ref| over rows < length, max |ref| there)."""
    got, ref = np.asarray(got), np.asarray(ref)
    err, mag = 0.0, 0.0
    for b, n in enumerate(np.asarray(lengths)):
        err = max(err, float(np.max(np.abs(got[b, :n] - ref[b, :n]))))
        mag = max(mag, float(np.max(np.abs(ref[b, :n]))))
    return err, mag


def assert_close_valid(got, ref, lengths, what: str, rel: float = 1e-4) -> float:
    err, mag = max_err_on_valid(got, ref, lengths)
    tol = rel * max(1.0, mag)
    print(f"{what}: max|d| = {err:.3e}  (max|ref| = {mag:.3e}, tol = {tol:.3e})")
    assert np.isfinite(err) and err <= tol, f"{what}: max |delta| {err:.3e} > tol {tol:.3e} (max|ref| {mag:.3e})"
    return err


def transformer_decoder(vocab_size, size, attention_heads=4, linear_units=64, num_blocks=2, seed=0):
    """FunASR's AED `TransformerDecoder` (pre-LN), random weights, dropout off."""
    from funasr.models.transformer.decoder import TransformerDecoder

    torch.manual_seed(seed)
    dec = TransformerDecoder(vocab_size=vocab_size, encoder_output_size=size, attention_heads=attention_heads,
                             linear_units=linear_units, num_blocks=num_blocks, dropout_rate=0.0,
                             positional_dropout_rate=0.0, self_attention_dropout_rate=0.0,
                             src_attention_dropout_rate=0.0)
    return randomize_(dec, seed)
