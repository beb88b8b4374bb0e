"""SenseVoiceEncoderSmall (Flax) vs FunASR's PyTorch class with random weights, f32, padded batch.

Weights travel through `funasr_jax.io.names.params_from_state_dict`, so these tests also prove the
naming contract for the encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")

from funasr_jax.io.names import CheckpointMismatchError, params_from_state_dict
from funasr_jax.models.config import EncoderConfig
from funasr_jax.models.encoder import ModelInputError, SenseVoiceEncoderSmall, sinusoidal_position_encoding
from helpers.torch_refs import (
    assert_close_valid,
    flax_params,
    padded_batch,
    sense_voice_encoder,
    state_dict_np,
)

LENGTHS = [13, 9, 4]
T = 13


def _run_both(input_size, kernel_size, shift, remat=False, deterministic=True, seed=0):
    ref = sense_voice_encoder(input_size, output_size=64, attention_heads=4, linear_units=128, num_blocks=3,
                              tp_blocks=2, kernel_size=kernel_size, sanm_shfit=shift, seed=seed)
    cfg = EncoderConfig(input_size=input_size, output_size=64, attention_heads=4, linear_units=128,
                        num_blocks=3, tp_blocks=2, kernel_size=kernel_size, sanm_shift=shift)
    model = SenseVoiceEncoderSmall(cfg, remat=remat)
    x = padded_batch(LENGTHS, T, input_size, seed=seed)
    lens = np.asarray(LENGTHS, np.int32)
    params = flax_params(model, state_dict_np(ref), x, lens)
    with torch.no_grad():
        # forward multiplies its input in place: hand it a copy.
        ref_out, ref_lens = ref(torch.from_numpy(x.copy()), torch.from_numpy(lens).long())
    apply = jax.jit(lambda p, a, l: model.apply({"params": p}, a, l, deterministic=deterministic))
    out, out_lens = apply(params, jnp.asarray(x), jnp.asarray(lens))
    assert out.shape == (3, T, 64) and out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out_lens), ref_lens.numpy())
    return out, ref_out.numpy(), params


@pytest.mark.parametrize("input_size,kernel_size,shift", [(560, 11, 0), (96, 5, 1)])
def test_encoder_matches_funasr(input_size, kernel_size, shift):
    out, ref, params = _run_both(input_size, kernel_size, shift)
    assert_close_valid(out, ref, LENGTHS, f"encoder in={input_size} K={kernel_size} shift={shift}")
    # Structure: encoders0 has one 560->64 layer, encoders num_blocks-1, tp_encoders tp_blocks.
    assert set(params["encoders0"]) == {"0"} and set(params["encoders"]) == {"0", "1"}
    assert set(params["tp_encoders"]) == {"0", "1"}
    assert params["encoders0"]["0"]["self_attn"]["linear_q_k_v"]["kernel"].shape == (input_size, 192)
    assert params["encoders"]["1"]["self_attn"]["fsmn_block"]["kernel"].shape == (kernel_size, 1, 64)


def test_encoder_remat_train_mode_matches_funasr():
    # remat=True and deterministic=False (dropout rates are 0) must not change the numbers.
    out, ref, _ = _run_both(96, 11, 0, remat=True, deterministic=False, seed=3)
    assert_close_valid(out, ref, LENGTHS, "encoder remat")


def test_encoder_gradients_flow():
    cfg = EncoderConfig(input_size=16, output_size=16, attention_heads=2, linear_units=32, num_blocks=2,
                        tp_blocks=1, kernel_size=3)
    model = SenseVoiceEncoderSmall(cfg, remat=True)
    x = jnp.asarray(padded_batch([5, 3], 5, 16))
    lens = jnp.asarray([5, 3])
    params = model.init(jax.random.PRNGKey(0), x, lens)["params"]
    # Brute-force check of the gradient of one FSMN tap by central differences.
    w = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 16)), jnp.float32)
    loss = lambda p: jnp.sum(model.apply({"params": p}, x, lens)[0] * w * (jnp.arange(5) < lens[:, None])[..., None])
    g = jax.grad(loss)(params)["encoders"]["0"]["self_attn"]["fsmn_block"]["kernel"]
    k = params["encoders"]["0"]["self_attn"]["fsmn_block"]["kernel"]
    eps = 1e-3
    def bump(s):
        p = jax.tree_util.tree_map(lambda v: v, params)  # fresh containers, shared leaves
        layer = p["encoders"]["0"]["self_attn"]["fsmn_block"]
        layer["kernel"] = layer["kernel"].at[1, 0, 2].add(s)
        return p

    fd = (loss(bump(eps)) - loss(bump(-eps))) / (2 * eps)
    assert k.shape == (3, 1, 16)
    assert abs(float(g[1, 0, 2])) > 1e-3  # the tap matters, so the comparison means something
    np.testing.assert_allclose(float(g[1, 0, 2]), float(fd), rtol=2e-2, atol=1e-4)


def test_position_encoding_brute_force():
    depth, n = 560, 7
    pe = np.asarray(sinusoidal_position_encoding(n, depth))
    half = depth // 2
    for p in range(1, n + 1):
        for i in (0, 1, 100, half - 1):
            ang = p * np.exp(-i * np.log(10000.0) / (half - 1))
            assert abs(pe[p - 1, i] - np.sin(ang)) < 1e-5
            assert abs(pe[p - 1, half + i] - np.cos(ang)) < 1e-5


def test_misshaped_tensor_raises_naming_key():
    ref = sense_voice_encoder(96, num_blocks=2, tp_blocks=1)
    cfg = EncoderConfig(input_size=96, output_size=64, attention_heads=4, linear_units=128, num_blocks=2,
                        tp_blocks=1)
    model = SenseVoiceEncoderSmall(cfg)
    x, lens = jnp.zeros((1, 4, 96)), jnp.asarray([4])
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, lens)["params"]
    sd = state_dict_np(ref, prefix="audio_encoder.")
    bad = "audio_encoder.encoders.0.self_attn.fsmn_block.weight"
    sd[bad] = np.zeros((64, 1, 7), np.float32)
    with pytest.raises(CheckpointMismatchError, match=bad.replace(".", r"\.")):
        params_from_state_dict(sd, template, prefix="audio_encoder.")
    del sd[bad]
    with pytest.raises(CheckpointMismatchError, match="missing.*" + bad.replace(".", r"\.")):
        params_from_state_dict(sd, template, prefix="audio_encoder.")


def test_bad_input_shape_is_named():
    cfg = EncoderConfig(input_size=96, output_size=64, attention_heads=4, linear_units=128, num_blocks=2,
                        tp_blocks=1)
    with pytest.raises(ModelInputError, match="input_size 96"):
        SenseVoiceEncoderSmall(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 80)), jnp.asarray([4]))


def test_encoder_bf16_compute_stays_close():
    # bf16 matmuls, f32 norms/softmax/FSMN: measured 3.2e-2 abs on max|ref| 3.9 (0.8 %).
    ref = sense_voice_encoder(560, seed=7)
    cfg = EncoderConfig(input_size=560, output_size=64, attention_heads=4, linear_units=128, num_blocks=3,
                        tp_blocks=2)
    model = SenseVoiceEncoderSmall(cfg, dtype=jnp.bfloat16)
    x = padded_batch(LENGTHS, T, 560, seed=7)
    lens = np.asarray(LENGTHS, np.int32)
    params = flax_params(model, state_dict_np(ref), x, lens)
    with torch.no_grad():
        ref_out, _ = ref(torch.from_numpy(x.copy()), torch.from_numpy(lens).long())
    out, _ = model.apply({"params": params}, x, lens)
    assert out.dtype == jnp.float32
    assert jax.tree_util.tree_leaves(params)[0].dtype == jnp.float32
    assert_close_valid(out, ref_out.numpy(), LENGTHS, "encoder bf16 compute", rel=2e-2)
