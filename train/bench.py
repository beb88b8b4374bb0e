"""Benchmark the jitted, sharded train step (and eval step) on whatever devices exist.

    python -m train.bench --config sft4.py --preset nano --batch 32 --seconds 30 --steps 10 \
        --dtype bfloat16 --out bench.json
    python -m train.bench --config grpo.py --preset tiny --batch 8 --seconds 3   (rollout / reward /
        update split and RTF of a GRPO step: `run_grpo_bench`)
    python -m train.bench --config sft4.py --preset full --batch 4 --seconds 10 --compile-only \
        --out compile.json   (trace / lower / compile seconds and HLO size of the step the loop
        compiles, from abstract shapes only: `compile_only`)

Synthetic batches are shaped like the PyTorch anchor's (`train.synthetic`); the step is built by
`train.setup`, exactly as training builds it.

Model FLOPs per step (stated in the output as `flops_formula`), per model part c with N_c
parameters (an untied input embedding is a lookup and not counted) seeing D_c rows
(encoder / CTC branch: B*T frames, adaptor: B*ceil(T/k), LLM: B*L tokens):
    2*N_c*D_c forward
  + 2*N_c*D_c if gradients flow through c (c or a part upstream of it is trained)
  + 2*N_c,trainable*D_c weight gradients                    (so a trained part costs 6*N*D)
  + attention: 4*B*S^2*H*hd per layer forward (causal LLM: half), x3 when gradients flow.
MFU = FLOPs / step time / (peak bf16 dense FLOP/s per device x devices); no MFU on CPU.
`flops_6nd_all` is the anchor's convention (6 x all params x rows + 3 x attention) for
comparison with its table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp

from funasr_jax.configtools import ConfigError
from funasr_jax.data.datasets import load_text_tools
from funasr_jax.host_memory import tune_host_allocator
from funasr_jax.io.torch_nano import TorchUnavailableError, require_torch_funasr
from sharding.paths import path_str
from train import setup, torch_compare
from train.distributed import enable_compilation_cache, initialize_distributed
from train.precompile import abstract_norm, aot_compile, stacked_abstract
from train.main import load_config, with_model_overrides
from train.rl_host import GRPOHost
from train.sharded import mesh_and_rules, replicate, restore_target, shard_batch, shard_state
from train.step import batch_counts
from train.synthetic import anchor_shapes, random_params, synthetic_batch

# bf16 dense peak FLOP/s per device, matched against `device_kind` (first substring hit wins).
DEVICE_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v6", 918e12),
]

class BenchError(ValueError):
    """Bad benchmark arguments (names the flag)."""


def step_flops(model_cfg, params, mask, batch: int, shapes: dict, llm_weight: float, ctc_weight: float) -> dict:
    """Model FLOPs of one train step (see the module docstring); `params` may be abstract."""
    t, length = shapes["lfr_frames"], shapes["llm_tokens"]
    k_ad = model_cfg.adaptor.downsample_rate
    k_ctc = model_cfg.ctc.decoder.downsample_rate
    rows = {"audio_encoder": batch * t, "audio_adaptor": batch * -(-t // k_ad), "llm": batch * length,
            "ctc_decoder": batch * -(-t // k_ctc), "ctc": batch * -(-t // k_ctc)}
    n_all: dict[str, int] = {}
    n_train: dict[str, int] = {}
    tied = model_cfg.llm.tie_word_embeddings
    for (path, x), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask)):
        p = path_str(path)
        if p.endswith("embed_tokens/embedding") and not tied:
            continue  # a lookup, no matmul
        c = p.split("/")[0]
        n = math.prod(x.shape)
        n_all[c] = n_all.get(c, 0) + n
        n_train[c] = n_train.get(c, 0) + (n if m else 0)
    paths = []
    if llm_weight > 0:
        paths.append(["audio_encoder", "audio_adaptor", "llm"])
    if ctc_weight > 0 and model_cfg.ctc.enabled:
        paths.append((["audio_encoder"] if not model_cfg.ctc.detach_encoder else []) + ["ctc_decoder", "ctc"])
    active, backprop = set(), set()
    for chain in paths:
        for i, c in enumerate(chain):
            active.add(c)
            if any(n_train.get(u, 0) for u in chain[: i + 1]):
                backprop.add(c)
    active.add("audio_encoder")
    dense = {}
    for c in active:
        d = rows[c]
        dense[c] = 2 * n_all.get(c, 0) * d * (2 if c in backprop else 1) + (2 * n_train.get(c, 0) * d if c in backprop else 0)

    def attn(layers, s, width, causal):
        return layers * 4 * batch * s * s * width * (0.5 if causal else 1.0)

    e, a, q, cd = model_cfg.encoder, model_cfg.adaptor, model_cfg.llm, model_cfg.ctc.decoder
    att = {"audio_encoder": attn(e.num_blocks + e.tp_blocks, t, e.output_size, False),
           "audio_adaptor": attn(a.n_layer, -(-t // k_ad), a.llm_dim, False),
           "llm": attn(q.num_hidden_layers, length, q.num_attention_heads * q.head_dim, True),
           "ctc_decoder": attn(cd.n_layer, -(-t // k_ctc), cd.llm_dim, False), "ctc": 0.0}
    attention = {c: att[c] * (3 if c in backprop else 1) for c in active}
    total = sum(dense.values()) + sum(attention.values())
    all6 = sum(6 * n_all.get(c, 0) * rows[c] + 3 * att[c] for c in active)
    return {"total": float(total), "dense": {k: float(v) for k, v in dense.items()},
            "attention": {k: float(v) for k, v in attention.items()}, "backprop_parts": sorted(backprop),
            "flops_6nd_all": float(all6), "params": n_all, "trainable": n_train}


def trainable_counts(params, mask) -> dict[str, int]:
    """{top-level part: trainable parameter count} (every trained leaf, embeddings included)."""
    out: dict[str, int] = {}
    for (path, x), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask)):
        if m:
            c = path_str(path).split("/")[0]
            out[c] = out.get(c, 0) + math.prod(x.shape)
    return out


def device_peak_flops(kind: str) -> float | None:
    for sub, peak in DEVICE_PEAK_FLOPS:
        if sub.lower() in kind.lower():
            return peak
    return None


def peak_memory_bytes() -> int | None:
    peaks = []
    for d in jax.local_devices():
        try:
            st = d.memory_stats()
        except Exception:  # noqa: BLE001 - some backends raise instead of returning None
            st = None
        if st and "peak_bytes_in_use" in st:
            peaks.append(int(st["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def prepare(cfg, *, batch: int, seconds: float, text_tokens=None, mesh_preset=None, seed: int = 0,
            min_sharded_size=None, devices=None, params=None):
    """Everything a benchmark / test needs: (mesh, rules, steps, state, batch, norm, info).

    cfg: a validated TrainConfig (model dtype / remat already set). The step comes from
    `train.setup` (as in training). Params are random unless `params` (a host tree, placed onto
    the mesh) is given.
    """
    built = setup.prepare(cfg, mesh_preset=mesh_preset, devices=devices, seed=seed + 1,
                          min_sharded_size=min_sharded_size, total_steps=max(cfg.run.steps, 10))
    parts, steps, mesh = built.parts, built.steps, built.mesh
    if params is None:
        params = random_params(parts.abstract_params, steps.state_shardings["params"], seed)
    else:
        params = shard_state(params, steps.state_shardings["params"])
    state = built.init_state(params)
    host = synthetic_batch(cfg.model, batch, seconds, text_tokens=text_tokens, seed=seed,
                           ctc=cfg.stage.ctc_weight > 0)
    norm = replicate({k: jnp.asarray(max(1.0, v), jnp.float32) for k, v in batch_counts(host).items()}, mesh)
    info = {"abstract_params": parts.abstract_params, "mask": parts.mask, "tx": parts.tx, "host_batch": host,
            "model": parts.model, "weights": parts.weights}
    return mesh, built.rules, steps, state, shard_batch(host, mesh), norm, info


def run_bench(cfg, *, batch: int, seconds: float, steps: int = 5, warmup: int = 2, text_tokens=None,
              mesh_preset=None, eval_step: bool = True, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    mesh, rules, st, state, dev_batch, norm, info = prepare(
        cfg, batch=batch, seconds=seconds, text_tokens=text_tokens, mesh_preset=mesh_preset, seed=seed)
    setup_s = time.perf_counter() - t0
    shapes = anchor_shapes(seconds, text_tokens)

    compiled, compile_s = aot_compile(st.train, state, dev_batch, norm)  # as training compiles, before step 1
    mem = compiled.memory_analysis()
    times, loss = [], None
    for i in range(warmup + steps):
        t1 = time.perf_counter()
        state, metrics = compiled(state, dev_batch, norm)
        loss = float(jax.block_until_ready(metrics["loss"]))
        if i >= warmup:
            times.append(time.perf_counter() - t1)
    if not math.isfinite(loss):
        raise BenchError(f"train step loss is {loss}: the synthetic setup diverged")
    eval_ms = None
    if eval_step:
        etimes = []
        for i in range(1 + max(1, steps // 2)):
            t1 = time.perf_counter()
            jax.block_until_ready(st.eval(state["params"], dev_batch))
            if i:
                etimes.append(time.perf_counter() - t1)
        eval_ms = 1e3 * statistics.median(etimes)
    step_s = statistics.median(times)
    fl = step_flops(cfg.model, info["abstract_params"], info["mask"], batch, shapes, cfg.stage.llm_weight,
                    cfg.stage.ctc_weight)
    trainable_params = trainable_counts(info["abstract_params"], info["mask"])
    devs = jax.devices()
    kind = devs[0].device_kind
    peak = device_peak_flops(kind) if jax.default_backend() != "cpu" else None
    n_dev = len(devs)
    rec = {
        "preset": cfg.preset, "stage": cfg.stage.name, "trainable": list(cfg.stage.trainable),
        "trainable_params": trainable_params,
        "dtype": cfg.model.dtype, "remat": cfg.model.remat, "mesh": dict(mesh.shape), "rules": rules.name,
        "device": kind, "devices": n_dev, "backend": jax.default_backend(), "jax": jax.__version__,
        "batch": batch, "audio_s": seconds, **shapes,
        "step_ms": round(step_s * 1e3, 2), "step_ms_mean": round(1e3 * statistics.mean(times), 2),
        "step_ms_min": round(1e3 * min(times), 2), "steps_per_s": round(1.0 / step_s, 4), "eval_ms": None if eval_ms is None else round(eval_ms, 2),
        "tokens_per_s": round(batch * shapes["llm_tokens"] / step_s, 1),
        "frames_per_s": round(batch * shapes["lfr_frames"] / step_s, 1),
        "audio_s_per_s": round(batch * seconds / step_s, 2),  # = audio-hours per wall-clock hour
        "model_tflops_per_step": round(fl["total"] / 1e12, 4),
        "achieved_tflops": round(fl["total"] / step_s / 1e12, 3),
        "mfu": None if peak is None else round(fl["total"] / step_s / (peak * n_dev), 4),
        "mfu_6nd_all": None if peak is None else round(fl["flops_6nd_all"] / step_s / (peak * n_dev), 4),
        "peak_device_flops": peak,
        "flops_formula": "sum_c [2 N_c D_c (x2 if grads flow through c) + 2 N_c,train D_c] + attention "
                         "(4 B S^2 H hd per layer, causal /2, x3 if grads flow)",
        "flops_breakdown": fl,
        "peak_memory_gib": None if (pm := peak_memory_bytes()) is None else round(pm / 2**30, 3),
        "compiled_memory_gib": {k: round(getattr(mem, f"{k}_size_in_bytes") / 2**30, 4)
                                for k in ("argument", "output", "temp", "alias")} if mem is not None else None,
        "compile_s": round(compile_s, 2), "setup_s": round(setup_s, 2), "compiles": st.counter.count,
        "loss": round(loss, 4),
    }
    return rec


def staged_compile(jitted, *abstract_args) -> tuple[Any, dict]:
    """`jitted` traced, lowered and compiled for `abstract_args` (ShapeDtypeStructs), each stage
    timed: (compiled, {"trace_s", "lower_s", "compile_s", "hlo_chars", "hlo_lines", "hlo_ops",
    "optimized_hlo_chars"}). hlo_*: the lowered StableHLO module's text (ops = lines holding an
    `=` assignment: one per op); optimized_hlo_chars: the compiled executable's HLO text."""
    t0 = time.perf_counter()
    traced = jitted.trace(*abstract_args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    text = lowered.as_text()
    lines = text.splitlines()
    try:
        optimized = len(compiled.as_text() or "")
    except Exception:  # noqa: BLE001 - some backends keep no HLO text
        optimized = None
    return compiled, {"trace_s": round(t1 - t0, 3), "lower_s": round(t2 - t1, 3), "compile_s": round(t3 - t2, 3),
                      "hlo_chars": len(text), "hlo_lines": len(lines),
                      "hlo_ops": sum(1 for ln in lines if " = " in ln), "optimized_hlo_chars": optimized}


def compile_only(cfg, *, batch: int, seconds: float, text_tokens=None, mesh_preset=None, seed: int = 0) -> dict:
    """Trace, lower and compile the step the training loop compiles (`steps.accumulate` over
    `optim.accum_steps` micro-batches [k, B, ...], as `train.precompile` does per bucket) for one
    synthetic batch shape, without running it and without allocating parameters: the state and
    the batch are ShapeDtypeStructs carrying the mesh's shardings, so the full preset compiles
    on a host that could never hold it. The persistent compilation cache is not entered (main
    leaves it off), so the seconds are a cold compile's."""
    if cfg.stage.kind == "grpo":
        raise BenchError("--compile-only: a grpo stage has two steps (rollout, update); time one SFT-kind stage")
    t0 = time.perf_counter()
    mesh, rules = mesh_and_rules(cfg.mesh if mesh_preset is None else dataclasses.replace(cfg.mesh, preset=mesh_preset))
    built = setup.build_steps(setup.stage_parts(cfg, total_steps=max(cfg.run.steps, 10)), mesh, rules,
                              seed=seed + 1)
    setup_s = time.perf_counter() - t0
    state = restore_target(built.abstract_state, built.steps.state_shardings)
    host = synthetic_batch(cfg.model, batch, seconds, text_tokens=text_tokens, seed=seed,
                           ctc=cfg.stage.ctc_weight > 0)
    k = cfg.optim.accum_steps
    micro = stacked_abstract(host, k, batch)
    _, rec = staged_compile(built.steps.accumulate, state, micro, abstract_norm())
    shapes = anchor_shapes(seconds, text_tokens)
    return {"preset": cfg.preset, "stage": cfg.stage.name, "mode": "compile_only", "step": "accumulate",
            "micro_batches": k, "scan_layers": cfg.model.scan_layers, "dtype": cfg.model.dtype,
            "remat": cfg.model.remat, "mesh": dict(mesh.shape), "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "jax": jax.__version__, "batch": batch, "audio_s": seconds,
            **shapes, **rec, "total_s": round(rec["trace_s"] + rec["lower_s"] + rec["compile_s"], 3),
            "setup_s": round(setup_s, 2)}


def _compile_table(rec: dict) -> str:
    return _md_table(rec, [("preset", "preset"), ("stage", "stage"), ("scan_layers", "scanned"), ("batch", "B"),
                           ("audio_s", "s"), ("lfr_frames", "T"), ("llm_tokens", "L"), ("trace_s", "trace s"),
                           ("lower_s", "lower s"), ("compile_s", "compile s"), ("hlo_ops", "HLO ops"),
                           ("hlo_chars", "HLO chars")])


def _md_table(rec: dict, cols) -> str:
    """One-row markdown table of `rec`'s fields `cols` [(key, header)] ("-" where missing)."""
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    row = "| " + " | ".join("-" if rec.get(k) is None else str(rec[k]) for k, _ in cols) + " |"
    return "\n".join([head, sep, row])


def _table(rec: dict) -> str:
    return _md_table(rec, [("preset", "preset"), ("batch", "B"), ("audio_s", "s"), ("lfr_frames", "T"),
                           ("llm_tokens", "L"), ("step_ms", "step ms"), ("eval_ms", "eval ms"),
                           ("tokens_per_s", "tok/s"), ("audio_s_per_s", "audio s/s"),
                           ("model_tflops_per_step", "TFLOP/step"), ("mfu", "MFU"),
                           ("peak_memory_gib", "peak GiB"), ("compile_s", "compile s")])


def run_grpo_bench(cfg, *, batch: int, seconds: float, steps: int = 5, warmup: int = 1, text_tokens=None,
                   mesh_preset=None, seed: int = 0) -> dict:
    """Time GRPO steps (a `stage.kind = "grpo"` config) through the trainer's own host step
    (`train.rl_host.GRPOHost`): rollout, reward and update seconds, and RTF = step time / audio
    seconds in the step. Random params sample until the token cap, so rollouts are the longest
    the config allows; the references are the synthetic batch's transcripts."""
    t0 = time.perf_counter()
    mesh, rules, st, state, _, _, info = prepare(cfg, batch=batch, seconds=seconds, text_tokens=text_tokens,
                                                 mesh_preset=mesh_preset, seed=seed)
    setup_s = time.perf_counter() - t0
    tok = load_text_tools(cfg.data)[0]
    host_batch = info["host_batch"]
    refs = [SimpleNamespace(target=tok.decode([int(t) for t in row if 0 <= t < tok.vocab_size]), language=None,
                            hotwords=()) for row in host_batch.labels]
    runner = GRPOHost(cfg, st, tok, refs)
    t1 = time.perf_counter()
    state, m, h = runner.step(state, host_batch)  # compiles rollout and update
    first_s = time.perf_counter() - t1
    split = {"t_rollout": [], "t_reward": [], "t_update": []}
    lens = []
    for i in range(warmup + steps):
        state, m, h = runner.step(state, host_batch)
        if i >= warmup:
            for k in split:
                split[k].append(h[k])
            lens.append(float(m["out_len"]))
    med = {k: statistics.median(v) for k, v in split.items()}
    step_s = sum(med.values())
    audio = batch * seconds
    g = cfg.grpo.group_size
    devs = jax.devices()
    return {"preset": cfg.preset, "stage": cfg.stage.name, "kind": "grpo", "trainable": list(cfg.stage.trainable),
            "dtype": cfg.model.dtype, "mesh": dict(mesh.shape), "device": devs[0].device_kind, "devices": len(devs),
            "backend": jax.default_backend(), "jax": jax.__version__, "batch": batch, "group_size": g,
            "samples": batch * g, "audio_s": seconds, "max_new_tokens": cfg.grpo.max_new_tokens,
            "mean_out_len": round(statistics.mean(lens), 2),
            "rollout_ms": round(1e3 * med["t_rollout"], 2), "reward_ms": round(1e3 * med["t_reward"], 2),
            "update_ms": round(1e3 * med["t_update"], 2), "step_ms": round(1e3 * step_s, 2),
            "steps_per_s": round(1 / step_s, 4), "share": {k[2:]: round(v / step_s, 3) for k, v in med.items()},
            "rtf": round(step_s / audio, 5), "audio_s_per_s": round(audio / step_s, 2),
            "sampled_tokens_per_s": round(batch * g * statistics.mean(lens) / med["t_rollout"], 1),
            "first_step_s_with_compile": round(first_s, 2), "setup_s": round(setup_s, 2),
            "compiles": dict(st.counter.by_name)}


def _grpo_table(rec: dict) -> str:
    return _md_table(rec, [("preset", "preset"), ("batch", "B"), ("group_size", "G"), ("audio_s", "s"),
                           ("mean_out_len", "out len"), ("rollout_ms", "rollout ms"), ("reward_ms", "reward ms"),
                           ("update_ms", "update ms"), ("step_ms", "step ms"), ("steps_per_s", "steps/s"),
                           ("rtf", "RTF"), ("sampled_tokens_per_s", "sampled tok/s"),
                           ("first_step_s_with_compile", "1st step s")])


def _with_torch(cfg, rec: dict, args) -> dict:
    """rec + {"torch": FunASR's step record, "ratio": ours/torch}; prints the comparison table."""

    host = synthetic_batch(cfg.model, args.batch, args.seconds, text_tokens=args.text_tokens, seed=0,
                           ctc=cfg.stage.ctc_weight > 0)
    theirs = torch_compare.run_torch_bench(cfg, host, seconds=args.seconds, steps=args.steps,
                                           warmup=args.warmup, text_tokens=args.text_tokens)
    ratio = torch_compare.compare(rec, theirs)
    mismatch = torch_compare.trainable_mismatch(rec["trainable_params"], theirs["trainable_params"])
    if mismatch:
        print(f"warning: --compare-torch: the trainable sets differ ({mismatch}); the ratio compares "
              "different work", file=sys.stderr)
    ratio["same_trainable_params"] = not mismatch
    print(torch_compare.table(rec, theirs, ratio))
    print(json.dumps({"torch": theirs, "ratio": ratio}))
    return {**rec, "torch": theirs, "ratio": ratio}


def _emit(table: str, rec: dict, out: str | None) -> int:
    """Print the table and the JSON record; write the record to `out` when given. -> exit code 0."""
    print(table)
    print(json.dumps(rec))
    if out:
        with open(out, "w") as f:
            json.dump(rec, f, indent=1)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="configs/<name>.py or a path")
    p.add_argument("--preset", default="tiny", choices=["tiny", "nano", "full"])
    p.add_argument("--batch", type=int, default=8, help="global batch (utterances)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio seconds per utterance")
    p.add_argument("--text-tokens", type=int, default=None, help="transcript tokens (default: anchor rule)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--remat", default=None, help="model.remat (none, block, dots_saveable, encoder:block,...)")
    p.add_argument("--mesh", default=None, help="mesh preset (default: the config's mesh.preset)")
    p.add_argument("--trainable", default="stage", choices=["stage", "all"],
                   help="'all' trains every parameter without LoRA (the PyTorch anchor's setting)")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="A.B=V")
    p.add_argument("--compare-torch", action="store_true",
                   help="then time FunASR's PyTorch FunASRNano step at the same size, batch, trainable set "
                        "and dtype (needs torch, transformers, funasr) and report ours/torch")
    p.add_argument("--compile-only", action="store_true",
                   help="trace, lower and compile the step from abstract shapes (no parameters allocated, "
                        "nothing run, no persistent cache) and report the seconds of each and the HLO size")
    p.add_argument("--out", default=None, help="write the JSON record here")
    args = p.parse_args(argv)
    tune_host_allocator()
    if args.batch < 1 or args.seconds <= 0 or args.steps < 1:
        raise SystemExit("error: --batch, --seconds and --steps must be positive")
    if args.compare_torch:

        try:
            require_torch_funasr()
        except TorchUnavailableError as e:
            print(f"error: --compare-torch: {e}", file=sys.stderr)
            return 2

    initialize_distributed()
    try:
        cfg = load_config(args.config, args.preset, args.set)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    cfg = with_model_overrides(cfg, dtype=args.dtype, remat=args.remat)
    model = cfg.model
    stage = cfg.stage
    if args.trainable == "all":
        stage = dataclasses.replace(stage, trainable=("*",))
        model = model.replace(llm=dataclasses.replace(model.llm, lora=dataclasses.replace(model.llm.lora, rank=0)))
    cfg = dataclasses.replace(cfg, model=model.validate(), stage=stage)
    if args.compile_only:
        if args.compare_torch:
            print("error: --compile-only runs nothing, so there is nothing to compare with torch", file=sys.stderr)
            return 2
        try:
            rec = compile_only(cfg, batch=args.batch, seconds=args.seconds, text_tokens=args.text_tokens,
                               mesh_preset=args.mesh)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return _emit(_compile_table(rec), rec, args.out)
    enable_compilation_cache(cfg.mesh.compilation_cache)
    if cfg.stage.kind == "grpo":
        if args.compare_torch:
            print("error: --compare-torch: FunASR has no public GRPO step to compare with", file=sys.stderr)
            return 2
        rec = run_grpo_bench(cfg, batch=args.batch, seconds=args.seconds, steps=args.steps, warmup=args.warmup,
                             text_tokens=args.text_tokens, mesh_preset=args.mesh)
        return _emit(_grpo_table(rec), rec, args.out)
    rec = run_bench(cfg, batch=args.batch, seconds=args.seconds, steps=args.steps, warmup=args.warmup,
                    text_tokens=args.text_tokens, mesh_preset=args.mesh, eval_step=not args.no_eval)
    print(_table(rec))
    print(json.dumps({k: v for k, v in rec.items() if k != "flops_breakdown"}))
    if args.compare_torch:
        rec = _with_torch(cfg, rec, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
