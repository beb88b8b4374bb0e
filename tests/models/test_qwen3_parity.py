"""Qwen3ForCausalLM (Flax) vs transformers.Qwen3ForCausalLM (PyTorch, random weights, f32, eager).

Weights move torch -> Flax only through `funasr_jax.io.names.params_from_state_dict`.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")
from helpers.qwen3 import make_cfg, make_hf, rel_err, to_flax

from funasr_jax.io.names import flatten, state_dict_from_params
from funasr_jax.models.config import LoraConfig
from funasr_jax.models.lora import fold_lora, lora_param_filter, split_lora
from funasr_jax.models.qwen3 import Qwen3ForCausalLM, Qwen3InputError, causal_lm_loss

# (tie, rope_theta, head_dim): head_dim 32 != hidden / heads = 16 in the second case.
CASES = [(True, 1e6, 16), (False, 1e4, 32)]


@pytest.mark.parametrize("tie,theta,head_dim", CASES)
def test_logits_and_loss_right_padded(tie, theta, head_dim):
    cfg = make_cfg(tie, theta, head_dim)
    hf = make_hf(cfg)
    model = Qwen3ForCausalLM(cfg)
    params = to_flax(model, hf.state_dict(), cfg)

    rng = np.random.default_rng(1)
    b, l = 3, 11
    lengths = np.array([11, 7, 4])
    ids = rng.integers(0, cfg.vocab_size, (b, l))
    mask = np.arange(l)[None] < lengths[:, None]
    ids = np.where(mask, ids, 0)
    labels = np.where(mask, ids, -100)
    labels[:, :2] = -100  # prompt part ignored

    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                 labels=torch.tensor(labels))
    ref = out.logits.numpy()

    fwd = jax.jit(lambda p, i, n: model.apply({"params": p}, model.apply({"params": p}, i, method="embed"),
                                              lengths=n))
    logits, cache = fwd(params, jnp.asarray(ids), jnp.asarray(lengths))
    assert cache is None and logits.dtype == jnp.float32 and logits.shape == (b, l, cfg.vocab_size)
    errs = [rel_err(np.asarray(logits)[i, :n], ref[i, :n]) for i, n in enumerate(lengths)]
    assert max(errs) <= 1e-4, errs

    loss, n = causal_lm_loss(logits, jnp.asarray(labels))
    assert int(n) == int((labels[:, 1:] != -100).sum())
    assert abs(float(loss) - out.loss.item()) <= 1e-5 * abs(out.loss.item()), (float(loss), out.loss.item())


@pytest.mark.parametrize("tie,theta,head_dim", CASES)
def test_kv_cache_incremental_matches_hf(tie, theta, head_dim):
    """Prefill 4 tokens, then 1-token steps and one 2-token chunk at traced cache slots."""
    cfg = make_cfg(tie, theta, head_dim)
    hf = make_hf(cfg, seed=2)
    model = Qwen3ForCausalLM(cfg)
    params = to_flax(model, hf.state_dict(), cfg)
    rng = np.random.default_rng(3)
    b, l, s_max = 2, 10, 12
    ids = rng.integers(0, cfg.vocab_size, (b, l))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids)).logits.numpy()

    emb = model.apply({"params": params}, jnp.asarray(ids), method="embed")
    pos = jnp.broadcast_to(jnp.arange(l)[None], (b, l))
    kv_mask = None if tie else jnp.ones((b, s_max), bool)  # None = no padding (plain causal prefill)

    @jax.jit
    def step(cache, x, p, idx):
        return model.apply({"params": params}, x, positions=p, cache=cache, cache_index=idx, kv_mask=kv_mask)

    cache = model.init_cache(b, s_max)
    assert len(cache) == 3 and cache[0]["k"].shape == (b, s_max, 2, head_dim)
    got = []
    lg, cache = model.apply({"params": params}, emb[:, :4], positions=pos[:, :4], cache=cache,
                            cache_index=0, kv_mask=kv_mask)
    got.append(lg)
    t = 4
    for width in (1, 1, 2, 1, 1):
        lg, cache = step(cache, emb[:, t:t + width], pos[:, t:t + width], jnp.int32(t))
        got.append(lg)
        t += width
    got = np.concatenate([np.asarray(g) for g in got], axis=1)
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-4


def test_bf16_compute_close_and_remat_exact():
    cfg = make_cfg(True, 1e6, 16)
    hf = make_hf(cfg, seed=4)
    ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids)).logits.numpy()
    params = to_flax(Qwen3ForCausalLM(cfg), hf.state_dict(), cfg)

    remat = Qwen3ForCausalLM(cfg, remat=True)
    emb = remat.apply({"params": params}, jnp.asarray(ids), method="embed")

    def loss(p):
        lg, _ = remat.apply({"params": p}, emb)
        return jnp.sum(lg ** 2), lg

    (_, lg), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert rel_err(lg, ref) <= 1e-4
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(g))

    bf = Qwen3ForCausalLM(cfg, dtype=jnp.bfloat16)
    emb = bf.apply({"params": params}, jnp.asarray(ids), method="embed")
    lg, _ = jax.jit(bf.apply)({"params": params}, emb)
    assert emb.dtype == jnp.bfloat16 and lg.dtype == jnp.float32
    assert rel_err(lg, ref) <= 5e-2


def test_bad_inputs_raise_named_errors():
    cfg = make_cfg(True, 1e6, 16)
    model = Qwen3ForCausalLM(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 3, 64)))
    with pytest.raises(Qwen3InputError, match="inputs_embeds"):
        model.apply(params, jnp.zeros((1, 3, 32)))
    with pytest.raises(Qwen3InputError, match="positions"):
        model.apply(params, jnp.zeros((1, 3, 64)), positions=jnp.zeros((1, 4), jnp.int32))
    cache = model.init_cache(1, 8)
    with pytest.raises(Qwen3InputError, match="cache_index"):
        model.apply(params, jnp.zeros((1, 3, 64)), cache=cache)
    with pytest.raises(Qwen3InputError, match="exceeds"):
        model.apply(params, jnp.zeros((1, 3, 64)), cache=cache, cache_index=6)
    with pytest.raises(Qwen3InputError, match="kv_mask"):
        model.apply(params, jnp.zeros((1, 3, 64)), cache=cache, cache_index=0, kv_mask=jnp.ones((1, 5), bool))


# ----------------------------------------------------------------------------- LoRA

LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0, targets=("q_proj", "v_proj", "gate_proj"))


def _lora_torch(hf, lcfg, seed=7):
    """Random torch adapters (B nonzero) and forward hooks adding (alpha/r) x A^T B^T."""
    g = torch.Generator().manual_seed(seed)
    extra, hooks = {}, []
    s = lcfg.alpha / lcfg.rank
    for name, mod in hf.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in lcfg.targets:
            a = 0.2 * torch.randn(lcfg.rank, mod.in_features, generator=g)
            b_ = 0.2 * torch.randn(mod.out_features, lcfg.rank, generator=g)
            extra[f"{name}.lora_A.weight"], extra[f"{name}.lora_B.weight"] = a, b_
            hooks.append(mod.register_forward_hook(lambda m, inp, out, a=a, b_=b_: out + s * (inp[0] @ a.T @ b_.T)))
    return extra, hooks


def test_lora_forward_fold_and_names():
    cfg = make_cfg(False, 1e4, 32, lora=LORA)
    hf = make_hf(cfg, seed=6)
    extra, hooks = _lora_torch(hf, LORA)
    assert len(extra) == 2 * 3 * 3
    ids = np.random.default_rng(8).integers(0, cfg.vocab_size, (2, 8))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids)).logits.numpy()
        for h in hooks:
            h.remove()
        ref_base = hf(input_ids=torch.tensor(ids)).logits.numpy()
    assert rel_err(ref_base, ref) > 1e-2  # the adapters matter

    model = Qwen3ForCausalLM(cfg)
    sd = dict(hf.state_dict()) | extra
    params = to_flax(model, sd, cfg)
    a = params["model"]["layers"]["1"]["self_attn"]["q_proj"]["lora_A"]["kernel"]
    assert a.shape == (64, 4)
    np.testing.assert_array_equal(np.asarray(a), extra["model.layers.1.self_attn.q_proj.lora_A.weight"].numpy().T)
    emb = model.apply({"params": params}, jnp.asarray(ids), method="embed")
    lg, _ = jax.jit(model.apply)({"params": params}, emb)
    assert rel_err(lg, ref) <= 1e-4

    # Folding: W' = W + (alpha/r) A B, run by the adapter-free model; also equals HF with folded W.
    folded = fold_lora(params, LORA)
    assert not any(lora_param_filter(p) for p in flatten(folded))
    plain = Qwen3ForCausalLM(make_cfg(False, 1e4, 32))
    lg_f, _ = jax.jit(plain.apply)({"params": folded}, emb)
    assert rel_err(lg_f, ref) <= 1e-4
    with torch.no_grad():
        for k in [k for k in extra if k.endswith("lora_A.weight")]:
            lin = hf.get_submodule(k[: -len(".lora_A.weight")])
            lin.weight += LORA.alpha / LORA.rank * extra[k.replace("lora_A", "lora_B")] @ extra[k]
        ref_fold = hf(input_ids=torch.tensor(ids)).logits.numpy()
    assert rel_err(ref_fold, ref) <= 1e-5

    # Export: adapter names/shapes follow torch, and round-trip exactly.
    out = state_dict_from_params(params)
    assert set(out) == set(sd)
    assert out["model.layers.0.self_attn.v_proj.lora_B.weight"].shape == (2 * 32, 4)
    np.testing.assert_array_equal(out["model.layers.2.mlp.gate_proj.lora_B.weight"],
                                  extra["model.layers.2.mlp.gate_proj.lora_B.weight"].numpy())

    base, adapters = split_lora(params)
    assert set(flatten(adapters)) == {p for p in flatten(params) if lora_param_filter(p)}
    assert len(flatten(adapters)) == 18 and len(flatten(base)) == len(flatten(params)) - 18
    mask = jax.tree_util.tree_map_with_path(lambda p, _: lora_param_filter(p), params)
    assert sum(jax.tree_util.tree_leaves(mask)) == 18


def test_lora_init_and_dropout():
    cfg = make_cfg(True, 1e6, 16, lora=LoraConfig(rank=4, alpha=8.0, dropout=0.5, targets=("q_proj", "v_proj")))
    model = Qwen3ForCausalLM(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 5, 64)))["params"]
    run = jax.jit(lambda p, x, det: model.apply({"params": p}, x, deterministic=det,
                                                rngs={"dropout": jax.random.PRNGKey(2)}), static_argnums=2)
    attn = params["model"]["layers"]["0"]["self_attn"]
    assert np.all(np.asarray(attn["q_proj"]["lora_B"]["kernel"]) == 0)
    a = np.asarray(attn["v_proj"]["lora_A"]["kernel"])
    assert a.shape == (64, 4) and 0 < np.abs(a).max() <= 64 ** -0.5  # torch kaiming-uniform bound
    assert "lora_A" not in attn["k_proj"] and "lora_A" not in params["model"]["layers"]["0"]["mlp"]["up_proj"]
    # B = 0 at init: the adapted model equals the base model, with or without dropout.
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 64))
    base, _ = split_lora(params)
    lg0, _ = jax.jit(Qwen3ForCausalLM(make_cfg(True, 1e6, 16)).apply)({"params": base}, x)
    lg1, _ = run(params, x, False)
    np.testing.assert_allclose(np.asarray(lg1), np.asarray(lg0), rtol=1e-6, atol=1e-6)
    # With B != 0 dropout changes the output only when not deterministic.
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 if lora_param_filter(p) else v, params)
    d0, _ = run(params, x, True)
    d1, _ = run(params, x, False)
    assert np.max(np.abs(np.asarray(d0) - np.asarray(d1))) > 1e-3
