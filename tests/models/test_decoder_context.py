"""DecoderContext (static mode / deterministic), remat of the Qwen3 decoder layer, and LayerStack."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.models.adaptor import EncoderLayer
from funasr_jax.models.config import LoraConfig, Qwen3Config
from funasr_jax.models.encoder import EncoderLayerSANM
from funasr_jax.models.qwen3 import DecoderContext, Qwen3DecoderLayer, Qwen3InputError, init_cache
from funasr_jax.models.remat import POLICIES, RematConfigError, remat_layer, static_argnums_of
from funasr_jax.models.stack import LayerStack

jax.config.update("jax_default_matmul_precision", "highest")  # remat vs plain: only f32 reassociation differs

CFG = Qwen3Config(vocab_size=31, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  lora=LoraConfig(rank=2, alpha=4.0, dropout=0.3, targets=("q_proj", "up_proj")))
B, L, S = 2, 5, 8


def assert_trees_close(got, want, rel=1e-5):
    """Every leaf: max |got - want| <= rel * max |want| (remat may reassociate f32 sums)."""
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape and np.max(np.abs(g - w)) <= rel * max(np.max(np.abs(w)), 1e-30)


def _positions(offset=0):
    return jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32)[None] + offset, (B, L))


def test_static_fields_are_not_leaves_and_do_not_retrace():
    ctx = DecoderContext(_positions(), cache_index=jnp.int32(2), kv_mask=jnp.ones((B, S), bool), mode="decode")
    leaves = jax.tree_util.tree_leaves(ctx)
    assert len(leaves) == 3 and all(isinstance(x, jax.Array) for x in leaves)  # mode / deterministic: treedef

    layer = Qwen3DecoderLayer(CFG)
    h = jax.random.normal(jax.random.PRNGKey(0), (B, L, CFG.hidden_size))
    cache = init_cache(CFG, B, S)[0]
    params = layer.init(jax.random.PRNGKey(1), h, cache, ctx)
    traces = []

    @jax.jit
    def run(p, c):
        traces.append((c.mode, c.deterministic))  # runs once per trace
        return layer.apply(p, h, cache, c)[0]

    a = run(params, ctx)
    b = run(params, ctx.replace(positions=_positions(3), cache_index=jnp.int32(0)))
    assert traces == [("decode", True)]
    assert not np.allclose(np.asarray(a), np.asarray(b))  # new positions did reach the layer
    run(params, ctx.replace(mode="prefill", cache_index=None))
    assert traces[-1] == ("prefill", True) and len(traces) == 2

    with pytest.raises(Qwen3InputError, match="mode"):
        DecoderContext(_positions(), mode="generate")
    with pytest.raises(Qwen3InputError, match="mode 'train' with cache"):
        layer.apply(params, h, cache, DecoderContext(_positions()))


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("deterministic", [True, False])
def test_remat_decoder_layer_same_gradient(policy, deterministic):
    """jax.grad through remat_layer(Qwen3DecoderLayer, policy) equals the plain layer's (train mode,
    LoRA dropout on when not deterministic: the static flag must survive jax.checkpoint)."""
    h = jax.random.normal(jax.random.PRNGKey(0), (B, L, CFG.hidden_size))
    ctx = DecoderContext(_positions(), lengths=jnp.array([L, 3]), deterministic=deterministic)
    plain, remat = Qwen3DecoderLayer(CFG, name="layer"), remat_layer(Qwen3DecoderLayer, policy)(CFG, name="layer")
    params = plain.init(jax.random.PRNGKey(1), h, None, ctx)["params"]
    params = jax.tree_util.tree_map(lambda v: v + 0.1, params)  # LoRA B != 0
    rngs = {"dropout": jax.random.PRNGKey(2)}

    def grads(layer, c):
        def loss(p, x):
            out, cache = layer.apply({"params": p}, x, None, c, rngs=rngs)
            assert cache is None
            return jnp.sum(out ** 2)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, h)

    want, got = grads(plain, ctx), grads(remat, ctx)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    assert_trees_close(got, want)
    if not deterministic:  # dropout really ran (so both paths drew the same masks)
        q_b = lambda g: np.asarray(g[0]["self_attn"]["q_proj"]["lora_B"]["kernel"])
        assert np.max(np.abs(q_b(want) - q_b(grads(plain, ctx.replace(deterministic=True))))) > 1e-3

    # Decode mode with a cache and a traced slot: same outputs and cache.
    dctx = DecoderContext(_positions(2), cache_index=jnp.int32(2), kv_mask=jnp.ones((B, S), bool), mode="decode")
    cache = init_cache(CFG, B, S)[0]
    fwd = lambda layer: jax.jit(lambda p: layer.apply({"params": p}, h, cache, dctx))(params)
    assert_trees_close(fwd(remat), fwd(plain))


def test_remat_static_args_found_by_name():
    assert static_argnums_of(EncoderLayerSANM, ("deterministic",)) == (4,)  # self, x, mask, lengths, deterministic
    assert static_argnums_of(EncoderLayer, ("deterministic",)) == (3,)
    assert static_argnums_of(Qwen3DecoderLayer, ()) == ()
    with pytest.raises(RematConfigError, match="no parameter"):
        remat_layer(EncoderLayer, "block", static_argnames=("train",))
    assert remat_layer(EncoderLayer, "none", static_argnames=("train",)) is EncoderLayer


class _Affine(nn.Module):
    """h * scale + bias; returns (h, extra + 1) when `extra` is given."""

    features: int

    @nn.compact
    def __call__(self, h, *extra):
        y = nn.Dense(self.features, name="dense")(h)
        return (y, extra[0] + 1) if extra else y


def test_layer_stack_names_per_layer_and_collect():
    x = jnp.ones((2, 3, 4))
    plain = LayerStack(_Affine, ((4,),) * 3)
    params = plain.init(jax.random.PRNGKey(0), x)["params"]
    assert sorted(params) == ["0", "1", "2"] and set(params["1"]) == {"dense"}
    y = plain.apply({"params": params}, x)
    manual = x
    for i in "012":
        manual = manual @ params[i]["dense"]["kernel"] + params[i]["dense"]["bias"]
    np.testing.assert_allclose(np.asarray(y), np.asarray(manual), rtol=1e-6)

    coll = LayerStack(_Affine, ((4,),) * 3, collect=True)
    y2, extras = coll.apply({"params": params}, x, per_layer=(10, 20, 30))
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y), rtol=1e-6)
    assert extras == (11, 21, 31)
    with pytest.raises(ValueError, match="per_layer has 2 entries for 3 layers"):
        coll.apply({"params": params}, x, per_layer=(1, 2))
