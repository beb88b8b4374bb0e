"""`funasr_jax.models.llm_init`: SAN-M encoder blocks initialised from Qwen3 layers.

Expectations are built here with numpy straight from the LLM tree (concatenations, transposes and
GQA head repeats written out independently), then compared bit-for-bit; every other encoder
tensor must be the input's, bit-equal.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.models.config import tiny_config
from funasr_jax.models.stack import STACKED, to_layout, unstack_layers
from sharding.paths import flatten
from funasr_jax.models.funasr import FunASRNano, abstract_params, init_params
from funasr_jax.models.llm_init import (encoder_block_paths, encoder_config_like_llm, funasr_config_like_llm,
                                        init_encoder_from_llm)

# Global encoder index -> block path in the tiny encoder (num_blocks 4, tp_blocks 2).
BLOCKS = ["encoders0/0", "encoders/0", "encoders/1", "encoders/2", "tp_encoders/0", "tp_encoders/1"]
MAP = {1: 2, 3: 0, 5: 3}   # encoders/0 <- layer 2, encoders/2 <- layer 0, tp_encoders/1 <- layer 3


def _flat(tree):
    return {"/".join(str(k.key) for k in path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _mha_cfg():
    """Tiny model whose LLM has kv heads = query heads and whose encoder blocks have its shapes."""
    base = tiny_config()
    return funasr_config_like_llm(base, dataclasses.replace(base.llm, num_key_value_heads=base.llm.num_attention_heads))


def _params(cfg, seed):
    """init_params, with every LLM leaf shifted by noise (RMSNorm and LayerNorm scales both
    initialise to ones, so an unperturbed copy could not be told from no copy)."""
    params = init_params(cfg, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree.flatten(params["llm"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 100), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return {**params, "llm": jax.tree.unflatten(tree, noisy)}


@pytest.fixture(scope="module")
def matched():
    cfg = _mha_cfg()
    return cfg, _params(cfg, 1)


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()   # GQA (4 q / 2 kv heads) and FFN 256 vs intermediate 384: does not fit
    return cfg, _params(cfg, 2)


def _expected(llm, enc, layer_map, kv=lambda w: w):
    """{encoder path: expected array} for the documented mapping, computed with numpy."""
    L, E = _flat(llm), _flat(enc)
    out = {}
    for e, l in layer_map.items():
        eb, lb = BLOCKS[e], f"model/layers/{l}"
        q, k, v = (L[f"{lb}/self_attn/{n}_proj/kernel"] for n in "qkv")
        out[f"{eb}/self_attn/linear_q_k_v/kernel"] = np.concatenate([q, kv(k), kv(v)], axis=1)
        out[f"{eb}/self_attn/linear_out/kernel"] = L[f"{lb}/self_attn/o_proj/kernel"]
        out[f"{eb}/feed_forward/w_1/kernel"] = L[f"{lb}/mlp/up_proj/kernel"]
        out[f"{eb}/feed_forward/w_2/kernel"] = L[f"{lb}/mlp/down_proj/kernel"]
        out[f"{eb}/norm1/scale"] = L[f"{lb}/input_layernorm/scale"]
        out[f"{eb}/norm2/scale"] = L[f"{lb}/post_attention_layernorm/scale"]
        for lin in ("self_attn/linear_q_k_v", "self_attn/linear_out", "feed_forward/w_1", "feed_forward/w_2",
                    "norm1", "norm2"):
            out[f"{eb}/{lin}/bias"] = np.zeros_like(E[f"{eb}/{lin}/bias"])
    return out


def _check(new, old, expected):
    N, O = _flat(new), _flat(old)
    assert N.keys() == O.keys()
    for p, x in N.items():
        want = expected.get(p, O[p])
        assert x.dtype == O[p].dtype and x.shape == O[p].shape, p
        assert np.array_equal(x, want), p
        if p in expected and not p.endswith("/bias"):
            assert not np.array_equal(x, O[p]), f"{p}: expected a copy that differs from the random init"


def test_block_order():
    assert encoder_block_paths(abstract_params(tiny_config())["audio_encoder"]) == BLOCKS


def test_documented_tensors_are_copied_bit_equal_and_the_rest_untouched(matched):
    _, params = matched
    enc, llm = params["audio_encoder"], params["llm"]
    before = _flat(enc)
    new, report = init_encoder_from_llm(enc, llm, MAP, encoder_heads=4)
    expected = _expected(llm, enc, MAP)
    _check(new, enc, expected)
    assert all(np.array_equal(x, before[p]) for p, x in _flat(enc).items()), "input params were modified"

    assert {p for p, _ in report.copied} == {p for p in expected if not p.endswith("/bias")}
    assert set(report.zeroed) == {p for p in expected if p.endswith("/bias")}
    assert ("encoders/0/self_attn/linear_out/kernel", "model/layers/2/self_attn/o_proj/kernel") in report.copied
    assert set(report.untouched) == set(_flat(enc)) - set(expected)
    assert {p for p, _, _ in report.skipped} == {f"{BLOCKS[e]}/self_attn/fsmn_block/kernel" for e in MAP}
    assert all("FSMN" in why for _, _, why in report.skipped)
    assert {f"model/layers/{l}/mlp/gate_proj/kernel" for l in MAP.values()} <= set(report.dropped)
    assert "3 skipped" in report.summary()


def test_sequence_of_pairs_is_the_same_map(matched):
    _, params = matched
    a, _ = init_encoder_from_llm(params["audio_encoder"], params["llm"], MAP)
    b, _ = init_encoder_from_llm(params["audio_encoder"], params["llm"], sorted(MAP.items()))
    assert all(np.array_equal(x, _flat(b)[p]) for p, x in _flat(a).items())


def test_initialised_encoder_runs_and_is_finite(matched):
    cfg, params = matched
    new, _ = init_encoder_from_llm(params["audio_encoder"], params["llm"], MAP)
    feats = jax.random.normal(jax.random.PRNGKey(3), (2, 20, cfg.encoder.input_size), jnp.float32)
    lengths = jnp.array([20, 13], jnp.int32)
    model = FunASRNano(cfg)
    out, out_len = model.apply({"params": {**params, "audio_encoder": new}}, feats, lengths, method="encode")
    ref, _ = model.apply({"params": params}, feats, lengths, method="encode")
    assert out.shape == (2, 20, cfg.encoder.output_size)
    assert np.all(np.isfinite(np.asarray(out)))
    assert np.array_equal(np.asarray(out_len), [20, 13])
    assert not np.allclose(np.asarray(out), np.asarray(ref)), "the copied weights did not change the output"


def test_first_block_takes_560_features_and_does_not_fit(matched):
    _, params = matched
    with pytest.raises(ValueError) as e:
        init_encoder_from_llm(params["audio_encoder"], params["llm"], {0: 0})
    msg = str(e.value)
    assert "encoders0/0/self_attn/linear_q_k_v/kernel" in msg and "model/layers/0/self_attn/q_proj/kernel" in msg
    assert "(560, 384)" in msg and "(128, 384)" in msg


def test_gqa_raises_naming_k_proj(tiny):
    _, params = tiny
    with pytest.raises(ValueError) as e:
        init_encoder_from_llm(params["audio_encoder"], params["llm"], {1: 0})
    msg = str(e.value)
    assert "encoders/0/self_attn/linear_q_k_v/kernel" in msg and "model/layers/0/self_attn/k_proj/kernel" in msg
    assert "(128, 384)" in msg and "(128, 64)" in msg and "GQA" in msg


def test_ffn_width_mismatch_raises_naming_both_tensors(tiny):
    _, params = tiny
    with pytest.raises(ValueError) as e:
        init_encoder_from_llm(params["audio_encoder"], params["llm"], {2: 1}, gqa="repeat")
    msg = str(e.value)
    assert "encoders/1/feed_forward/w_1/kernel" in msg and "model/layers/1/mlp/up_proj/kernel" in msg
    assert "(128, 256)" in msg and "(128, 384)" in msg


def test_non_strict_skips_and_reports(tiny):
    cfg, params = tiny
    enc, llm = params["audio_encoder"], params["llm"]
    new, report = init_encoder_from_llm(enc, llm, {2: 1}, strict=False)
    eb = "encoders/1"
    mismatched = {f"{eb}/self_attn/linear_q_k_v/kernel", f"{eb}/feed_forward/w_1/kernel",
                  f"{eb}/feed_forward/w_2/kernel"}
    expected = {p: x for p, x in _expected(llm, enc, {2: 1}, kv=lambda w: w).items()
                if p.rsplit("/", 1)[0] + "/kernel" not in mismatched}
    _check(new, enc, expected)
    assert mismatched <= {p for p, _, _ in report.skipped}
    assert {f"{eb}/self_attn/linear_q_k_v/bias", f"{eb}/feed_forward/w_1/bias"} <= set(report.untouched)
    why = dict((p, w) for p, _, w in report.skipped)[f"{eb}/feed_forward/w_2/kernel"]
    assert "model/layers/1/mlp/down_proj/kernel" in why and "(256, 128)" in why and "(384, 128)" in why


def test_gqa_repeat_matches_hf_repeat_kv(tiny):
    cfg, params = tiny
    hq, hkv, hd = cfg.llm.num_attention_heads, cfg.llm.num_key_value_heads, cfg.llm.head_dim
    g = hq // hkv

    def repeat_kv(w):   # query head h reads kv head h // g (transformers' repeat_kv)
        return np.concatenate([w[:, (h // g) * hd:(h // g + 1) * hd] for h in range(hq)], axis=1)

    enc, llm = params["audio_encoder"], params["llm"]
    new, report = init_encoder_from_llm(enc, llm, {4: 3}, strict=False, gqa="repeat")
    exp = _expected(llm, enc, {4: 3}, kv=repeat_kv)
    expected = {p: x for p, x in exp.items() if "feed_forward" not in p}   # FFN 256 != 384: skipped
    _check(new, enc, expected)
    assert any("repeat_kv" in src for p, src in report.copied if p.endswith("linear_q_k_v/kernel"))


def test_gqa_skip_copies_only_q(tiny):
    cfg, params = tiny
    enc, llm = params["audio_encoder"], params["llm"]
    new, report = init_encoder_from_llm(enc, llm, {1: 2}, strict=False, gqa="skip")
    f = cfg.encoder.output_size
    got = np.asarray(new["encoders"]["0"]["self_attn"]["linear_q_k_v"]["kernel"])
    old = np.asarray(enc["encoders"]["0"]["self_attn"]["linear_q_k_v"]["kernel"])
    q = np.asarray(llm["model"]["layers"]["2"]["self_attn"]["q_proj"]["kernel"])
    assert np.array_equal(got[:, :f], q) and np.array_equal(got[:, f:], old[:, f:])
    bias = np.asarray(new["encoders"]["0"]["self_attn"]["linear_q_k_v"]["bias"])
    old_bias = np.asarray(enc["encoders"]["0"]["self_attn"]["linear_q_k_v"]["bias"])
    assert np.array_equal(bias[:f], np.zeros(f)) and np.array_equal(bias[f:], old_bias[f:])
    assert f"encoders/0/self_attn/linear_q_k_v/kernel[:, {f}:]" in {p for p, _, _ in report.skipped}


@pytest.mark.parametrize("layer_map, words", [
    ({6: 0}, ["encoder block index 6", "6 blocks"]),
    ({-1: 0}, ["encoder block index -1", "6 blocks"]),
    ({1: 4}, ["LLM layer index 4", "4 layers"]),
])
def test_index_out_of_range_raises(tiny, layer_map, words):
    _, params = tiny
    with pytest.raises(IndexError) as e:
        init_encoder_from_llm(params["audio_encoder"], params["llm"], layer_map)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_head_dim_mismatch_raises(matched):
    _, params = matched
    with pytest.raises(ValueError, match="head_dim 128/2 != LLM head_dim 32"):
        init_encoder_from_llm(params["audio_encoder"], params["llm"], {1: 0}, encoder_heads=2)


def test_lora_adapters_and_stacked_trees_are_rejected(matched):
    _, params = matched
    enc, llm = params["audio_encoder"], params["llm"]
    lora = jax.tree.map(lambda x: x, dict(llm))
    layer = dict(lora["model"]["layers"]["0"])
    layer["self_attn"] = {**layer["self_attn"], "q_proj": {**layer["self_attn"]["q_proj"],
                                                           "lora_A": {"kernel": jnp.zeros((128, 2))}}}
    lora["model"] = {**lora["model"], "layers": {**lora["model"]["layers"], "0": layer}}
    with pytest.raises(ValueError, match="fold_lora"):
        init_encoder_from_llm(enc, lora, {1: 0})
    odd = {**enc, "encoders": {"layers": enc["encoders"]["0"]}}
    with pytest.raises(ValueError, match="expected per-layer children '0', '1', ... .*got keys \\['layers'\\]"):
        init_encoder_from_llm(odd, llm, {1: 0})
    with pytest.raises(ValueError, match="gqa"):
        init_encoder_from_llm(enc, llm, {1: 0}, gqa="mean")
    with pytest.raises(ValueError, match="mapped twice"):
        init_encoder_from_llm(enc, llm, [(1, 0), (1, 2)])


def test_stacked_trees_give_the_per_layer_result(matched):
    """Encoder and LLM stacked at rest (`scan_layers`): the same copy as per-layer, returned stacked."""
    cfg, params = matched
    st = to_layout(params, abstract_params(cfg.replace(scan_layers=True)))
    assert STACKED in st["audio_encoder"]["encoders"] and STACKED in st["llm"]["model"]["layers"]
    enc_p, rep_p = init_encoder_from_llm(params["audio_encoder"], params["llm"], {1: 0, 2: 1, 4: 3})
    enc_s, rep_s = init_encoder_from_llm(st["audio_encoder"], st["llm"], {1: 0, 2: 1, 4: 3})
    assert STACKED in enc_s["encoders"] and rep_s.copied == rep_p.copied and rep_p.copied
    flat_p, flat_s = flatten(enc_p), flatten(unstack_layers(enc_s))
    assert flat_p.keys() == flat_s.keys()
    for k in flat_p:
        assert np.asarray(flat_p[k]).tobytes() == np.asarray(flat_s[k]).tobytes(), k
    assert encoder_block_paths(st["audio_encoder"]) == encoder_block_paths(params["audio_encoder"])


def test_config_helper():
    base = tiny_config()
    e = encoder_config_like_llm(base.llm, base.encoder)
    assert (e.output_size, e.attention_heads, e.linear_units) == (128, 4, 384)
    assert e.num_blocks == base.encoder.num_blocks and e.input_size == base.encoder.input_size
    cfg = _mha_cfg()
    assert cfg.adaptor.encoder_dim == cfg.ctc.decoder.encoder_dim == 128
    with pytest.raises(ValueError, match="head_dim 64 != hidden_size 128"):
        encoder_config_like_llm(dataclasses.replace(base.llm, head_dim=64), base.encoder)
