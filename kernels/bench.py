"""Kernel benchmark: attention and CTC, the implementations side by side, most important rows first.

    python -m kernels.bench [--out kernels_bench.json] [--only attention|ctc] [--iters 10] [--budget-s S]
    python -m kernels.bench --smoke --out tmp.json     # tiny shapes, runs on CPU (interpret mode)

Rows run in three phases, and the JSON (`--out`) is rewritten after EVERY row, so a run stopped
from outside (a time cap) keeps every row it finished:
  1. production shapes (the nano model's 32 x 30 s training batch) x the implementations that
     matter: attention `ours` (our Pallas kernel), `cudnn`, `xla`, `torch_sdpa`; CTC `ours`,
     `xla`, `torch` (F.ctc_loss);
  2. the reference shapes of the H200 anchor measurements x the same implementations;
  3. every shape x the rest: `jax_pallas_mha` (JAX's Pallas/Triton reference kernel, kv heads
     repeated inside the timed region), `tokamax` (when importable), `optax` (CTC).
`--budget-s S`: no row starts after S seconds (the rows left out are listed under `not_run`).

Shapes (bf16 attention, random data, no padding so every implementation computes the same thing):
  enc_32x30  B32 T500  Hq4  Hkv4 D128 bidirectional   (audio encoder, 30 s = 500 LFR frames)
  llm_32x30  B32 T192  Hq16 Hkv8 D128 causal          (Qwen3-0.6B decoder, 23 + 63 + 100 tokens)
  ctc_32x30  B32 T500  V60515 L100, f32 logits        (the Fun-ASR CTC vocabulary)
  anchors:   llm B4 T2048 Hq16 Hkv8 D128 causal, encoder B8 T1024 Hq4 Hkv4 D128, long B2 T4096
             Hq4 Hkv4 D128, CTC B16 T500 L100 at V 60515 and 5000.
TFLOP/s: forward 4*B*Hq*T*S*D (halved when causal); fwd+bwd counts 3.5x that.
Each row: fwd / fwd+bwd milliseconds (median of --iters after 2 warm-up calls), what the dispatch
actually ran (`ran`), max |diff| of the forward against xla, `speedup_of_ours_*` = t(impl) / t(ours)
(> 1: ours is faster). A failing implementation yields a row with `error`, never a crash.
Torch rows need CUDA torch on a GPU host (CPU torch elsewhere); JAX must not preallocate the GPU
(XLA_PYTHON_CLIENT_PREALLOCATE=false, as tools/gpu_check.py sets) or torch has no memory left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from kernels._common import device_kind
from kernels._dispatch import record_selections
from kernels.attention import attention
from kernels.ctc import ctc_loss

ON_GPU = jax.default_backend() == "gpu"
ATTENTION_MAIN = ("ours", "cudnn", "xla", "torch_sdpa")
ATTENTION_EXTRA = ("jax_pallas_mha", "tokamax")
CTC_MAIN = ("ours", "xla", "torch")
CTC_EXTRA = ("optax",)


@dataclasses.dataclass(frozen=True)
class AttnShape:
    label: str
    b: int
    t: int
    hq: int
    hkv: int
    d: int
    causal: bool

    @property
    def text(self) -> str:
        return f"B{self.b} T{self.t} Hq{self.hq} Hkv{self.hkv} D{self.d} {'causal' if self.causal else 'bidir'}"

    @property
    def flops(self) -> float:
        """Forward FLOPs: 4*B*Hq*T*S*D, halved when causal."""
        return 4 * self.b * self.hq * self.t * self.t * self.d / (2 if self.causal else 1)


@dataclasses.dataclass(frozen=True)
class CTCShape:
    label: str
    b: int
    t: int
    vocab: int
    n: int

    @property
    def text(self) -> str:
        return f"B{self.b} T{self.t} V{self.vocab} L{self.n}"


def shapes(smoke: bool) -> dict[str, list]:
    """{"production": [...], "anchors": [...]} of AttnShape / CTCShape, production first."""
    if smoke:
        return {"production": [AttnShape("tiny_enc", 2, 32, 2, 2, 16, False), AttnShape("tiny_llm", 2, 16, 2, 1, 16, True),
                               CTCShape("tiny_ctc", 2, 12, 20, 3)],
                "anchors": [CTCShape("tiny_ctc_v40", 2, 12, 40, 3)]}
    return {"production": [AttnShape("enc_32x30", 32, 500, 4, 4, 128, False),
                           AttnShape("llm_32x30", 32, 192, 16, 8, 128, True),
                           CTCShape("ctc_32x30", 32, 500, 60515, 100)],
            "anchors": [AttnShape("llm", 4, 2048, 16, 8, 128, True), AttnShape("encoder", 8, 1024, 4, 4, 128, False),
                        CTCShape("v60515", 16, 500, 60515, 100), AttnShape("long", 2, 4096, 4, 4, 128, False),
                        CTCShape("v5000", 16, 500, 5000, 100)]}


def plan(smoke: bool, only: str | None = None) -> list[tuple[object, str]]:
    """The (shape, implementation) pairs in the order they run (see the module docstring)."""
    table = shapes(smoke)
    main = lambda s: ATTENTION_MAIN if isinstance(s, AttnShape) else CTC_MAIN   # noqa: E731
    extra = lambda s: ATTENTION_EXTRA if isinstance(s, AttnShape) else CTC_EXTRA   # noqa: E731
    keep = lambda s: only is None or (only == "attention") == isinstance(s, AttnShape)   # noqa: E731
    out = [(s, i) for phase in ("production", "anchors") for s in table[phase] if keep(s) for i in main(s)]
    out += [(s, i) for phase in ("production", "anchors") for s in table[phase] if keep(s) for i in extra(s)]
    return out


# ----------------------------------------------------------------------------- timing

def _time(fn, *args, iters: int, warm: int = 2) -> float:
    for _ in range(warm):
        jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _time_torch(fn, iters: int, warm: int = 2) -> float:
    import torch
    cuda = torch.cuda.is_available()
    for _ in range(warm):
        fn()
    if cuda:
        torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


class Unavailable(Exception):
    """This implementation does not exist here (no GPU, library not importable): no row."""


def _torch_device() -> str:
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"torch not importable ({type(e).__name__})") from None
    if torch.cuda.is_available():
        return "cuda"
    if ON_GPU:   # on a GPU host a CPU torch would not be a fair row
        raise Unavailable("torch has no CUDA here")
    return "cpu"


def _release_torch() -> None:
    """Hand torch's cached GPU blocks back, so the JAX rows after a torch row have the memory."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _ran(recorded: dict, name: str) -> str:
    """What a row actually ran: the dispatch's choices, or the row's own name for a direct call."""
    chosen = sorted({n for names in recorded.values() for n in names})
    return "+".join(chosen) if chosen else name


# ----------------------------------------------------------------------------- attention

def _attention_fn(impl: str, s: AttnShape, smoke: bool):
    """q, k, v -> out for one implementation (raises Unavailable where it does not exist)."""
    if impl in ("ours", "xla", "cudnn"):
        # through the dispatch by name: a kernel that cannot serve raises (an error row), it is
        # never silently replaced; the row's `ran` says what the dispatch chose.
        if impl == "cudnn" and not ON_GPU:
            raise Unavailable("cudnn needs a GPU")
        name = {"ours": "pallas_gpu"}.get(impl, impl)
        return lambda q, k, v: attention(q, k, v, causal=s.causal, implementation=name)
    if impl == "jax_pallas_mha":
        try:
            from jax.experimental.pallas.ops.gpu import attention as jax_mha
        except Exception as e:  # noqa: BLE001
            raise Unavailable(f"jax pallas mha not importable ({type(e).__name__})") from None
        rep = s.hq // s.hkv

        def mha(q, k, v):
            if rep > 1:
                k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
            sizes = jax_mha.BlockSizes(block_q=16, block_k=16, block_q_dkv=16, block_kv_dkv=16,
                                       block_q_dq=16, block_kv_dq=16) if smoke else jax_mha.BlockSizes.get_default()
            return jax_mha.mha(q, k, v, None, sm_scale=q.shape[-1] ** -0.5, causal=s.causal,
                               block_sizes=sizes, interpret=not ON_GPU)
        return mha
    if impl == "tokamax":
        if not ON_GPU:
            raise Unavailable("tokamax rows only on a GPU")
        try:
            import tokamax
        except Exception as e:  # noqa: BLE001
            raise Unavailable(f"tokamax not importable ({type(e).__name__})") from None
        return lambda q, k, v: tokamax.dot_product_attention(q, k, v, is_causal=s.causal)
    raise ValueError(f"unknown attention implementation {impl!r}")


def _attention_inputs(s: AttnShape, smoke: bool):
    dt = jnp.float32 if smoke else jnp.bfloat16
    ks = jax.random.split(jax.random.key(0), 4)
    return (jax.random.normal(ks[0], (s.b, s.t, s.hq, s.d), dt), jax.random.normal(ks[1], (s.b, s.t, s.hkv, s.d), dt),
            jax.random.normal(ks[2], (s.b, s.t, s.hkv, s.d), dt), jax.random.normal(ks[3], (s.b, s.t, s.hq, s.d), dt))


def attention_row(s: AttnShape, impl: str, smoke: bool, iters: int, inputs, outs: dict) -> dict:
    """One timed row; `outs[(label, impl)]` keeps the f32 forward output for the diff vs xla."""
    row = dict(op="attention", shape=s.text, label=s.label, impl=impl, ran=impl)
    if impl == "torch_sdpa":
        return {**row, **_torch_attention(s, smoke, iters)}
    fn = _attention_fn(impl, s, smoke)
    q, k, v, do = inputs
    ran: dict = {}
    try:
        with record_selections(ran):   # the dispatch records its choice while tracing
            fwd = jax.jit(fn)
            out = fwd(q, k, v).astype(jnp.float32)
            fb = jax.jit(lambda q, k, v, do: jax.vjp(fn, q, k, v)[1](do))
            jax.block_until_ready(fb(q, k, v, do))
        row["fwd_ms"] = _time(fwd, q, k, v, iters=iters) * 1e3
        row["fwd_tflops"] = s.flops / row["fwd_ms"] / 1e9
        row["fwdbwd_ms"] = _time(fb, q, k, v, do, iters=iters) * 1e3
        row["fwdbwd_tflops"] = 3.5 * s.flops / row["fwdbwd_ms"] / 1e9
        outs[(s.label, impl)] = out
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        traceback.print_exc(limit=2, file=sys.stderr)
    row["ran"] = _ran(ran, impl)
    return row


def _torch_attention(s: AttnShape, smoke: bool, iters: int) -> dict:
    dev = _torch_device()
    try:
        import torch
        import torch.nn.functional as F
        dt = torch.float32 if smoke else torch.bfloat16
        q = torch.randn(s.b, s.hq, s.t, s.d, device=dev, dtype=dt, requires_grad=True)
        k = torch.randn(s.b, s.hkv, s.t, s.d, device=dev, dtype=dt, requires_grad=True)
        v = torch.randn(s.b, s.hkv, s.t, s.d, device=dev, dtype=dt, requires_grad=True)
        do = torch.randn(s.b, s.hq, s.t, s.d, device=dev, dtype=dt)
        gqa = s.hq != s.hkv

        def fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=s.causal, enable_gqa=gqa)

        def fb():
            F.scaled_dot_product_attention(q, k, v, is_causal=s.causal, enable_gqa=gqa).backward(do)

        row = {"fwd_ms": _time_torch(fwd, iters) * 1e3}
        row["fwd_tflops"] = s.flops / row["fwd_ms"] / 1e9
        row["fwdbwd_ms"] = _time_torch(fb, iters) * 1e3
        row["fwdbwd_tflops"] = 3.5 * s.flops / row["fwdbwd_ms"] / 1e9
        return row
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


# ----------------------------------------------------------------------------- CTC

def _ctc_inputs(s: CTCShape):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((s.b, s.t, s.vocab), dtype=np.float32)
    labels = rng.integers(1, s.vocab, (s.b, s.n)).astype(np.int32)
    return logits, labels


def ctc_row(s: CTCShape, impl: str, iters: int, inputs, outs: dict) -> dict:
    """One timed row (loss = the batch sum, log-softmax included); `outs[(label, impl)]` = loss."""
    row = dict(op="ctc", shape=s.text, label=s.label, impl=impl, ran=impl)
    logits_np, labels_np = inputs
    if impl == "torch":
        return {**row, **_torch_ctc(s, logits_np, labels_np, iters, outs)}
    logits, labels = jnp.asarray(logits_np), jnp.asarray(labels_np)
    t_len = jnp.full((s.b,), s.t, jnp.int32)
    u_len = jnp.full((s.b,), s.n, jnp.int32)
    if impl in ("ours", "xla"):
        name = {"ours": "pallas_gpu"}.get(impl, impl)

        def fn(x):
            return ctc_loss(x, t_len, labels, u_len, blank_id=0, reduction="sum", implementation=name)
    elif impl == "optax":
        try:
            import optax
        except Exception as e:  # noqa: BLE001
            raise Unavailable(f"optax not importable ({type(e).__name__})") from None
        zp, yp = jnp.zeros((s.b, s.t), jnp.float32), jnp.zeros((s.b, s.n), jnp.float32)

        def fn(x):
            return jnp.sum(optax.ctc_loss(x, zp, labels, yp, blank_id=0))
    else:
        raise ValueError(f"unknown CTC implementation {impl!r}")
    ran: dict = {}
    try:
        f, fb = jax.jit(fn), jax.jit(jax.value_and_grad(fn))
        with record_selections(ran):   # the dispatch records its choice while tracing
            val = float(f(logits))
            jax.block_until_ready(fb(logits))
        row["loss"] = val
        row["fwd_ms"] = _time(f, logits, iters=iters) * 1e3
        row["fwdbwd_ms"] = _time(fb, logits, iters=iters) * 1e3
        outs[(s.label, impl)] = val
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        traceback.print_exc(limit=2, file=sys.stderr)
    row["ran"] = _ran(ran, impl)
    return row


def _torch_ctc(s: CTCShape, logits, labels, iters, outs) -> dict:
    dev = _torch_device()
    try:
        import torch
        import torch.nn.functional as F
        x = torch.tensor(logits, device=dev, requires_grad=True)
        y = torch.tensor(labels, device=dev, dtype=torch.long)
        il = torch.full((s.b,), s.t, device=dev, dtype=torch.long)
        tl = torch.full((s.b,), s.n, device=dev, dtype=torch.long)

        def loss():
            return F.ctc_loss(F.log_softmax(x, -1).transpose(0, 1), y, il, tl, blank=0, reduction="sum")

        def fwd():
            with torch.no_grad():
                return loss()

        row = {"loss": float(fwd())}
        row["fwd_ms"] = _time_torch(fwd, iters) * 1e3
        row["fwdbwd_ms"] = _time_torch(lambda: loss().backward(), iters) * 1e3
        outs[(s.label, "torch")] = row["loss"]
        return row
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


# ----------------------------------------------------------------------------- report

def add_comparisons(rows: list[dict], outs: dict) -> None:
    """speedup_of_ours_{fwd,fwdbwd} = t(impl) / t(ours) on the same op and shape; the forward's
    difference to xla (attention: max |diff|; CTC: relative difference of the loss)."""
    ours = {(r["op"], r["label"]): r for r in rows if r["impl"] == "ours" and "error" not in r}
    for r in rows:
        if "error" in r:
            continue
        o = ours.get((r["op"], r["label"]))
        for m in ("fwd", "fwdbwd"):
            if o is not None and f"{m}_ms" in r and f"{m}_ms" in o:
                r[f"speedup_of_ours_{m}"] = r[f"{m}_ms"] / o[f"{m}_ms"]
        ref, got = outs.get((r["label"], "xla")), outs.get((r["label"], r["impl"]))
        if ref is None or got is None:
            continue
        if r["op"] == "attention":
            r["max_abs_diff_vs_xla"] = float(jnp.max(jnp.abs(got - ref)))
        else:
            r["rel_diff_vs_xla"] = abs(got - ref) / max(abs(ref), 1e-9)


def print_table(rows):
    cols = ["op", "label", "impl", "ran", "fwd_ms", "fwdbwd_ms", "fwd_tflops", "fwdbwd_tflops",
            "speedup_of_ours_fwd", "speedup_of_ours_fwdbwd"]

    def fmt(x):
        if x is None:
            return ""
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    table = [cols] + [[fmt(r.get(c)) if "error" not in r or c in ("op", "label", "impl", "ran")
                       else ("ERROR" if c == "fwd_ms" else "") for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for i, row in enumerate(table):
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if "error" in r:
            print(f"[{r['op']} {r['label']} {r['impl']}] {r['error']}")


def write_json(path: str, meta: dict, rows: list[dict], not_run: list[str], done: bool) -> None:
    """Atomically (tmp file + rename) write {"meta", "rows", "not_run", "done"} to `path`."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": rows, "not_run": not_run, "done": done}, f, indent=1, default=float)
    os.replace(tmp, path)


def run(smoke: bool, iters: int, only: str | None = None, budget_s: float | None = None,
        out: str | None = None, meta: dict | None = None) -> list[dict]:
    """Every planned row in order, `out` rewritten after each; rows not started within `budget_s`
    seconds are listed as `not_run` ("label impl")."""
    t0 = time.perf_counter()
    rows: list[dict] = []
    outs: dict = {}
    inputs: dict = {}
    todo = plan(smoke, only)
    not_run = [f"{s.label} {i}" for s, i in todo]
    for n, (s, impl) in enumerate(todo):
        if budget_s is not None and time.perf_counter() - t0 >= budget_s:
            print(f"[kernels.bench] budget of {budget_s:g} s spent: {len(todo) - n} rows not run", flush=True)
            break
        not_run.remove(f"{s.label} {impl}")
        if s.label not in inputs:
            inputs.clear()   # one shape's arrays at a time (the CTC logits are GBs)
            inputs[s.label] = _attention_inputs(s, smoke) if isinstance(s, AttnShape) else _ctc_inputs(s)
        t_row = time.perf_counter()
        try:
            row = (attention_row(s, impl, smoke, iters, inputs[s.label], outs) if isinstance(s, AttnShape)
                   else ctc_row(s, impl, iters, inputs[s.label], outs))
        except Unavailable as e:
            print(f"[kernels.bench] {s.label} {impl}: unavailable ({e})", flush=True)
            continue
        if impl in ("torch_sdpa", "torch"):
            _release_torch()   # its tensors are gone with the row's frame
        row["wall_s"] = round(time.perf_counter() - t_row, 2)
        rows.append(row)
        add_comparisons(rows, outs)
        summary = "ERROR " + row["error"][:100] if "error" in row else \
            f"fwd {row.get('fwd_ms', 0):.3f} ms, fwd+bwd {row.get('fwdbwd_ms', 0):.3f} ms"
        print(f"[kernels.bench] {row['op']} {s.label} {impl} ({row['ran']}): "
              f"{summary} [{row['wall_s']} s]", flush=True)
        if out:
            write_json(out, meta or {}, rows, not_run, done=False)
    if out:
        write_json(out, meta or {}, rows, not_run, done=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, Pallas interpret mode)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here (after every row)")
    ap.add_argument("--only", choices=("attention", "ctc"), default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (median; default 10)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no row after this many seconds")
    args = ap.parse_args(argv)
    iters = args.iters or (1 if args.smoke else 10)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), device=device_kind(), smoke=args.smoke,
                iters=iters)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, device {device_kind()}", flush=True)
    rows = run(args.smoke, iters, args.only, args.budget_s, args.out, meta)
    print_table(rows)
    if args.out:
        print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
