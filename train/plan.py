"""Memory planner: per-device bytes of a training step, without allocating anything.

    python -m train.plan --config sft4.py --preset nano --mesh 8xa100-80g --batch 32 --seconds 30

Per device, for each mesh layout that fits the device count:
  params      every leaf / its shard count (the sharding rules on an AbstractMesh)
  opt_state   `jax.eval_shape(tx.init)` of the stage's optimizer (frozen leaves have no state)
  grads       f32 gradients of the trainable leaves, sharded like the params
  activations the residuals a backward pass keeps, read from the jaxpr of `jax.vjp(loss)`
              (arguments and stop_gradient'ed params excluded), per block type, measured on a
              skeleton model (one layer per stack) and one more layer per stack type, then
              scaled to the real layer counts; divided by the batch shards (data x fsdp).
              With remat, one block's full residuals are added (recomputed during backward).
              The LLM loss never holds [B, L, V] logits (`funasr_jax.models.losses`: the LM
              head runs on one chunk of scored positions at a time, its gradient formed in the
              same pass): one chunk's [rows per device, chunk, V] f32 terms are added per device.
  batch       the input arrays
Tensor parallelism is not credited on activations (conservative). The verdict compares the
total with `usable` = capacity x memory fraction (JAX preallocates 75% of a GPU by default;
XLA_PYTHON_CLIENT_MEM_FRACTION=.95 raises it).

Attention: `--attention xla` plans the plain XLA attention, which keeps the [B, H, T, S] f32
probabilities; `--attention flash` plans a flash kernel (cuDNN / Pallas), which keeps only
q, k, v, out and the log-sum-exp: the residuals are traced with the Pallas flash kernel's
custom_vjp (tracing only, nothing runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.configtools import ConfigError
from funasr_jax.models.axes import logical_axes_for
from funasr_jax.models.funasr import FunASRNano, lm_head_params
from funasr_jax.models.losses import chunk_positions, chunk_stats
from sharding.mesh import MESH_PRESETS, MeshError, mesh_shape
from sharding.rules import get_rules
from sharding.specs import opt_state_shardings, param_shardings
from train import setup
from train.main import load_config, with_model_overrides
from train.synthetic import anchor_shapes, synthetic_batch

GIB = 2 ** 30

# Memory per device in GiB as the runtime reports it (nominal "80 GB" cards show ~79 GiB).
DEVICE_MEMORY_GIB = {
    "a100-40g": 39.4, "a100-80g": 79.2, "h100-80g": 79.1, "h200-141g": 139.8,
    "tpu-v4": 32.0, "tpu-v5e": 16.0, "tpu-v6e": 32.0, "cpu": 24.0,
}
DEFAULT_MEM_FRACTION = {"a100": 0.75, "h100": 0.75, "h200": 0.75, "tpu": 1.0, "cpu": 1.0}

STACKS = ("encoder", "tp_encoder", "adaptor", "llm", "ctc")


class PlanError(ValueError):
    """Bad planner arguments (names the flag)."""


def parse_devices(spec: str) -> tuple[int, str]:
    """'8xa100-80g' -> (8, 'a100-80g')."""
    m = re.fullmatch(r"(\d+)x([\w-]+)", spec.strip().lower())
    if not m or m.group(2) not in DEVICE_MEMORY_GIB:
        raise PlanError(f"--mesh {spec!r}: expected <count>x<device> with device one of {sorted(DEVICE_MEMORY_GIB)}")
    return int(m.group(1)), m.group(2)


def candidate_presets(n: int) -> list[str]:
    out = []
    for name in MESH_PRESETS:
        try:
            mesh_shape(name, n)
        except MeshError:
            continue
        if name == "auto" and n == 8:
            continue  # same as 8x-data
        out.append(name)
    return out


def _nbytes(x) -> int:
    return int(math.prod(x.shape)) * jnp.dtype(x.dtype).itemsize


def _shard_factor(spec, sizes) -> int:
    f = 1
    for e in spec:
        for a in (e,) if isinstance(e, str) else (e or ()):
            f *= sizes.get(a, 1)
    return f


def sharded_bytes(tree, shardings, sizes) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    shs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: hasattr(s, "spec"))
    return int(sum(_nbytes(x) // _shard_factor(s.spec, sizes) for x, s in zip(leaves, shs)))


def residual_bytes(fn, *args, keep=None) -> tuple[int, int]:
    """(bytes, largest tensor) of what `jax.vjp(fn, args[0])` keeps for the backward pass.

    Arguments and values that only pass through stop_gradient are not counted (they are the
    params / inputs themselves); keep(aval) -> bool, if given, selects the residuals counted.
    """
    def vjp(p, *rest):
        return jax.vjp(lambda q: fn(q, *rest), p)

    closed, shapes = jax.make_jaxpr(vjp, return_shape=True)(*args)
    jp = closed.jaxpr
    n_res = len(jax.tree_util.tree_leaves(shapes[1]))
    invars = set(jp.invars)
    producer = {}
    for e in jp.eqns:
        for o in e.outvars:
            producer[o] = e
    seen, total, largest = set(), 0, 0
    for v in jp.outvars[len(jp.outvars) - n_res:]:
        if not hasattr(v, "aval") or hasattr(v, "val"):  # literal
            continue
        src = v
        while src in producer and producer[src].primitive.name == "stop_gradient":
            src = producer[src].invars[0]
        if src in invars or id(v) in seen or (keep is not None and not keep(v.aval)):
            continue
        seen.add(id(v))
        nb = _nbytes(v.aval)
        total += nb
        largest = max(largest, nb)
    return total, largest


def _skeleton(model_cfg, extra: str | None):
    e, a, q, c = model_cfg.encoder, model_cfg.adaptor, model_cfg.llm, model_cfg.ctc
    n = {"encoder": 2 if e.num_blocks >= 2 else 1, "tp_encoder": min(1, e.tp_blocks), "adaptor": min(1, a.n_layer),
         "llm": 1, "ctc": min(1, c.decoder.n_layer)}
    if extra:
        n[extra] += 1
    cfg = model_cfg.replace(
        encoder=dataclasses.replace(e, num_blocks=n["encoder"], tp_blocks=n["tp_encoder"]),
        adaptor=dataclasses.replace(a, n_layer=n["adaptor"]),
        llm=dataclasses.replace(q, num_hidden_layers=n["llm"]),
        ctc=dataclasses.replace(c, decoder=dataclasses.replace(c.decoder, n_layer=n["ctc"])),
    )
    return cfg, n


def stack_counts(model_cfg) -> dict[str, int]:
    e = model_cfg.encoder
    return {"encoder": e.num_blocks, "tp_encoder": e.tp_blocks, "adaptor": model_cfg.adaptor.n_layer,
            "llm": model_cfg.llm.num_hidden_layers,
            "ctc": model_cfg.ctc.decoder.n_layer if model_cfg.ctc.enabled else 0}


def activation_plan(cfg, batch_sds, *, attention: str = "xla") -> dict:
    """Residual bytes for the GLOBAL batch: per block type per layer, and totals for remat none /
    the config's remat / block."""
    impl = "pallas_gpu" if attention == "flash" else "xla"
    norm = {"tokens": jax.ShapeDtypeStruct((), jnp.float32), "utts": jax.ShapeDtypeStruct((), jnp.float32)}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    counts = stack_counts(cfg.model)

    def measure(model_cfg):
        parts = setup.stage_parts(dataclasses.replace(cfg, model=model_cfg), total_steps=10)
        return residual_bytes(parts.frozen_loss, parts.abstract_params, batch_sds, rng, norm)

    out = {}
    for remat in dict.fromkeys(["none", cfg.model.remat, "block"]):
        base_cfg, base_n = _skeleton(cfg.model.replace(remat=remat, attention_impl=impl), None)
        r0, big0 = measure(base_cfg)
        per_layer, total, largest = {}, r0, big0
        for s in STACKS:
            extra = counts[s] - base_n[s]
            if counts[s] == 0 or (extra == 0 and remat != "none"):
                continue
            cfg_s, _ = _skeleton(cfg.model.replace(remat=remat, attention_impl=impl), s)
            rs, bs = measure(cfg_s)
            per_layer[s] = max(0, rs - r0)
            total += extra * per_layer[s]
            largest = max(largest, bs)
        out[remat] = {"saved_total": total, "per_layer": per_layer, "largest_tensor": largest}
    full = out["none"]["per_layer"]
    for remat, rec in out.items():
        # Under remat, backward recomputes one block at a time: add the largest block's residuals.
        rec["recompute_peak"] = 0 if remat == "none" else max(full.values(), default=0)
        rec["total"] = rec["saved_total"] + rec["recompute_peak"]
    return out


def loss_chunk_bytes(parts, rows: int, length: int) -> tuple[int, int]:
    """(bytes, positions per row) of one chunk of the LLM loss while its gradient is formed: what
    differentiating `losses.chunk_stats` keeps per position (its [rows, chunk, V] f32 logits /
    softmax statistics), for `rows` rows per device of `length` tokens. The head weight's
    compute-dtype copy is not counted (the full-logits loss held it too). (0, 0) without an LLM
    loss."""
    if parts.weights.llm <= 0 or length < 2:
        return 0, 0
    chunk = chunk_positions(rows, length - 1)
    llm = parts.cfg.model.llm
    h = jax.ShapeDtypeStruct((rows, chunk, llm.hidden_size), jnp.dtype(parts.cfg.model.dtype))
    targets = jax.ShapeDtypeStruct((rows, chunk), jnp.int32)
    valid = jax.ShapeDtypeStruct((rows, chunk), jnp.bool_)

    def head(w, x):
        return parts.model.apply({"params": w}, x, method=FunASRNano.lm_logits)

    def one(x, w, t, m):
        return chunk_stats(head, w, x, t, m)[0]

    per_position = lambda aval: tuple(aval.shape[:2]) == (rows, chunk)  # noqa: E731
    return residual_bytes(one, h, lm_head_params(parts.abstract_params), targets, valid, keep=per_position)[0], chunk


def plan(cfg, *, n_devices: int, device: str, batch: int, seconds: float, text_tokens=None, presets=None,
         attention: str = "xla", mem_fraction: float | None = None) -> dict:
    """The plan as a dict (see module docstring). `cfg` is a validated TrainConfig."""
    t0 = time.perf_counter()
    model_cfg = cfg.model
    parts = setup.stage_parts(cfg, total_steps=max(10, cfg.run.steps))
    ab, mask = parts.abstract_params, parts.mask
    opt = jax.eval_shape(parts.tx.init, ab)
    host = synthetic_batch(model_cfg, 1, seconds, text_tokens=text_tokens, ctc=cfg.stage.ctc_weight > 0)
    batch_sds = host.on_device_fields().map(lambda v: jax.ShapeDtypeStruct((batch,) + v.shape[1:], v.dtype))
    acts = activation_plan(cfg, batch_sds, attention=attention)
    rules = get_rules(cfg.mesh.rules, cfg.mesh.rule_overrides)
    capacity = DEVICE_MEMORY_GIB[device]
    frac = mem_fraction if mem_fraction is not None else DEFAULT_MEM_FRACTION.get(device.split("-")[0], 0.75)
    usable = capacity * frac * GIB
    trainable_tree = [x for x, m in zip(jax.tree_util.tree_leaves(ab), jax.tree_util.tree_leaves(mask)) if m]

    layouts = []
    for preset in presets or candidate_presets(n_devices):
        sizes = mesh_shape(preset, n_devices)
        amesh = jax.sharding.AbstractMesh(tuple(sizes.values()), tuple(sizes))
        psh = param_shardings(ab, amesh, rules, logical_axes_for)
        osh = opt_state_shardings(opt, ab, psh, amesh)
        shards = sizes["data"] * sizes["fsdp"]
        if batch % shards:
            layouts.append({"preset": preset, "mesh": sizes, "error": f"batch {batch} not divisible by {shards} batch shards"})
            continue
        p_b = sharded_bytes(ab, psh, sizes)
        o_b = sharded_bytes(opt, osh, sizes)
        g_tree = [s for s, m in zip(jax.tree_util.tree_leaves(psh, is_leaf=lambda s: hasattr(s, "spec")),
                                    jax.tree_util.tree_leaves(mask)) if m]
        g_b = int(sum(_nbytes(x) // _shard_factor(s.spec, sizes) for x, s in zip(trainable_tree, g_tree)))
        b_b = sum(_nbytes(v) for v in batch_sds.arrays().values()) // shards
        static = p_b + o_b + g_b + b_b
        loss_b, chunk = loss_chunk_bytes(parts, batch // shards, batch_sds.input_ids.shape[1])
        rec = {"preset": preset, "mesh": sizes, "params": p_b, "opt_state": o_b, "grads": g_b, "batch": b_b,
               "llm_loss_chunk": loss_b, "llm_loss_chunk_positions": chunk,
               "activations": {}, "total": {}, "fits": {}}
        for remat, a in acts.items():
            act = a["total"] // shards + loss_b
            rec["activations"][remat] = act
            rec["total"][remat] = static + act
            rec["fits"][remat] = static + act <= usable
        layouts.append(rec)
    shapes = anchor_shapes(seconds, text_tokens)
    return {
        "preset": cfg.preset, "stage": cfg.stage.name, "trainable": list(cfg.stage.trainable),
        "dtype": model_cfg.dtype, "attention": attention, "devices": n_devices, "device": device,
        "capacity_gib": capacity, "mem_fraction": frac, "usable_gib": round(usable / GIB, 2),
        "batch": batch, "seconds": seconds, **shapes,
        "params_total": int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(ab))),
        "params_trainable": int(sum(math.prod(x.shape) for x in trainable_tree)),
        "activations_global": {k: {"total": v["total"], "per_layer": v["per_layer"],
                                   "largest_tensor": v["largest_tensor"]} for k, v in acts.items()},
        "layer_counts": stack_counts(model_cfg), "layouts": layouts, "plan_s": round(time.perf_counter() - t0, 2),
    }


def format_plan(p: dict) -> str:
    g = lambda b: f"{b / GIB:.2f}"  # noqa: E731
    lines = [f"{p['preset']} / {p['stage']}: {p['params_total']:,} params, {p['params_trainable']:,} trainable; "
             f"dtype {p['dtype']}; batch {p['batch']} x {p['seconds']} s (T={p['lfr_frames']} frames, "
             f"L={p['llm_tokens']} tokens); attention {p['attention']}",
             f"{p['devices']} x {p['device']}: {p['capacity_gib']} GiB each, usable {p['usable_gib']} GiB "
             f"(memory fraction {p['mem_fraction']})", "",
             "saved activations per layer, whole batch (GiB):"]
    for remat, a in p["activations_global"].items():
        per = ", ".join(f"{k} {g(v)} x{p['layer_counts'][k]}" for k, v in a["per_layer"].items())
        lines.append(f"  remat={remat}: total {g(a['total'])}; {per}")
    remats = list(p["activations_global"])
    lines += ["", "| mesh | params | opt | grads | batch | loss chunk | " + " | ".join(f"act ({r})" for r in remats)
              + " | " + " | ".join(f"total ({r})" for r in remats) + " |",
              "|---" * (6 + 2 * len(remats)) + "|"]
    for L in p["layouts"]:
        if "error" in L:
            lines.append(f"| {L['preset']} | {L['error']} |")
            continue
        lines.append(f"| {L['preset']} | {g(L['params'])} | {g(L['opt_state'])} | {g(L['grads'])} | {g(L['batch'])} | "
                     f"{g(L['llm_loss_chunk'])} | " + " | ".join(g(L["activations"][r]) for r in remats) + " | "
                     + " | ".join(f"{g(L['total'][r])} {'fits' if L['fits'][r] else 'NO'}" for r in remats) + " |")
    lines.append(f"(GiB per device; act includes the loss chunk: the LLM loss's logits, [rows per device, "
                 f"chunk, V] f32 (chunk = llm_loss_chunk_positions in --json); planned in {p['plan_s']} s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.plan", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--preset", default="nano", choices=["tiny", "nano", "full"])
    ap.add_argument("--mesh", default="8xa100-80g", help="<count>x<device>, device in " + ", ".join(DEVICE_MEMORY_GIB))
    ap.add_argument("--mesh-preset", action="append", default=None, help="mesh layout(s) to plan (default: all that fit)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--text-tokens", type=int, default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--remat", default=None, help="model.remat to plan besides none and block")
    ap.add_argument("--attention", default=None, choices=["xla", "flash"],
                    help="attention kernel to plan (default: flash on GPU/TPU devices, xla on cpu)")
    ap.add_argument("--mem-fraction", type=float, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="A.B=V")
    ap.add_argument("--json", default=None, help="also write the plan here")
    args = ap.parse_args(argv)

    try:
        n, device = parse_devices(args.mesh)
        cfg = load_config(args.config, args.preset, args.set)
    except (ConfigError, PlanError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = with_model_overrides(cfg, dtype=args.dtype, remat=args.remat)
    attention = args.attention or ("xla" if device == "cpu" else "flash")
    p = plan(cfg, n_devices=n, device=device, batch=args.batch, seconds=args.seconds, text_tokens=args.text_tokens,
             presets=args.mesh_preset, attention=attention, mem_fraction=args.mem_fraction)
    print(format_plan(p))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(p, f, indent=1, default=lambda o: int(o) if isinstance(o, np.integer) else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
