"""The training loop: init or resume, jitted steps, progress, metrics, eval, checkpoints, signals.

`train(cfg)` runs one stage described by a validated `TrainConfig` and returns a summary dict.
An SFT stage compiles its step once per bucket before step 1 (`train.precompile`; figures in
summary.json "compile") and then runs one jitted call per optimizer step: its k = optim.accum_steps
micro-batches stacked [k, B, ...] (`train.step.StepFns.accumulate`).

Run safety: the run directory is locked for the process's life (`train.run_lock`: a second trainer
refuses at once, `RunLockedError`); a resume takes the newest checkpoint that verifies
(`TrainCheckpointer.restore` falls back past damaged ones); every step's loss and gradient norm are
checked before anything is saved (`run.on_nonfinite`: "stop" raises `NonFiniteError` naming the
step, "skip" leaves that update out); metrics.jsonl rows after the resumed step are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from funasr_jax import configtools
from funasr_jax.host_memory import resident_bytes
from funasr_jax.io.checkpoint import META_FILE, TRAIN_CONFIG_FILE, CheckpointError, load_model, write_meta
from funasr_jax.io.hf_qwen3 import llm_params_from_hf, qwen3_config_from_hf
from funasr_jax.models.funasr import component_counts, init_params
from funasr_jax.models.stack import LayoutError, to_layout
from funasr_jax.models.llm_init import encoder_block_paths, init_encoder_from_llm, llm_layer_paths
from funasr_jax.models.lora import count_adapter_params, fold_lora
from sharding.paths import flatten, unflatten
from train import setup
from train.checkpointing import TrainCheckpointer
from train.config import TrainConfig, parse_layer_map
from train.data import TrainData
from train.distributed import enable_compilation_cache
from train.evaluation import evaluate_split
from train.precompile import precompile
from train.metric_sinks import open_sinks
from train.progress import MetricsLog, Progress, plot_curves
from train.run_lock import RunLock
from train.rl_host import GRPOHost
from train.sharded import replicate, restore_target, shard_micro_batches, shard_state
from train.step import step_counts


class StopRequested(Exception):
    pass


class NonFiniteError(RuntimeError):
    """A step's loss or gradient norm was not finite (`run.on_nonfinite="stop"`): names the step;
    nothing after the previous checkpoint was saved."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def merged_model_config(cfg: TrainConfig, source_cfg):
    """Architecture from the init source, the rest and every `--set` model field from this run (`setup.init_from_model_config`)."""
    return setup.init_from_model_config(cfg, source_cfg)


def initial_params(cfg: TrainConfig, model_cfg, rng, source=None):
    """Fresh params, overwritten by every matching tensor of `run.init_from` (LoRA stays fresh).

    source: `run.init_from` already loaded (a `LoadedModel`), so it is not read twice.
    """
    fresh = jax.tree_util.tree_map(np.asarray, init_params(model_cfg, rng))
    if not cfg.run.init_from:
        return encoder_from_llm(cfg, fresh, {})
    src = source if source is not None else load_model(cfg.run.init_from)
    try:  # the source's layers per-layer or stacked, as this run keeps them (bit-exact)
        have = flatten(to_layout(src.params, fresh))
    except LayoutError as e:
        raise SystemExit(f"error: run.init_from {cfg.run.init_from}: {e}") from None
    new = flatten(fresh)
    taken, kept_fresh = 0, []
    for path, v in new.items():
        if path in have and tuple(np.shape(have[path])) == tuple(v.shape):
            new[path] = np.asarray(have[path], dtype=v.dtype)
            taken += 1
        else:
            kept_fresh.append("/".join(path))
    non_lora = [p for p in kept_fresh if "lora_" not in p]
    if non_lora:
        warnings.warn(f"init_from {cfg.run.init_from}: {len(non_lora)} tensors not found there are "
                      f"randomly initialised (e.g. {non_lora[:3]})")
    return encoder_from_llm(cfg, unflatten(new), {"init_from": cfg.run.init_from, "tensors_loaded": taken,
                                                  "tensors_fresh": len(kept_fresh)})


def encoder_from_llm(cfg: TrainConfig, params, info: dict):
    """`run.encoder_from_llm`: the encoder blocks of `params` taken from Qwen3 layers (llm_init)."""
    if not cfg.run.encoder_from_llm:
        return params, info
    path = Path(cfg.run.encoder_from_llm)
    try:
        if (path / "config.json").exists() and not (path / META_FILE).exists():  # a Hugging Face Qwen3 folder
            llm_cfg = qwen3_config_from_hf(json.loads((path / "config.json").read_text()), str(path / "config.json"))
            llm = llm_params_from_hf(path, llm_cfg)
        else:
            llm = load_model(path).params["llm"]
    except (CheckpointError, OSError, ValueError) as e:
        raise SystemExit(f"error: run.encoder_from_llm: {e}") from None
    pairs = parse_layer_map(cfg.run.encoder_llm_layers)
    if not pairs:
        n_enc, n_llm = len(encoder_block_paths(params["audio_encoder"])), len(llm_layer_paths(llm))
        pairs = [(e, e - 1) for e in range(1, min(n_enc, n_llm + 1))]
    try:
        enc, report = init_encoder_from_llm(params["audio_encoder"], llm, pairs, gqa=cfg.run.encoder_llm_gqa,
                                            encoder_heads=cfg.model.encoder.attention_heads)
    except (ValueError, IndexError) as e:
        raise SystemExit(f"error: run.encoder_from_llm {path} (run.encoder_llm_layers {pairs}): {e}") from None
    print(f"encoder from LLM {path}: {len(report.copied)} tensors copied for blocks <- layers {pairs}, "
          f"{len(report.zeroed)} biases zeroed, {len(report.skipped)} left as initialised", file=sys.stderr)
    return {**params, "audio_encoder": enc}, {**info, "encoder_from_llm": str(path), "encoder_llm_layers": pairs,
                                              "encoder_tensors_from_llm": len(report.copied)}


def folded_source(source):
    """`source` with its LoRA adapters merged into the base weights (a GRPO stage's reference is
    its start model without the new adapters, so trained adapters must become part of the base)."""
    if source is None or source.cfg.llm.lora.rank <= 0 or count_adapter_params(source.params) == 0:
        return source
    cfg = source.cfg.replace(llm=dataclasses.replace(source.cfg.llm, lora=dataclasses.replace(source.cfg.llm.lora,
                                                                                             rank=0)))
    print(f"init_from {source.source}: its LoRA adapters are folded into the base weights", file=sys.stderr)
    return dataclasses.replace(source, params=fold_lora(source.params, source.cfg.llm.lora), cfg=cfg)


def train(cfg: TrainConfig, *, stop_after: int | None = None) -> dict:
    """Run one stage. `stop_after` (tests): simulate an interruption after that many steps.

    Raises RunLockedError (another trainer holds out_dir), CheckpointError (no checkpoint of out_dir
    restores), NonFiniteError (run.on_nonfinite="stop"), OSError (a write failed: disk full,
    read-only, permission; `CheckpointWriteError` for a checkpoint, older ones untouched)."""
    cfg.validate()
    enable_compilation_cache(cfg.mesh.compilation_cache)  # before anything compiles
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, jax.process_index()).acquire()  # before anything in out_dir is written
    try:
        return _train(cfg, out, stop_after)
    finally:
        lock.release()


def _train(cfg: TrainConfig, out: Path, stop_after: int | None) -> dict:
    source = None
    if cfg.run.init_from:
        try:
            source = load_model(cfg.run.init_from)
        except CheckpointError as e:
            raise SystemExit(f"error: run.init_from: {e}") from None
        if cfg.stage.kind == "grpo":
            source = folded_source(source)
    model_cfg = merged_model_config(cfg, None if source is None else source.cfg)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    (out / TRAIN_CONFIG_FILE).write_text(json.dumps(configtools.to_dict(cfg), indent=2, ensure_ascii=False))

    data = TrainData(cfg)
    write_meta(out, model_cfg, tokenizer_path=cfg.data.tokenizer, ctc_tokenizer_path=cfg.data.ctc_tokenizer,
               frontend=cfg.frontend, first_pass_prompt=cfg.data.first_pass_prompt,
               ctc_weight=cfg.run.decode_ctc_weight)
    ckpt = TrainCheckpointer(out, cfg.run.keep)
    resuming = cfg.run.resume and ckpt.latest_step() is not None
    built = setup.prepare(cfg)
    steps, mesh, mask = built.steps, built.mesh, built.parts.mask
    grpo = GRPOHost(cfg, steps, data.tokenizer, data.examples) if cfg.stage.kind == "grpo" else None

    resumed_from, init_info = None, {}
    if resuming:  # the checkpoint holds the params: only their shapes are needed
        # the newest checkpoint that verifies, restores and sets the data position (older ones if not)
        state, _ = ckpt.restore(restore_target(built.abstract_state, steps.state_shardings),
                                accept=lambda _state, data_state: data.restore(data_state))
        state = shard_state(state, steps.state_shardings)
        resumed_from = int(state["step"])
        print(f"resumed from {ckpt.dir}/{resumed_from}", file=sys.stderr)
    else:
        params, init_info = initial_params(cfg, model_cfg, jax.random.PRNGKey(cfg.run.seed), source)
        state = built.init_state(shard_state(params, steps.state_shardings["params"]))
        del params
    del source  # the init_from params are in the state now (or unused when resuming)

    counts = component_counts(state["params"])
    trainable = int(sum(np.size(p) for p, m in zip(jax.tree_util.tree_leaves(state["params"]),
                                                     jax.tree_util.tree_leaves(mask)) if m))
    print(f"stage {cfg.stage.name}: preset {cfg.preset}, params " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
          + f"; trainable {trainable:,}", file=sys.stderr)

    accum = cfg.optim.accum_steps
    compiled = None
    if grpo is None:  # every bucket's step, before step 1; the loop never compiles again
        compiled = precompile(steps.accumulate, restore_target(built.abstract_state, steps.state_shardings),
                              data.templates(), micro_batches=accum, rows=cfg.data.batch_size)

    start = int(state["step"])
    log = MetricsLog(out / "metrics.jsonl", sinks=open_sinks(cfg.run, out, configtools.to_dict(cfg),
                                                               primary=jax.process_index() == 0, start_step=start))
    if jax.process_index() == 0:  # rows a resume (or a fresh start over an old log) would repeat
        dropped = log.rewind(start, drop_dev_at_step=start >= cfg.run.steps and cfg.run.eval_at_end)
        if dropped:
            print(f"{log.path}: dropped {dropped} rows after step {start} (they are logged again)", file=sys.stderr)
    progress = Progress(cfg.run.steps, start, enabled=cfg.run.progress)
    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
        print(f"\nsignal {signum}: saving a checkpoint at the end of this step", file=sys.stderr)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    window = _new_window()
    step = start

    def checked_save():
        _read_pending(window, cfg, ckpt)  # no non-finite step goes into a checkpoint
        ckpt.save(state, data.state())

    try:
        while step < cfg.run.steps:
            t_data = time.time()
            micro = [data.next_train() for _ in range(accum)]
            window["data_s"] += time.time() - t_data
            if grpo is not None:
                state, metrics, host = grpo.step(state, micro[0])
                for k, v in host.items():
                    if isinstance(v, float):
                        window["sums"][k] = window["sums"].get(k, 0.0) + v
                window["samples"] = host["samples"]
            else:
                norm = replicate(step_counts(micro), mesh)
                state, metrics = compiled(state, shard_micro_batches(micro, mesh), norm)
            step += 1
            window["steps"] += 1
            window["audio"] += float(sum(np.asarray(b.audio_seconds).sum() for b in micro))
            # Metrics stay on the device until the log line: reading them every step would wait for
            # the step to finish, so the host could not load the next batch while it runs. They are
            # summed on the host then (adding device scalars would compile little programs mid-run).
            window["pending"].append((step, metrics))
            if step % cfg.run.log_every == 0 or step == cfg.run.steps:
                _read_pending(window, cfg, ckpt)
                row = _summarise(window, step, cfg)
                log.write(row)
                progress.update(step, row)
                window = _new_window()
            if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.steps:
                _evaluate(cfg, model_cfg, state["params"], data, log, step)
            if cfg.run.save_every and step % cfg.run.save_every == 0:
                checked_save()
            if stop["flag"] or (stop_after is not None and step - start >= stop_after):
                checked_save()
                raise StopRequested
        if ckpt.latest_step() != step:
            checked_save()
        progress.close()
        result = (_evaluate(cfg, model_cfg, state["params"], data, log, step, final=True)
                  if cfg.run.eval_at_end else {})
        plot_curves(out / "metrics.jsonl", out / "curves.png")
        summary = {"stage": cfg.stage.name, "steps": step, "out_dir": str(out), "resumed_from": resumed_from,
                   **init_info, "mesh": dict(mesh.shape), "compiles": dict(steps.counter.by_name),
                   "compile": compiled.summary() if compiled is not None else None,
                   "kernels": dict(steps.counter.kernels), "eval": result}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        return summary
    except StopRequested:
        progress.close()
        print(f"stopped at step {step}; checkpoint saved in {ckpt.dir}. Run the same command to resume.",
              file=sys.stderr)
        return {"stage": cfg.stage.name, "steps": step, "out_dir": str(out), "interrupted": True}
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        log.close()
        ckpt.close()


def _new_window() -> dict:
    """Accumulators of one log interval: steps, audio seconds, start time, seconds waiting for
    batches, each step's (step, device metrics) (read at the log line or before a save), the
    metric sums (host floats) and the steps skipped as non-finite."""
    return {"steps": 0, "audio": 0.0, "t": time.time(), "data_s": 0.0, "pending": [], "sums": {}, "skipped": 0}


NONFINITE_KEYS = ("loss", "grad_norm")  # checked every step (train.step skips on the same two)


def _read_pending(window, cfg: TrainConfig, ckpt: TrainCheckpointer) -> None:
    """Bring the window's pending step metrics to the host, checking each step's loss and gradient
    norm: "stop" raises NonFiniteError at the first bad step; "skip" leaves it out of the sums (its
    update was not applied on the device) with a warning line."""
    pending, window["pending"] = window["pending"], []
    if not pending:
        return
    for (step, _), m in zip(pending, jax.device_get([m for _, m in pending])):
        bad = {k: float(m[k]) for k in NONFINITE_KEYS if k in m and not math.isfinite(float(m[k]))}
        if bad:
            what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bad.items())
            if cfg.run.on_nonfinite == "stop":
                last = ckpt.latest_step()
                kept = f"newest checkpoint {ckpt.step_dir(last)}" if last is not None else "no checkpoint saved"
                raise NonFiniteError(f"step {step}: {what}; training stopped before saving it "
                                     f"(run.on_nonfinite=stop; {kept})", step)
            window["skipped"] += 1
            print(f"warning: step {step}: {what}; its update was skipped (run.on_nonfinite=skip)", file=sys.stderr)
            continue
        for k, v in m.items():
            window["sums"][k] = window["sums"].get(k, 0.0) + float(v)


def _summarise(window, step, cfg) -> dict:
    s = window["sums"]
    dt = max(time.time() - window["t"], 1e-9)
    good = max(window["steps"] - window["skipped"], 1)  # steps whose metrics are in the sums
    row = {"step": step, "split": "train", "time": time.time(), "loss": s["loss"] / good if "loss" in s else float("nan"),
           "steps_per_s": window["steps"] / dt, "audio_s_per_s": window["audio"] / dt,
           "data_share": window["data_s"] / dt}  # of the wall time, spent waiting for the host's batches
    if (rss := resident_bytes()) is not None:
        row["host_rss_gib"] = round(rss / 2**30, 3)  # this process's resident memory
    if s.get("llm_count"):
        row["llm_loss"] = s["llm_sum"] / s["llm_count"]
        row["llm_acc"] = s["llm_correct"] / s["llm_count"]
    if s.get("ctc_count"):
        row["ctc_loss"] = s["ctc_sum"] / s["ctc_count"]
    if s.get("aed_count"):
        row["aed_loss"] = s["aed_sum"] / s["aed_count"]
        row["aed_acc"] = s["aed_correct"] / s["aed_count"]
    if s.get("bestrq_count"):
        row["bestrq_loss"] = s["bestrq_sum"] / s["bestrq_count"]
        row["bestrq_acc"] = s["bestrq_correct"] / s["bestrq_count"]
    n = good
    if window["skipped"]:
        row["skipped"] = window["skipped"]
    if "grad_norm" in s:
        row["grad_norm"] = s["grad_norm"] / n
    for key in s:  # per-step means of a grpo stage
        if key in GRPO_MEANS or key.startswith("r/"):
            row[key] = s[key] / n
    if window.get("samples"):
        row["samples"] = window["samples"]
    return row


# Per-step metrics of a grpo stage averaged over the log interval (and "r/<name>": each reward component).
GRPO_MEANS = ("reward", "kl", "clip_frac", "ratio", "entropy", "out_len", "adv_abs", "t_rollout", "t_reward",
              "t_update")


def _evaluate(cfg: TrainConfig, model_cfg, params, data, log, step, final=False):
    """Decoded dev error rates (LLM decoding; AED greedy for an AED stage; CTC greedy for CTC-only stages;
    none for Best-RQ alone)."""
    if cfg.stage.llm_weight == 0 and cfg.stage.ctc_weight == 0 and cfg.stage.aed_weight == 0:
        return {}  # a Best-RQ-only stage has no decoder to score (its masked-prediction loss is in metrics.jsonl)
    mode = "llm" if cfg.stage.llm_weight > 0 else "aed" if cfg.stage.aed_weight > 0 else "ctc"
    files = cfg.data.dev_files
    if not files:
        return {}
    res = evaluate_split(model_cfg, params, cfg.data, cfg.frontend, files, data.tokenizer, data.ctc_vocab, mode=mode,
                         max_utts=cfg.run.eval_max_utts, max_new_tokens=cfg.run.decode_max_tokens,
                         ctc_weight=cfg.run.decode_ctc_weight if mode == "llm" else 0.0)
    row = {"step": step, "split": "dev", "time": time.time(), "mode": mode, **res["summary"]}
    log.write(row)
    overall = res["summary"].get("error_rate")
    if overall is not None and math.isfinite(overall):
        print(f"step {step} dev ({mode}): error rate {overall:.2%} "
              + " ".join(f"{k.split('/')[1]}={v['rate']:.2%}" for k, v in res["breakdown"].items()
                         if k.startswith("language/")), file=sys.stderr)
    return res["summary"]
