"""GRPO: advantages and the eq. (2) objective against numpy brute force, the update and rollout on
the model (log-probs against the teacher-forced SFT forward, zero gradient on equal rewards,
deterministic rollouts), 8 fake devices == 1, exact resume, the CLI from an SFT run, config errors.

The 8-device check runs in a subprocess (`python tests/train/test_grpo.py sharded`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # worker mode: fake devices before jax starts
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.sharding import SLIM, host_params  # noqa: E402
from helpers.train import assert_resume_equals_uninterrupted  # noqa: E402

from funasr_jax.configtools import ConfigError  # noqa: E402
from funasr_jax.models.batch import IGNORE_INDEX, Batch  # noqa: E402
from train import rl  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# One worker runs this module; its fixtures are session-scoped because a worker interleaves modules
# and would tear a module fixture down (and rebuild it) between them.
pytestmark = pytest.mark.xdist_group("grpo")
GRPO_SLIM = SLIM + ["stage.ctc_weight=0.0", "grpo.group_size=2", "grpo.max_new_tokens=6", "optim.eps=1e-3"]


# --------------------------------------------------------------------------- pure pieces vs numpy


def test_group_advantages_match_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(5, 4)).astype(np.float32)
    r[2] = 0.7  # a flat group
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-4)
    want[2] = 0.0
    got = np.asarray(rl.group_advantages(jnp.asarray(r.reshape(-1)), 4, 1e-4)).reshape(5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (got[2] == 0).all()


def np_objective(logp, old, ref, adv, mask, weight, eps, beta):
    """Eq. (2) written out with loops, float64: -(1/sum w) sum_s w_s/|o_s| sum_t [min(rA, clip(r)A) - beta KL]."""
    total, wsum = 0.0, 0.0
    for s in range(logp.shape[0]):
        if weight[s] <= 0:
            continue
        acc, n = 0.0, 0
        for t in range(logp.shape[1]):
            if not mask[s, t]:
                continue
            r = np.exp(logp[s, t] - old[s, t])
            surr = min(r * adv[s], min(max(r, 1 - eps), 1 + eps) * adv[s])
            q = ref[s, t] - logp[s, t]
            acc += surr - beta * (np.exp(q) - q - 1)
            n += 1
        total += acc / max(n, 1)
        wsum += 1
    return -total / max(wsum, 1)


def test_objective_and_gradient_match_brute_force():
    rng = np.random.default_rng(1)
    s, n = 6, 5
    old = rng.normal(-2, 0.5, (s, n))
    # ratios inside, above and below the clip range (eps 0.2), advantages of both signs
    logp = old + rng.choice([-0.6, -0.05, 0.03, 0.5], size=(s, n))
    ref = old + rng.normal(0, 0.3, (s, n))
    adv = np.array([1.2, -0.8, 0.5, -1.5, 0.0, 2.0])
    mask = np.arange(n)[None] < np.array([5, 3, 1, 4, 2, 5])[:, None]
    weight = np.array([1, 1, 1, 1, 1, 0.0])  # the last row is padding
    eps, beta = 0.2, 0.1

    def jloss(lp):
        return rl.grpo_objective(lp, jnp.asarray(old, jnp.float32), jnp.asarray(ref, jnp.float32),
                                 jnp.asarray(adv, jnp.float32), jnp.asarray(mask), jnp.asarray(weight, jnp.float32),
                                 clip_eps=eps, beta=beta)

    loss, m = jloss(jnp.asarray(logp, jnp.float32))
    grad = np.asarray(jax.grad(lambda lp: jloss(lp)[0])(jnp.asarray(logp, jnp.float32)))
    want = np_objective(logp, old, ref, adv, mask, weight, eps, beta)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    h, num = 1e-6, np.zeros_like(logp)
    for i in range(s):
        for j in range(n):
            up, dn = logp.copy(), logp.copy()
            up[i, j] += h
            dn[i, j] -= h
            num[i, j] = (np_objective(up, old, ref, adv, mask, weight, eps, beta)
                         - np_objective(dn, old, ref, adv, mask, weight, eps, beta)) / (2 * h)
    np.testing.assert_allclose(grad, num, atol=2e-6)
    assert (grad[~mask] == 0).all() and (grad[5] == 0).all()  # padding tokens and rows carry no gradient
    # clipped tokens (ratio beyond the range on the side the advantage pushes) have only the KL gradient
    r = np.exp(logp - old)
    clipped = ((adv[:, None] > 0) & (r > 1 + eps)) | ((adv[:, None] < 0) & (r < 1 - eps))
    assert float(m["clip_frac"]) == pytest.approx((clipped & mask & (weight[:, None] > 0)).sum()
                                                  / (mask & (weight[:, None] > 0)).sum())


# --------------------------------------------------------------------------- on the model


def grpo_cfg(extra=()):
    from train.main import load_config

    return load_config("grpo.py", "tiny", GRPO_SLIM + ["run.init_from=None", "data.first_pass_prompt=false"]
                       + list(extra))


@pytest.fixture(scope="session")  # see the xdist_group note above: built once per worker
def built():
    from funasr_jax.models.funasr import abstract_params
    from train import bench

    jax.config.update("jax_default_matmul_precision", "highest")
    cfg = grpo_cfg()
    params = host_params(abstract_params(cfg.model))  # lora_B non-zero: policy != reference
    mesh, rules, steps, state, batch, norm, info = bench.prepare(cfg, batch=4, seconds=1.0, text_tokens=4,
                                                                 params=params)
    return cfg, steps, state, batch, info, params


def test_rollouts_are_deterministic_per_key(built):
    cfg, steps, state, batch, info, _ = built
    a, la = steps.rollout(state["params"], state["rng"], batch)
    b, lb = steps.rollout(state["params"], state["rng"], batch)
    c, _ = steps.rollout(state["params"], jax.random.PRNGKey(123), batch)
    assert a.shape == (4 * cfg.grpo.group_size, cfg.grpo.max_new_tokens)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert ((np.asarray(la) >= 1) & (np.asarray(la) <= cfg.grpo.max_new_tokens)).all()


def test_logprobs_equal_the_teacher_forced_forward(built):
    """token_logprobs (audio once per utterance, completions spliced after each prompt) against the
    SFT forward of the model on right-padded prompt + completion rows built here by hand."""
    cfg, steps, state, batch, info, params = built
    model, g = info["model"], cfg.grpo.group_size
    host = info["host_batch"]
    rng = np.random.default_rng(2)
    s, n = 4 * g, 5
    comps = rng.integers(1, 1600, (s, n)).astype(np.int32)
    lens = rng.integers(1, n + 1, s).astype(np.int32)
    p = np.argmax(np.asarray(host.labels) != IGNORE_INDEX, axis=1)
    w = host.input_ids.shape[1] + n
    ids, labels = np.zeros((s, w), np.int32), np.full((s, w), IGNORE_INDEX, np.int32)
    for i in range(s):
        b = i // g
        ids[i, :p[b]] = host.input_ids[b, :p[b]]
        ids[i, p[b]:p[b] + lens[i]] = comps[i, :lens[i]]
        labels[i, p[b]:p[b] + lens[i]] = comps[i, :lens[i]]
    rep = lambda x: np.repeat(np.asarray(x), g, axis=0)
    tf = Batch(feats=rep(host.feats), feat_lengths=rep(host.feat_lengths), input_ids=ids,
               token_lengths=p.repeat(g) + lens, audio_start=rep(host.audio_start), audio_tokens=rep(host.audio_tokens))
    logits = model.apply({"params": params}, tf.map(jnp.asarray), deterministic=True, with_ctc=False)["logits"]
    logsm = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    want = np.zeros((s, n))
    for i in range(s):
        for t in range(lens[i]):
            pos = p[i // g] + t
            want[i, t] = logsm[i, pos - 1, labels[i, pos]]
    hb = host.map(jnp.asarray)
    seq, seq_len, p_rep = rl.completion_inputs(hb.input_ids, rl.prompt_lengths(hb.labels, hb.token_lengths),
                                               jnp.asarray(comps), jnp.asarray(lens), g, 0)
    got, ent = rl.token_logprobs(model, jax.tree_util.tree_map(jnp.asarray, params), hb, seq, seq_len, p_rep,
                                 jnp.asarray(comps), g)
    mask = np.arange(n)[None] < lens[:, None]
    np.testing.assert_allclose(np.asarray(got)[mask], want[mask], atol=2e-5)
    assert (np.asarray(ent) > 0).all()


def test_equal_rewards_give_zero_gradient_and_unequal_train_only_the_adapters(built):
    from train import bench
    from sharding.paths import flatten

    cfg0, *_ , params = built
    for beta in (0.0,):
        cfg = grpo_cfg([f"grpo.beta={beta}"])
        _, _, steps, state, batch, _, _ = bench.prepare(cfg, batch=4, seconds=1.0, text_tokens=4, params=params)
        comps, lens = steps.rollout(state["params"], state["rng"], batch)
        before = jax.tree_util.tree_map(np.asarray, state["params"])
        st, m = steps.update(state, batch, comps, lens, jnp.full((comps.shape[0],), 0.3, jnp.float32))
        assert float(m["grad_norm"]) == 0.0 and float(m["adv_abs"]) == 0.0
        for path, x in flatten(jax.tree_util.tree_map(np.asarray, st["params"])).items():
            np.testing.assert_array_equal(x, flatten(before)[path], err_msg="/".join(path))
    # unequal rewards, KL on: the adapters move, nothing else does
    _, _, steps, state, batch, _, _ = bench.prepare(grpo_cfg(), batch=4, seconds=1.0, text_tokens=4, params=params)
    comps, lens = steps.rollout(state["params"], state["rng"], batch)
    before = flatten(jax.tree_util.tree_map(np.asarray, state["params"]))
    rewards = jnp.asarray(np.random.default_rng(0).normal(size=comps.shape[0]), jnp.float32)
    st, m = steps.update(state, batch, comps, lens, rewards)
    assert float(m["grad_norm"]) > 0 and float(m["kl"]) > 0 and np.isfinite(float(m["loss"]))
    assert int(st["step"]) == 1
    moved = {"/".join(k) for k, v in flatten(jax.tree_util.tree_map(np.asarray, st["params"])).items()
             if not np.array_equal(v, before[k])}
    assert moved and all("lora_" in k for k in moved), sorted(moved)[:5]


def test_reference_is_adapters_off_for_lora_and_a_copy_otherwise():
    from train import setup

    lora = setup.stage_parts(grpo_cfg())
    assert lora.grpo is not None and "ref_params" not in lora.abstract_state(0)
    full = setup.stage_parts(grpo_cfg(['stage.trainable=["llm"]']))
    st = full.abstract_state(0)
    assert "ref_params" in st
    assert jax.tree_util.tree_structure(st["ref_params"]) == jax.tree_util.tree_structure(st["params"])
    p = {"a": {"kernel": jnp.ones((2, 2)), "lora_A": {"kernel": jnp.ones((2, 1))},
               "lora_B": {"kernel": jnp.ones((1, 2))}}}
    off = rl.adapters_off(p)
    assert float(off["a"]["lora_B"]["kernel"].sum()) == 0 and float(off["a"]["lora_A"]["kernel"].sum()) == 2


def test_bad_grpo_settings_are_named():
    for sets, msg in ((["grpo.group_size=1"], "grpo.group_size must be >= 2"),
                      (["grpo.beta=-0.1"], "grpo.beta must be >= 0"),
                      (['grpo.rewards=[["error", 1.0], ["halucination", 1.0]]'], "unknown reward 'halucination'"),
                      (["grpo.temperature=-1"], "grpo.temperature"), (["grpo.top_p=0"], "grpo.top_p"),
                      (["optim.accum_steps=2"], "accum_steps must be 1 for a grpo stage"),
                      (["stage.kind=ppo"], "stage.kind")):
        with pytest.raises(ConfigError, match=msg):
            grpo_cfg(sets)


# --------------------------------------------------------------------------- 8 fake devices


def test_grpo_step_on_8_devices_equals_one_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu", FUNASR_JAX_NO_COMPILE_CACHE="1",
               XLA_FLAGS="--xla_backend_optimization_level=0")
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "sharded"], capture_output=True, text=True,
                       timeout=600, env=env, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    ref = out["1"]
    for preset in ("8x-data", "2fsdp-4tensor"):
        got = out[preset]
        assert got["tokens"] == ref["tokens"] and got["lengths"] == ref["lengths"], preset
        np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5, atol=1e-7)
        assert got["max_param_diff"] <= 2e-6, (preset, got["max_param_diff"])


def worker_sharded():
    jax.config.update("jax_default_matmul_precision", "highest")
    from funasr_jax.models.funasr import abstract_params
    from train import bench

    assert jax.device_count() == 8
    cfg = grpo_cfg()
    params0 = host_params(abstract_params(cfg.model))
    out, ref = {}, None
    for preset in ("1", "8x-data", "2fsdp-4tensor"):
        devices = jax.devices()[:1] if preset == "1" else None
        _, _, steps, state, batch, _, _ = bench.prepare(cfg, batch=8, seconds=1.0, text_tokens=4, mesh_preset=preset,
                                                        devices=devices, params=params0)
        comps, lens = steps.rollout(state["params"], state["rng"], batch)
        rewards = jax.device_put(jnp.asarray(np.linspace(-1, 1, comps.shape[0]), jnp.float32), comps.sharding)
        state, m = steps.update(state, batch, comps, lens, rewards)
        params = [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]
        rec = {"tokens": np.asarray(comps).tolist(), "lengths": np.asarray(lens).tolist(), "loss": float(m["loss"])}
        if ref is None:
            ref = params
        else:
            rec["max_param_diff"] = float(max(np.abs(a - b).max() for a, b in zip(params, ref)))
        out[preset] = rec
    print(json.dumps(out))


# --------------------------------------------------------------------------- the trainer


def _tiny(stage, tmp_path, steps, **sets):
    from helpers.train import tiny_cfg

    return tiny_cfg(stage, tmp_path, steps=steps, **sets)


@pytest.fixture(scope="session")  # see the xdist_group note above: built once per worker
def sft_checkpoint(tmp_path_factory):
    """A tiny SFT run with trained LoRA adapters (sft4, 2 steps): GRPO's `init_from`."""
    from train.loop import train

    d = tmp_path_factory.mktemp("sft")
    slim = dict(x.split("=", 1) for x in SLIM)  # GRPO takes the architecture from this run
    cfg = _tiny("sft4", d, 2, **{**slim, "run.eval_at_end": False, "data.bucket_frames": "(128,)"})
    train(cfg)
    return cfg.run.out_dir


def test_resume_equals_uninterrupted(sft_checkpoint, tmp_path):
    sets = {"run.init_from": sft_checkpoint, "run.eval_at_end": False, "grpo.max_new_tokens": 4,
            "grpo.group_size": 2, "data.bucket_frames": "(128,)"}
    a = _tiny("grpo", tmp_path / "a", 4, **sets)
    b = _tiny("grpo", tmp_path / "b", 4, **sets)
    ra, train_rows = assert_resume_equals_uninterrupted(a, b)
    assert [r["reward"] for r in ra] == [r["reward"] for r in train_rows]  # same samples after the resume
    for r in train_rows:
        assert {"reward", "r/error", "r/keyword", "r/hallucination", "r/language", "kl", "clip_frac", "entropy",
                "out_len", "t_rollout", "t_reward", "t_update"} <= set(r)


def test_grpo_runs_as_a_subprocess_from_an_sft_run(sft_checkpoint, tmp_path):
    from helpers.train import small_manifest

    train_file = small_manifest(tmp_path, "train", 16, first_pass=True)
    dev_file = small_manifest(tmp_path, "dev", 2)
    out = tmp_path / "grpo"
    cmd = [sys.executable, "-m", "train.main", "--config", "grpo.py", "--preset", "tiny",
           "--set", "run.steps=2", "--set", f"run.out_dir={out}", "--set", f"data.train_files={train_file}",
           "--set", f"data.dev_files={dev_file}", "--set", "data.batch_size=4", "--set", "data.bucket_frames=(128,)",
           "--set", "run.decode_max_tokens=3", "--set", "run.log_every=1", "--set", f"run.init_from={sft_checkpoint}",
           "--set", "grpo.max_new_tokens=4"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["steps"] == 2 and summary["tensors_loaded"] > 0 and summary["eval"]["utterances"] == 2
    assert "LoRA adapters are folded into the base weights" in r.stderr
    assert "reward" in r.stderr and "rollout/reward/update" in r.stderr  # the progress line
    assert (out / "curves.png").exists() and (out / "checkpoints" / "2" / "params").exists()


if __name__ == "__main__":
    {"sharded": worker_sharded}[sys.argv[1]]()
