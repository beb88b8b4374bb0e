"""Data loader benchmark: audio seconds per second the training loader delivers, JSONL + files vs shards.

    python -m funasr_jax.data.bench [--jsonl data/demo/train.jsonl] [--shards DIR] [--workers 0,2]
        [--batches 40] [--max-utts 1200] [--gpu-rate 10500] [--out bench.json]

For each source — the JSONL and its files; the same rows as shards (packed by `data.pack` into a
folder under the temp dir, kept for later runs, when `--shards` is not given; the pack time is
reported) — and each worker count (`data.num_workers`: grain worker processes; 0 = in this process
with `data.num_threads` threads), the training loader (`datasets.make_train_data`: read + decode +
fbank/LFR features + prompt + padding; no augmentation, its caches off) runs `--warmup` batches,
then `--batches` batches are timed. Reported per row: audio seconds delivered per wall second, CPU
seconds spent by this process and its worker processes (Linux /proc; all threads), audio seconds
per CPU second (the per-core rate), and the host cores one accelerator consuming `--gpu-rate`
audio-s/s would need at that per-core rate. The timed batches lie in one epoch (no row twice); the
files are in the OS page cache after the first pass, so the figures are for warm local storage, not
a cold shared file system.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from funasr_jax.data.config import DataConfig, StepNeeds
from funasr_jax.data.datasets import make_train_data
from funasr_jax.data.manifest import read_manifests
from funasr_jax.data.pack import pack
from funasr_jax.text.tokenizer import load_tokenizer

__all__ = ["main", "run_bench", "tree_cpu_seconds"]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


def tree_cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of process `pid` (default: this one) and all its descendants (Linux /proc)."""
    pid = os.getpid() if pid is None else pid
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        stats[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    if pid not in stats:
        return None
    keep, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (pp, _) in stats.items() if pp == parent and p not in keep]
        keep.update(kids)
        frontier.extend(kids)
    return sum(stats[p][1] for p in keep)


def _measure(cfg: DataConfig, examples, tok, warmup: int, batches: int) -> dict:
    data = make_train_data(cfg, examples, tok, needs=StepNeeds(ctc_labels=False))
    it = data.iterator()
    for _ in range(warmup):
        next(it)
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    audio = 0.0
    rows = 0
    for _ in range(batches):
        b = next(it)
        real = np.asarray(b.weight) > 0
        audio += float(np.asarray(b.audio_seconds)[real].sum())
        rows += int(real.sum())
    wall, cpu1 = time.perf_counter() - t0, tree_cpu_seconds()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    getattr(it, "close", lambda: None)()  # stop prefetch threads / worker processes before the next row
    return {"batches": batches, "rows": rows, "audio_s": round(audio, 2), "wall_s": round(wall, 3),
            "audio_s_per_s": round(audio / wall, 1), "cpu_s": None if cpu is None else round(cpu, 2),
            "audio_s_per_cpu_s": None if not cpu else round(audio / cpu, 1)}


def run_bench(jsonl: str, shards: str | None, workers: list[int], batches: int, warmup: int, max_utts: int,
              batch_size: int, gpu_rate: float, tokenizer: str, log=print) -> dict:
    out: dict = {"host_cores": os.cpu_count(), "gpu_rate_audio_s_per_s": gpu_rate, "rows": []}
    if shards is None:  # packed once into a folder kept for later runs (the loader's threads may outlive a row)
        shards = os.path.join(tempfile.gettempdir(), "funasr_jax_bench_shards_" +
                              hashlib.sha1(os.path.abspath(jsonl).encode()).hexdigest()[:10])
        fresh = not os.path.exists(os.path.join(shards, "shards.json"))
        t0 = time.perf_counter()
        pack([("jsonl", jsonl)], shards, shard_size=1000, workers=min(2, os.cpu_count() or 1), log=lambda s: None)
        if fresh:
            out["pack_s"] = round(time.perf_counter() - t0, 1)
        log(f"shards: {shards}" + (f" (packed in {out['pack_s']} s)" if fresh else " (packed before)"))
    out["shards"] = shards
    log(HEADER)
    tok = load_tokenizer(tokenizer)
    sources = {"jsonl+files": read_manifests([jsonl])[:max_utts], "shards": read_manifests([shards])[:max_utts]}
    cfg = DataConfig(train_files=(jsonl,), tokenizer=tokenizer, batch_size=batch_size, noise_prob=0.0,
                     audio_cache_mb=0, feature_cache_mb=0, seed=0)
    for w in workers:
        for name, exs in sources.items():
            r = _measure(dataclasses.replace(cfg, num_workers=w), exs, tok, warmup, batches)
            per_core = r["audio_s_per_cpu_s"]
            r.update({"source": name, "workers": w,
                      "cores_for_gpu": None if not per_core else round(gpu_rate / per_core, 1)})
            out["rows"].append(r)
            log(_row_line(r))
    return out


HEADER = (f"{'source':<12} {'workers':>7} {'rows':>5} {'audio s':>8} {'wall s':>7} {'audio-s/s':>10} "
          f"{'CPU s':>7} {'audio-s/CPU-s':>13} {'cores/GPU':>9}")


def _row_line(r: dict) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:g}"  # noqa: E731
    return (f"{r['source']:<12} {r['workers']:>7} {r['rows']:>5} {r['audio_s']:>8.1f} {r['wall_s']:>7.2f} "
            f"{r['audio_s_per_s']:>10.1f} {fmt(r['cpu_s']):>7} {fmt(r['audio_s_per_cpu_s']):>13} "
            f"{fmt(r['cores_for_gpu']):>9}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_jax.data.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jsonl", default=str(DEMO / "train.jsonl"), help="FunASR JSONL (default: the demo train split)")
    ap.add_argument("--shards", default=None, help="shards of the same rows (default: pack them into a temp dir)")
    ap.add_argument("--tokenizer", default=str(DEMO / "tokenizer.model"))
    ap.add_argument("--workers", default="0,2", help="comma-separated data.num_workers values")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-utts", type=int, default=0, help="rows used (0: all)")
    ap.add_argument("--gpu-rate", type=float, default=10500.0, help="audio-s/s one accelerator consumes")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    workers = [int(w) for w in a.workers.split(",") if w.strip()]
    print(f"host: {os.cpu_count()} cores; cores/GPU = cores one accelerator at {a.gpu_rate:g} audio-s/s needs")
    res = run_bench(a.jsonl, a.shards, workers, a.batches, a.warmup, a.max_utts or sys.maxsize, a.batch_size,
                    a.gpu_rate, a.tokenizer)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
