"""`model.scan_layers`: the layers of each stack run as one lax.scan over parameters stacked at
apply time. Same parameter tree (PyTorch names), same outputs, gradients and greedy tokens as
the unrolled model; remat still composes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.models.config import tiny_config
from funasr_jax.models.funasr import FunASRNano, dummy_batch, init_params
from funasr_jax.models.qwen3 import Qwen3ForCausalLM


def _leaves(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _batch(cfg):
    b = dummy_batch(cfg, batch=2, frames=24, tokens=20)
    return b.replace(feat_lengths=jnp.array([24, 15], jnp.int32), token_lengths=jnp.array([20, 13], jnp.int32))


def _loss(cfg, params, batch):
    out = FunASRNano(cfg).apply({"params": params}, batch)
    return jnp.mean(out["logits"] ** 2) + jnp.mean(out["ctc_logits"] ** 2), out


def test_same_parameter_tree():
    a = jax.eval_shape(lambda: init_params(tiny_config(), jax.random.key(0)))
    b = jax.eval_shape(lambda: init_params(tiny_config().replace(scan_layers=True), jax.random.key(0)))
    assert {k: (v.shape, v.dtype) for k, v in _leaves(a).items()} == {k: (v.shape, v.dtype) for k, v in _leaves(b).items()}
    assert any("layers']['3']" in k for k in _leaves(a))   # per-layer names kept


def test_outputs_and_gradients_equal_the_unrolled_model():
    """Unrolled without remat vs scanned with block remat: scanning and remat compose."""
    base = tiny_config().replace(matmul_precision="highest")
    params = init_params(base, jax.random.key(1))
    batch = _batch(base)
    results = []
    for scan in (False, True):
        cfg = base.replace(scan_layers=scan, remat="block" if scan else "none")
        (loss, out), grads = jax.jit(jax.value_and_grad(lambda p: _loss(cfg, p, batch), has_aux=True))(params)
        results.append((out, grads))
    (o1, g1), (o2, g2) = results
    for k in ("logits", "ctc_logits", "enc_lengths"):
        np.testing.assert_allclose(o2[k], o1[k], rtol=1e-5, atol=1e-5, err_msg=k)
    l1, l2 = _leaves(g1), _leaves(g2)
    assert l1.keys() == l2.keys()
    for k in l1:
        np.testing.assert_allclose(l2[k], l1[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_scanned_lowering_traces_one_layer():
    """What scanning buys: the LLM's layers appear once in the lowered module, not num_layers times."""
    cfg = tiny_config()
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    batch = dummy_batch(cfg)
    texts = [jax.jit(lambda p, b, c=c: FunASRNano(c).apply({"params": p}, b)).lower(params, batch).as_text()
             for c in (cfg, cfg.replace(scan_layers=True))]
    dots = [t.count("stablehlo.dot_general") for t in texts]
    assert dots[1] < dots[0] / 2, dots
    assert "stablehlo.while" in texts[1]


def test_kv_cache_greedy_decoding_equals_unrolled():
    llm = dataclasses.replace(tiny_config().llm, num_hidden_layers=3)
    embeds = jax.random.normal(jax.random.key(3), (2, 7, llm.hidden_size))
    params = Qwen3ForCausalLM(llm).init(jax.random.key(2), embeds)["params"]
    lengths = jnp.array([7, 4])
    toks = []
    for scan in (False, True):
        dec = CausalDecoder(Qwen3ForCausalLM(llm, scan_layers=scan, matmul_precision="highest"))
        toks.append(np.asarray(greedy_generate(dec, params, embeds, lengths, max_new_tokens=6, eos_id=-1, pad_id=0)[0]))
    np.testing.assert_array_equal(toks[1], toks[0])
