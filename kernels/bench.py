"""Kernel benchmark: attention and CTC, every available implementation side by side.

    python -m kernels.bench [--out kernels_bench.json] [--only attention|ctc] [--iters 20]
    python -m kernels.bench --smoke --out tmp.json     # tiny shapes, runs on CPU (interpret mode)

Attention (bf16, random data, no padding so every implementation computes the same thing):
  llm      B4 T2048 Hq16 Hkv8 D128 causal (Qwen3-0.6B decoder)
  encoder  B8 T1024 Hq4 Hkv4 D128 bidirectional (audio encoder)
  long     B2 T4096 Hq4 Hkv4 D128 bidirectional (long audio)
  implementations: ours (Pallas GPU), xla, cudnn, jax_pallas_mha (JAX's Pallas/Triton reference
  kernel, kv heads repeated inside the timed region), tokamax (when importable), torch_sdpa
  (CUDA torch). TFLOP/s: forward 4*B*Hq*T*S*D (halved when causal); fwd+bwd counts 3.5x that.
CTC (f32 logits, log-softmax included, blank 0, B16 T500 L100, V 5000 and 60515):
  implementations: ours (Pallas GPU), xla (ours, plain JAX), optax, torch (F.ctc_loss).
Each row: fwd / fwd+bwd milliseconds (median of --iters after warm-up), max |diff| of the forward
against xla, and `speedup_of_ours` = t(impl) / t(ours) (> 1: ours is faster). Printed as a table
and written as JSON (`--out`). A failing implementation yields a row with `error`, never a crash.
"""

from __future__ import annotations

import argparse
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


def _torch_device():
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    if torch.cuda.is_available():
        return "cuda"
    return None if ON_GPU else "cpu"   # on a GPU host a CPU torch would not be a fair row


# ----------------------------------------------------------------------------- attention

def _ran(recorded: dict, name: str) -> str:
    """What a row actually ran: the dispatch's choices, or the row's own name for a direct call."""
    chosen = sorted({n for names in recorded.values() for n in names})
    return "+".join(chosen) if chosen else name


def attention_shapes(smoke: bool):
    if smoke:
        return [("tiny_causal", 1, 32, 2, 1, 16, True)]
    return [("llm", 4, 2048, 16, 8, 128, True), ("encoder", 8, 1024, 4, 4, 128, False),
            ("long", 2, 4096, 4, 4, 128, False)]


def attention_impls(causal: bool, hq: int, hkv: int, smoke: bool):
    # ours / xla / cudnn go through the dispatch by name: a kernel that cannot serve raises (an
    # error row), it is never silently replaced; the row's `ran` says what the dispatch chose.
    def dispatched(name):
        return lambda q, k, v: attention(q, k, v, causal=causal, implementation=name)

    impls = {"ours": dispatched("pallas_gpu"), "xla": dispatched("xla")}
    if ON_GPU:
        impls["cudnn"] = dispatched("cudnn")
    try:
        from jax.experimental.pallas.ops.gpu import attention as jax_mha
        rep = hq // hkv

        def mha(q, k, v):
            if rep > 1:
                k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
            sizes = jax_mha.BlockSizes(block_q=16, block_k=16, block_q_dkv=16, block_kv_dkv=16,
                                       block_q_dq=16, block_kv_dq=16) if smoke else \
                jax_mha.BlockSizes.get_default()
            return jax_mha.mha(q, k, v, None, sm_scale=q.shape[-1] ** -0.5, causal=causal,
                               block_sizes=sizes, interpret=not ON_GPU)
        impls["jax_pallas_mha"] = mha
    except Exception:  # noqa: BLE001
        pass
    if ON_GPU:
        try:
            import tokamax
            impls["tokamax"] = lambda q, k, v: tokamax.dot_product_attention(q, k, v, is_causal=causal)
        except Exception:  # noqa: BLE001
            pass
    return impls


def bench_attention(smoke: bool, iters: int, rows: list):
    dt = jnp.float32 if smoke else jnp.bfloat16
    for label, b, t, hq, hkv, d, causal in attention_shapes(smoke):
        shape = f"B{b} T{t} Hq{hq} Hkv{hkv} D{d} {'causal' if causal else 'bidir'}"
        ks = jax.random.split(jax.random.key(0), 4)
        q = jax.random.normal(ks[0], (b, t, hq, d), dt)
        k = jax.random.normal(ks[1], (b, t, hkv, d), dt)
        v = jax.random.normal(ks[2], (b, t, hkv, d), dt)
        do = jax.random.normal(ks[3], (b, t, hq, d), dt)
        flops = 4 * b * hq * t * t * d / (2 if causal else 1)
        ref = None
        for name, fn in attention_impls(causal, hq, hkv, smoke).items():
            row = dict(op="attention", shape=shape, label=label, impl=name)
            ran: dict = {}
            try:
                with record_selections(ran):   # the dispatch records its choice while tracing
                    fwd = jax.jit(fn)
                    out = fwd(q, k, v).astype(jnp.float32)
                    fb = jax.jit(lambda q, k, v, do, fn=fn: jax.vjp(fn, q, k, v)[1](do))
                    fb(q, k, v, do)
                if name == "xla":
                    ref = out
                row["fwd_ms"] = _time(fwd, q, k, v, iters=iters) * 1e3
                row["fwd_tflops"] = flops / row["fwd_ms"] / 1e9
                row["fwdbwd_ms"] = _time(fb, q, k, v, do, iters=iters) * 1e3
                row["fwdbwd_tflops"] = 3.5 * flops / row["fwdbwd_ms"] / 1e9
                row["_out"] = out
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                traceback.print_exc(limit=2, file=sys.stderr)
            row["ran"] = _ran(ran, name)
            rows.append(row)
        for row in rows:
            if row.get("label") == label and "_out" in row:
                out = row.pop("_out")
                if ref is not None:
                    row["max_abs_diff_vs_xla"] = float(jnp.max(jnp.abs(out - ref)))
        _torch_attention(label, shape, b, t, hq, hkv, d, causal, flops, smoke, iters, rows)


def _torch_attention(label, shape, b, t, hq, hkv, d, causal, flops, smoke, iters, rows):
    dev = _torch_device()
    if dev is None:
        return
    row = dict(op="attention", shape=shape, label=label, impl="torch_sdpa", ran="torch_sdpa")
    try:
        import torch
        import torch.nn.functional as F
        dt = torch.float32 if smoke else torch.bfloat16
        q = torch.randn(b, hq, t, d, device=dev, dtype=dt, requires_grad=True)
        k = torch.randn(b, hkv, t, d, device=dev, dtype=dt, requires_grad=True)
        v = torch.randn(b, hkv, t, d, device=dev, dtype=dt, requires_grad=True)
        do = torch.randn(b, hq, t, d, device=dev, dtype=dt)

        def fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv)

        def fb():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv).backward(do)

        row["fwd_ms"] = _time_torch(fwd, iters) * 1e3
        row["fwd_tflops"] = flops / row["fwd_ms"] / 1e9
        row["fwdbwd_ms"] = _time_torch(fb, iters) * 1e3
        row["fwdbwd_tflops"] = 3.5 * flops / row["fwdbwd_ms"] / 1e9
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    rows.append(row)


# ----------------------------------------------------------------------------- CTC

def ctc_shapes(smoke: bool):
    if smoke:
        return [("tiny", 2, 12, 20, 3)]
    return [("v5000", 16, 500, 5000, 100), ("v60515", 16, 500, 60515, 100)]


def bench_ctc(smoke: bool, iters: int, rows: list):
    for label, b, t, vocab, n in ctc_shapes(smoke):
        shape = f"B{b} T{t} V{vocab} L{n}"
        rng = np.random.default_rng(0)
        logits = jnp.asarray(rng.standard_normal((b, t, vocab), dtype=np.float32))
        labels = jnp.asarray(rng.integers(1, vocab, (b, n)), jnp.int32)
        t_len = jnp.full((b,), t, jnp.int32)
        u_len = jnp.full((b,), n, jnp.int32)

        def ours(impl):
            return lambda x: ctc_loss(x, t_len, labels, u_len, blank_id=0, reduction="sum", implementation=impl)

        impls = {"ours": ours("pallas_gpu"), "xla": ours("xla")}
        try:
            import optax
            zp, yp = jnp.zeros((b, t), jnp.float32), jnp.zeros((b, n), jnp.float32)
            impls["optax"] = lambda x: jnp.sum(optax.ctc_loss(x, zp, labels, yp, blank_id=0))
        except Exception:  # noqa: BLE001
            pass
        ref = None
        for name, fn in impls.items():
            row = dict(op="ctc", shape=shape, label=label, impl=name)
            ran: dict = {}
            try:
                f, fb = jax.jit(fn), jax.jit(jax.value_and_grad(fn))
                with record_selections(ran):   # the dispatch records its choice while tracing
                    val = float(f(logits))
                    fb(logits)
                ref = val if name == "xla" else ref
                row["loss"] = val
                row["fwd_ms"] = _time(f, logits, iters=iters) * 1e3
                row["fwdbwd_ms"] = _time(fb, logits, iters=iters) * 1e3
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                traceback.print_exc(limit=2, file=sys.stderr)
            row["ran"] = _ran(ran, name)
            rows.append(row)
        _torch_ctc(label, shape, np.asarray(logits), np.asarray(labels), t, n, iters, rows)
        for row in rows:
            if row.get("label") == label and "loss" in row and ref is not None:
                row["rel_diff_vs_xla"] = abs(row["loss"] - ref) / max(abs(ref), 1e-9)


def _torch_ctc(label, shape, logits, labels, t, n, iters, rows):
    dev = _torch_device()
    if dev is None:
        return
    row = dict(op="ctc", shape=shape, label=label, impl="torch", ran="torch")
    try:
        import torch
        import torch.nn.functional as F
        b = logits.shape[0]
        x = torch.tensor(logits, device=dev, requires_grad=True)
        y = torch.tensor(labels, device=dev, dtype=torch.long)
        il = torch.full((b,), t, device=dev, dtype=torch.long)
        tl = torch.full((b,), n, device=dev, dtype=torch.long)

        def loss():
            return F.ctc_loss(F.log_softmax(x, -1).transpose(0, 1), y, il, tl, blank=0, reduction="sum")

        def fwd():
            with torch.no_grad():
                return loss()

        row["loss"] = float(fwd())
        row["fwd_ms"] = _time_torch(fwd, iters) * 1e3
        row["fwdbwd_ms"] = _time_torch(lambda: loss().backward(), iters) * 1e3
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    rows.append(row)


# ----------------------------------------------------------------------------- report

def add_ratios(rows):
    """speedup_of_ours_{fwd,fwdbwd} = t(impl) / t(ours) on the same op and shape."""
    ours = {(r["op"], r["label"]): r for r in rows if r["impl"] == "ours" and "error" not in r}
    for r in rows:
        o = ours.get((r["op"], r["label"]))
        if o is None or "error" in r:
            continue
        for m in ("fwd", "fwdbwd"):
            if f"{m}_ms" in r and f"{m}_ms" in o:
                r[f"speedup_of_ours_{m}"] = r[f"{m}_ms"] / o[f"{m}_ms"]


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, Pallas interpret mode)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--only", choices=("attention", "ctc"), default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (median)")
    args = ap.parse_args(argv)
    iters = args.iters or (1 if args.smoke else 20)
    rows: list[dict] = []
    if args.only in (None, "attention"):
        bench_attention(args.smoke, iters, rows)
    if args.only in (None, "ctc"):
        bench_ctc(args.smoke, iters, rows)
    add_ratios(rows)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, device {device_kind()}")
    print_table(rows)
    if args.out:
        meta = dict(jax=jax.__version__, backend=jax.default_backend(), device=device_kind(),
                    smoke=args.smoke, iters=iters)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1, default=float)
        print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
