"""The trainer on layers stacked at rest (`model.scan_layers=true`): freeze plans and LoRA train
only what they should (checked layer by layer), weight decay judges rank per layer, a stacked
checkpoint resumes exactly, and `init_from` a per-layer checkpoint (or a stacked one into a
per-layer run) loads every tensor bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.io.checkpoint import load_model, restore_params, save_params
from funasr_jax.io.names import flatten
from funasr_jax.models.funasr import abstract_params, init_params
from funasr_jax.models.stack import STACKED, is_stacked, stacked_depth, to_layout, unstack_layers
from sharding.paths import path_str
from helpers.train import DEMO, tiny_cfg

SCAN = {"model.scan_layers": "true"}


def _train_steps(cfg, steps=2):
    """(initial params, final state, mask) after `steps` in-process optimizer steps of `cfg`."""
    from train import setup
    from train.data import TrainData
    from train.loop import initial_params
    from train.step import device_batch, init_state, step_counts

    params, _ = initial_params(cfg, cfg.model, jax.random.PRNGKey(0))
    parts = setup.stage_parts(cfg, total_steps=10)
    state = init_state(params, parts.tx, 0)
    data = TrainData(cfg)
    step = jax.jit(parts.steps.train)
    for _ in range(steps):
        b = data.next_train()
        state, m = step(state, device_batch(b), step_counts([b]))
        assert np.isfinite(float(m["loss"]))
    return params, state, parts.mask


@pytest.mark.parametrize("stage", ["sft4"])  # encoder + adaptor fully, the LLM through LoRA only
def test_freeze_plan_and_lora_per_layer_on_stacked_params(stage, tmp_path):
    """sft4: encoder + adaptor + LoRA adapters move, the LLM's base weights do not. Judged on every layer
    of every stacked tensor (an unstacked view), so a stacked leaf cannot hide a frozen layer that
    moved or a trained layer that did not."""
    cfg = tiny_cfg(stage, tmp_path, **SCAN)
    before, state, mask = _train_steps(cfg)
    assert is_stacked(before) and is_stacked(state["params"]) and is_stacked(mask)
    lora = state["params"]["llm"]["model"]["layers"][STACKED]["self_attn"]["q_proj"]
    assert lora["lora_A"]["kernel"].shape[0] == cfg.model.llm.num_hidden_layers
    fb, fa = flatten(unstack_layers(before)), flatten(unstack_layers(state["params"]))
    # the mask per layer: a stacked leaf's flag repeated over its layers, then unstacked with the params
    per_layer = jax.tree_util.tree_map_with_path(
        lambda path, m, p: np.full(np.shape(p)[:1], m) if stacked_depth(path_str(path)) else m, mask, before)
    fm = {k: bool(v) for k, v in flatten(unstack_layers(per_layer)).items()}
    moved, frozen_changed = [], []
    for path, m in fm.items():
        same = np.array_equal(np.asarray(fb[path]), np.asarray(fa[path]))
        (moved if m and not same else frozen_changed if not m and not same else []).append("/".join(path))
    assert not frozen_changed, f"frozen tensors changed: {frozen_changed[:5]}"
    trained = [p for p, m in fm.items() if m]
    lora_paths = [p for p in trained if "lora_B" in p]  # lora_B starts at zero: it must move in every layer
    assert lora_paths and all("/".join(p) in moved for p in lora_paths)
    for i in range(cfg.model.llm.num_hidden_layers):
        assert ("llm", "model", "layers", str(i), "self_attn", "q_proj", "lora_B", "kernel") in fm
    if stage == "sft3":
        assert all("lora_A" in p or "lora_B" in p for p in trained)
    else:
        assert {p[0] for p in trained} == {"audio_encoder", "audio_adaptor", "llm"}
        assert all(p[0] != "llm" or "lora_A" in p or "lora_B" in p for p in trained)
        enc = [p for p in trained if p[:2] == ("audio_encoder", "encoders") and p[-1] == "kernel"]
        assert len({p[2] for p in enc}) == cfg.model.encoder.num_blocks - 1  # every stacked layer trained
    assert len(moved) > 0.5 * len(trained)
    # Adam's mu and nu exist for trained leaves only, stacked like them
    n_state = sum(np.size(x) for x in jax.tree_util.tree_leaves(state["opt_state"]) if np.ndim(x) > 0)
    assert n_state == 2 * sum(np.size(fb[p]) for p in trained)


def test_weight_decay_judges_rank_per_layer():
    """AdamW with zero gradients moves only decayed leaves: stacked kernels [L, in, out] decay,
    stacked norm gains and biases [L, D] (vectors per layer) do not."""
    from train.config import OptimConfig
    from train.optimizer import make_optimizer

    from funasr_jax.models.config import tiny_config

    params = init_params(tiny_config().replace(scan_layers=True), jax.random.key(0))
    tx, _ = make_optimizer(OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0, schedule="constant"),
                           params, ["*"], 10)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    flat = {"/".join(p): np.asarray(u) for p, u in flatten(updates).items()}
    assert np.any(flat["llm/model/layers/stacked/self_attn/q_proj/kernel"] != 0)
    assert np.all(flat["llm/model/layers/stacked/input_layernorm/scale"] == 0)
    assert np.all(flat["audio_encoder/encoders/stacked/norm1/bias"] == 0)
    assert np.all(flat["audio_encoder/encoders/stacked/self_attn/linear_q_k_v/bias"] == 0)
    assert np.any(flat["audio_encoder/encoders/stacked/self_attn/fsmn_block/kernel"] != 0)


def test_stacked_checkpoint_resumes_exactly(tmp_path):
    from train.loop import train

    sets = {"run.eval_max_utts": 1, **SCAN}
    a = tiny_cfg("sft4", tmp_path / "a", steps=4, **sets)
    train(a)
    b = tiny_cfg("sft4", tmp_path / "b", steps=4, **sets)
    r = train(b, stop_after=2)
    assert r.get("interrupted") and r["steps"] == 2
    ck = Path(b.run.out_dir) / "checkpoints"
    saved = restore_params(next(p for p in sorted(ck.iterdir()) if p.is_dir()) / "params")
    assert is_stacked(saved)  # the trainer writes the stacked layout, no per-layer names
    assert not any(k.isdigit() for p in flatten(saved) for k in p if "layers" in p)
    train(b)  # resumes from step 2
    pa, pb = load_model(a.run.out_dir).params, load_model(b.run.out_dir).params
    assert is_stacked(pa)
    fa, fb = flatten(pa), flatten(pb)
    assert fa.keys() == fb.keys()
    for path in fa:
        np.testing.assert_array_equal(np.asarray(fb[path]), np.asarray(fa[path]), err_msg="/".join(path))
    rows = [json.loads(line) for line in (Path(b.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]


@pytest.mark.parametrize("src_scan,run_scan", [(False, True), (True, False)], ids=["per-layer->stacked",
                                                                                   "stacked->per-layer"])
def test_init_from_across_layouts(src_scan, run_scan, tmp_path):
    from configs.base import model_for_preset
    from train.loop import initial_params, merged_model_config

    src_cfg = model_for_preset("tiny").replace(scan_layers=src_scan)
    src = jax.tree.map(np.asarray, init_params(src_cfg, jax.random.PRNGKey(7)))
    save_params(tmp_path / "src", src, src_cfg, tokenizer_path=str(DEMO / "tokenizer.model"))
    cfg = tiny_cfg("sft4", tmp_path, **{"run.init_from": str(tmp_path / "src"),
                                       "model.scan_layers": str(run_scan).lower()})
    loaded = load_model(cfg.run.init_from)
    model_cfg = merged_model_config(cfg, loaded.cfg)
    assert model_cfg.scan_layers is run_scan
    params, info = initial_params(cfg, model_cfg, jax.random.PRNGKey(0), source=loaded)
    assert is_stacked(params) is run_scan
    want = flatten(to_layout(src, abstract_params(model_cfg)))
    got = flatten(params)
    base = [p for p in got if "lora_A" not in p and "lora_B" not in p]
    assert info["tensors_loaded"] == len(base) == len(want)
    for p in base:
        assert np.asarray(got[p]).tobytes() == np.asarray(want[p]).tobytes(), "/".join(p)


def test_grpo_rollout_and_update_on_stacked_layers_equal_per_layer():
    """A GRPO stage (KV-cache rollouts through the scanned LLM, the clipped update) on stacked
    layers against the per-layer model with the same weights: same sampled tokens, same loss and
    gradient norm (rtol 1e-4, f32 `highest`), and still only the adapters move."""
    from helpers.sharding import SLIM, host_params
    from train import bench
    from train.main import load_config

    sets = SLIM + ["stage.ctc_weight=0.0", "grpo.group_size=2", "grpo.max_new_tokens=4", "run.init_from=None",
                   "data.first_pass_prompt=false", "optim.eps=1e-3", "model.llm.num_hidden_layers=2",
                   "model.encoder.num_blocks=3", "model.matmul_precision=highest"]
    per = load_config("grpo.py", "tiny", sets)
    st = load_config("grpo.py", "tiny", sets + ["model.scan_layers=true"])
    params = host_params(abstract_params(per.model))  # lora_B non-zero: policy != reference
    results = []
    for cfg, p in ((per, params), (st, to_layout(params, abstract_params(st.model)))):
        _, _, steps, state, batch, _, _ = bench.prepare(cfg, batch=2, seconds=1.0, text_tokens=4, params=p)
        comps, lens = steps.rollout(state["params"], state["rng"], batch)
        before = flatten(unstack_layers(jax.tree.map(np.asarray, state["params"])))
        rewards = jnp.asarray([0.1, 0.9, 0.5, 0.2], jnp.float32)
        new, m = steps.update(state, batch, comps, lens, rewards)
        after = flatten(unstack_layers(jax.tree.map(np.asarray, new["params"])))
        moved = {"/".join(k) for k in after if not np.array_equal(after[k], before[k])}
        results.append((np.asarray(comps), np.asarray(lens), {k: float(v) for k, v in m.items()}, moved))
    (c1, l1, m1, mv1), (c2, l2, m2, mv2) = results
    assert is_stacked(to_layout(params, abstract_params(st.model)))
    np.testing.assert_array_equal(c2, c1)
    np.testing.assert_array_equal(l2, l1)
    for k in ("loss", "grad_norm", "kl"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-7), k
    assert mv1 and mv2 == mv1 and all("lora_" in k for k in mv2)
