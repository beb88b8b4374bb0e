"""`model.scan_layers`: identical layers stacked at rest ([L, ...] under `<stack>/stacked`) and run
as one nn.scan. The per-layer model (children "0", "1", ...) is the independent reference: the
same weights, converted by `to_layout`, must give the same outputs, gradients and greedy tokens;
conversions between the layouts are bit-exact and bad trees are refused by name."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.io.names import CheckpointMismatchError, params_from_state_dict, state_dict_from_params
from funasr_jax.models.axes import logical_axes_for, param_logical_axes
from funasr_jax.models.config import tiny_config
from funasr_jax.models.funasr import FunASRNano, abstract_params, dummy_batch, init_params
from funasr_jax.models.qwen3 import Qwen3ForCausalLM
from funasr_jax.models.stack import STACKED, LayoutError, is_stacked, to_layout, unstack_layers
from sharding.paths import flatten, path_str


def _leaves(tree):
    return {"/".join(p): x for p, x in flatten(tree).items()}


def _batch(cfg):
    b = dummy_batch(cfg, batch=2, frames=24, tokens=20)
    return b.replace(feat_lengths=jnp.array([24, 15], jnp.int32), token_lengths=jnp.array([20, 13], jnp.int32))


def _loss(cfg, params, batch):
    out = FunASRNano(cfg).apply({"params": params}, batch)
    return jnp.mean(out["logits"] ** 2) + jnp.mean(out["ctc_logits"] ** 2), out


def _assert_bit_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys()
    for k in la:
        x, y = np.asarray(la[k]), np.asarray(lb[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


def test_stacked_parameter_tree():
    cfg = tiny_config()
    per, st = _leaves(abstract_params(cfg)), _leaves(abstract_params(cfg.replace(scan_layers=True)))
    q = st["llm/model/layers/stacked/self_attn/q_proj/kernel"]
    assert q.shape == (cfg.llm.num_hidden_layers,) + per["llm/model/layers/0/self_attn/q_proj/kernel"].shape
    assert st["audio_encoder/encoders/stacked/norm1/scale"].shape == (cfg.encoder.num_blocks - 1, 128)
    assert st["audio_adaptor/blocks/stacked/norm1/scale"].shape == (cfg.adaptor.n_layer, 128)
    assert "audio_encoder/encoders0/0/norm1/scale" in st  # a one-layer stack stays per-layer
    assert not any("/layers/1/" in k for k in st)
    # the same number of values, far fewer arrays
    assert sum(np.prod(v.shape) for v in per.values()) == sum(np.prod(v.shape) for v in st.values())
    assert len(st) < len(per) / 2


def test_outputs_and_gradients_equal_the_per_layer_model():
    """Per-layer (unrolled, no remat) vs stacked (scanned, block remat inside the scan) on the same
    weights. Tolerance: rtol 1e-5 / atol 1e-5 on outputs, rtol 1e-4 / atol 1e-6 on gradients (f32,
    `highest` matmuls; a scan and remat may reorder XLA's fusions, not the math)."""
    base = tiny_config().replace(matmul_precision="highest")
    params = init_params(base, jax.random.key(1))
    scfg = base.replace(scan_layers=True, remat="block")
    sparams = to_layout(params, abstract_params(scfg))
    assert is_stacked(sparams)
    batch = _batch(base)
    (_, o1), g1 = jax.jit(jax.value_and_grad(lambda p: _loss(base, p, batch), has_aux=True))(params)
    (_, o2), g2 = jax.jit(jax.value_and_grad(lambda p: _loss(scfg, p, batch), has_aux=True))(sparams)
    for k in ("logits", "ctc_logits", "enc_lengths"):
        np.testing.assert_allclose(o2[k], o1[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert is_stacked(g2)  # gradients come back stacked, like the params
    l1, l2 = _leaves(g1), _leaves(unstack_layers(g2))
    assert l1.keys() == l2.keys()
    for k in l1:
        np.testing.assert_allclose(l2[k], l1[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_dropout_runs_scanned():
    cfg = tiny_config().replace(scan_layers=True, remat="block")
    cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, dropout_rate=0.3))
    params = init_params(cfg, jax.random.key(0))
    batch = _batch(cfg)

    @jax.jit
    def run(key):
        enc = lambda det: FunASRNano(cfg).apply({"params": params}, batch.feats, batch.feat_lengths,  # noqa: E731
                                                det, method="encode", rngs={"dropout": key})[0]
        return enc(False), enc(True)

    (a, da), (b, db) = run(jax.random.key(1)), run(jax.random.key(2))
    assert not np.allclose(a, b)  # dropout is on: another key draws other masks in the scanned layers
    np.testing.assert_array_equal(da, db)  # deterministic: no dropout


def test_layouts_convert_bit_exactly_both_ways():
    cfg = tiny_config()
    per = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(4)))
    st = to_layout(per, abstract_params(cfg.replace(scan_layers=True)))
    got = st["llm"]["model"]["layers"][STACKED]["mlp"]["up_proj"]["kernel"]
    for i in range(cfg.llm.num_hidden_layers):
        assert got[i].tobytes() == per["llm"]["model"]["layers"][str(i)]["mlp"]["up_proj"]["kernel"].tobytes()
    _assert_bit_equal(unstack_layers(st), per)
    _assert_bit_equal(to_layout(st, per), per)          # stacked -> the per-layer layout of `like`
    _assert_bit_equal(to_layout(per, st), st)           # and back
    _assert_bit_equal(to_layout(st, st), st)            # already there: unchanged


def test_torch_names_exist_only_at_the_boundary_and_round_trip():
    """state_dict_from_params unstacks into PyTorch's `<stack>.{i}.*` names; params_from_state_dict
    with a stacked template stacks them back; both bit-exact."""
    cfg = tiny_config()
    per = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(5)))
    template = abstract_params(cfg.replace(scan_layers=True))
    st = to_layout(per, template)
    sd = state_dict_from_params(st)
    assert sd.keys() == state_dict_from_params(per).keys()
    assert "llm.model.layers.3.self_attn.q_proj.weight" in sd and not any(STACKED in k for k in sd)
    back, missing = params_from_state_dict(sd, template)
    assert not missing
    _assert_bit_equal(back, st)


def test_bad_per_layer_tensors_are_named():
    cfg = tiny_config()
    template = abstract_params(cfg.replace(scan_layers=True))
    sd = state_dict_from_params(jax.tree.map(np.asarray, init_params(cfg, jax.random.key(6))))
    gone = dict(sd)
    del gone["llm.model.layers.2.mlp.down_proj.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"llm\.model\.layers\.2\.mlp\.down_proj\.weight"):
        params_from_state_dict(gone, template)
    bent = dict(sd)
    bent["audio_encoder.encoders.1.norm1.weight"] = np.ones((7,), np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"audio_encoder\.encoders\.1\.norm1\.weight"):
        params_from_state_dict(bent, template)
    # the layout converter itself: a layer missing a tensor, unequal layer shapes, an extra layer
    per = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(6)))
    layers = per["llm"]["model"]["layers"]
    del layers["1"]["mlp"]["gate_proj"]
    with pytest.raises(LayoutError, match=r"mlp/gate_proj/kernel: missing for layers \[1\]"):
        to_layout(per, template)
    per = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(6)))
    per["audio_adaptor"]["blocks"]["1"]["norm2"]["scale"] = np.ones((3,), np.float32)
    with pytest.raises(LayoutError, match=r"audio_adaptor/blocks/\{i\}/norm2/scale: layers have different shapes"):
        to_layout(per, template)
    per = jax.tree.map(np.asarray, init_params(cfg, jax.random.key(6)))
    per["llm"]["model"]["layers"]["4"] = per["llm"]["model"]["layers"]["0"]
    with pytest.raises(LayoutError, match=r"llm/model/layers: the model stacks 4 layers here; .*'4'"):
        to_layout(per, template)


def test_logical_axes_of_stacked_params():
    cfg = tiny_config().replace(scan_layers=True)
    axes = {path_str(p): a for p, a in jax.tree_util.tree_leaves_with_path(
        param_logical_axes(abstract_params(cfg)), is_leaf=lambda x: isinstance(x, tuple))}
    assert axes["llm/model/layers/stacked/self_attn/q_proj/kernel"] == ("layers", "embed", "heads")
    assert axes["audio_encoder/encoders/stacked/norm1/scale"] == ("layers", "norm")
    assert axes["audio_encoder/encoders0/0/norm1/scale"] == ("norm",)
    assert logical_axes_for("llm/model/layers/stacked/mlp/up_proj/lora_A/kernel", 3) == ("layers", "embed", "lora")


def test_scanned_lowering_traces_one_layer():
    """What scanning buys: the LLM's layers appear once in the lowered module, not num_layers times."""
    cfg = tiny_config()
    texts = []
    for c in (cfg, cfg.replace(scan_layers=True)):
        params = abstract_params(c)
        texts.append(jax.jit(lambda p, b, c=c: FunASRNano(c).apply({"params": p}, b)).lower(
            params, dummy_batch(c)).as_text())
    dots = [t.count("stablehlo.dot_general") for t in texts]
    assert dots[1] < dots[0] / 2, dots
    assert "stablehlo.while" in texts[1]


def test_kv_cache_greedy_decoding_equals_per_layer():
    llm = dataclasses.replace(tiny_config().llm, num_hidden_layers=3)
    embeds = jax.random.normal(jax.random.key(3), (2, 7, llm.hidden_size))
    params = Qwen3ForCausalLM(llm).init(jax.random.key(2), embeds)["params"]
    stacked_like = Qwen3ForCausalLM(llm, scan_layers=True).init(jax.random.key(2), embeds)["params"]
    lengths = jnp.array([7, 4])
    toks = []
    for scan, p in ((False, params), (True, to_layout(params, stacked_like))):
        dec = CausalDecoder(Qwen3ForCausalLM(llm, scan_layers=scan, matmul_precision="highest"))
        toks.append(np.asarray(greedy_generate(dec, p, embeds, lengths, max_new_tokens=6, eos_id=-1, pad_id=0)[0]))
    np.testing.assert_array_equal(toks[1], toks[0])
    # with a cache the stacked layers run on static slices of the params (hoisted out of a decode
    # loop), not as a scan that would stack and unstack the whole cache at every step
    llm_s = Qwen3ForCausalLM(llm, scan_layers=True)
    sp = to_layout(params, stacked_like)
    text = jax.jit(lambda p, e, c: llm_s.apply({"params": p}, e, cache=c, cache_index=0)).lower(
        sp, embeds, llm_s.init_cache(2, 10)).as_text()
    assert "stablehlo.while" not in text
    text = jax.jit(lambda p, e: llm_s.apply({"params": p}, e)).lower(sp, embeds).as_text()
    assert "stablehlo.while" in text  # without a cache: scanned
