"""One call on a fresh GPU machine: install what is missing, run the GPU tests and every benchmark.

    bash tools/gpu_check.sh [--smoke] [--out DIR] [--budget-s 480]

Steps (each a subprocess under its own time cap, all under one overall budget; a step that fails
or runs out of time is recorded and the next one runs):
  install     when one of INSTALLABLE does not import: `pip install --no-index --no-deps --target
              /tmp/funasr_jax_site .whl/*.whl` (the wheels come from tools/fetch_gpu_wheels.sh, carried
              with the tree, ignored by git); that folder is on every later step's PYTHONPATH
  gpu_tests   pytest -m gpu on the test files that carry the mark
  kernels     python -m kernels.bench
  train_*     python -m train.bench, nano sft4 bf16 at 16x10 s (with --compare-torch when FunASR's
              model code imports), 32x30 s, 48x30 s
  transcribe  python -m funasr_jax.bench (nano, bf16, batch 1,16)
  anchor_*    shared/tools/anchor_*.py (PYTHONPATH gets .torchref/ when present)
Exit status 1 when any step failed or timed out. Results: $OUT/gpu_check.json (every step: command, rc, status, wall_s, output tail, its JSON) and
$OUT/gpu_check.md (a summary table plus the benchmark rows). OUT: --out, else $OUT, else ./out.
--smoke: the same steps at tiny sizes on CPU (tiny preset, batch 1-2, SMOKE=1 for the anchors).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALLABLE = ("grain", "jiwer", "soundfile", "soxr", "kaldi_native_fbank", "rapidfuzz")  # tokamax: see fetch_gpu_wheels.sh
SITE = Path(os.environ.get("FUNASR_JAX_GPU_SITE", "/tmp/funasr_jax_site"))  # where carried wheels go


def wheel_dir() -> Path | None:
    """The carried wheels: .whl/ (the device tool's convention) or wheels/, whichever holds some."""
    for d in (REPO / ".whl", REPO / "wheels"):
        if d.is_dir() and any(d.glob("*.whl")):
            return d
    return None
TAIL_CHARS = 3000


def shared_tools() -> Path | None:
    """shared/tools inside the repo (the device machine's layout) or next to it (a worktree's)."""
    for d in (REPO / "shared" / "tools", REPO.parent / "shared" / "tools"):
        if d.is_dir():
            return d
    return None


def torch_funasr_importable(env: dict) -> bool:
    code = "import torch, transformers, funasr.models.fun_asr_nano.model"
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def plan(smoke: bool, out: Path, compare_torch: bool) -> list[dict]:
    """The steps: {name, cmd (argv), cap_s (seconds), json (file the step writes, or None), env}."""
    py = sys.executable
    tb = [py, "-m", "train.bench", "--config", "sft4.py", "--no-eval"]
    steps = []
    missing = [m for m in INSTALLABLE if importlib.util.find_spec(m) is None]
    wheels = wheel_dir()
    if missing:
        files = sorted(str(w) for w in wheels.glob("*.whl")) if wheels else []
        steps.append({"name": "install", "cap_s": 90, "json": None,
                      "cmd": [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                              "--no-cache-dir", "--upgrade", "--target", str(SITE), *files],
                      "skip": None if files else (f"not importable: {missing}, and no wheels in .whl/ or wheels/ "
                                                  "(make them with tools/fetch_gpu_wheels.sh)")})
    gpu_files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                       if "mark.gpu" in p.read_text())
    steps.append({"name": "gpu_tests", "cap_s": 60 if not smoke else 60, "json": None,
                  "cmd": [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_files]})
    kb = out / "kernels_bench.json"
    steps.append({"name": "kernels", "cap_s": 50, "json": kb,
                  "cmd": [py, "-m", "kernels.bench", "--out", str(kb)] + (["--smoke"] if smoke else [])})
    if smoke:
        shapes = [(1, 2.0, True)]
        preset, dtype, steps_n = "tiny", "float32", ["--steps", "1", "--warmup", "1"]
    else:
        shapes = [(16, 10.0, True), (32, 30.0, False), (48, 30.0, False)]
        preset, dtype, steps_n = "nano", "bfloat16", ["--steps", "5", "--warmup", "2"]
    for b, s, cmp in shapes:
        f = out / f"train_{b}x{s:g}.json"
        steps.append({"name": f"train_{b}x{s:g}", "cap_s": 70 if smoke else (100 if cmp else 55), "json": f,
                      "cmd": tb + ["--preset", preset, "--dtype", dtype, "--batch", str(b), "--seconds", str(s),
                                   "--out", str(f), *steps_n] + (["--compare-torch"] if cmp and compare_torch else [])})
    ib = out / "transcribe.json"
    steps.append({"name": "transcribe", "cap_s": 60, "json": ib,
                  "cmd": [py, "-m", "funasr_jax.bench", "--out", str(ib)]
                  + (["--smoke"] if smoke else ["--preset", "nano", "--dtype", "bfloat16", "--batch", "1,16"])
                  + ([] if compare_torch else ["--no-torch"])})
    tools = shared_tools()
    for name, cap in (("anchor_gpu_bench", 45), ("anchor_torch_train_bench", 45), ("anchor_torch_infer_bench", 30)):
        res = {"anchor_gpu_bench": "anchors.json", "anchor_torch_train_bench": "torch_train.json",
               "anchor_torch_infer_bench": "torch_infer.json"}[name]
        # smoke: the three run side by side on 2 CPU cores
        step = {"name": name, "cap_s": cap * 2 if smoke else cap, "json": out / "anchors" / res,
                "cmd": [py, str(tools / f"{name}.py")] if tools else [], "env": {"OUT": str(out / "anchors")}}
        if tools is None:
            step["skip"] = "shared/tools not found"
        elif name.startswith("anchor_torch") and not compare_torch:
            step["skip"] = "torch / FunASR model code not importable"
        steps.append(step)
    return steps


def run_step(step: dict, env: dict, left_s: float) -> dict:
    """Run one step with timeout min(cap_s, left_s); returns its record."""
    rec = {"name": step["name"], "cmd": " ".join(step["cmd"]), "cap_s": step["cap_s"]}
    if step.get("skip"):
        return {**rec, "status": "skipped", "reason": step["skip"], "wall_s": 0.0}
    limit = min(step["cap_s"], left_s)
    if limit < 5:
        return {**rec, "status": "skipped", "reason": "overall budget spent", "wall_s": 0.0}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(step["cmd"], cwd=REPO, env={**env, **step.get("env", {})}, capture_output=True,
                           text=True, timeout=limit)
        rc, text, status = p.returncode, (p.stdout or "") + (p.stderr or ""), "ok" if p.returncode == 0 else "failed"
        if step["name"] == "gpu_tests" and rc == 5:  # pytest: nothing selected / all deselected
            status = "ok"
    except subprocess.TimeoutExpired as e:
        rc, status = None, "timeout"
        text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    rec.update(status=status, rc=rc, wall_s=round(time.perf_counter() - t0, 1), limit_s=round(limit, 1),
               tail=text[-TAIL_CHARS:])
    f = step.get("json")
    if f is not None and Path(f).exists():
        try:
            rec["result"] = json.loads(Path(f).read_text())
        except json.JSONDecodeError as e:
            rec["result_error"] = f"{f}: {e}"
    return rec


def run_parallel(steps: list[dict], env: dict, left_s: float) -> list[dict]:
    """Smoke only (CPU, timings meaningless): run `steps` side by side, each as `run_step` would."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(steps)) as pool:
        return list(pool.map(lambda st: run_step(st, env, left_s), steps))


def _num(v):
    return "-" if v is None else str(v)


def markdown(report: dict) -> str:
    """Summary table of the steps, then the train and transcription rows."""
    lines = [f"# gpu_check ({'smoke' if report['smoke'] else 'full'}), {report['total_s']} s", "",
             "| step | status | wall s | note |", "|---|---|---|---|"]
    for r in report["steps"]:
        note = r.get("reason") or ("" if r["status"] == "ok" else (r.get("tail") or "").strip().splitlines()[-1:] or [""])
        note = note if isinstance(note, str) else note[0]
        lines.append(f"| {r['name']} | {r['status']} | {r['wall_s']} | {note[:120].replace('|', '/')} |")
    train = [r for r in report["steps"] if r["name"].startswith("train_") and isinstance(r.get("result"), dict)]
    if train:
        lines += ["", "## train step", "",
                  "| shape | preset | dtype | step ms | steps/s | audio s/s | MFU | peak GiB | compile s | torch step ms | "
                  "ratio audio s/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in train:
            x = r["result"]
            t = x.get("torch") or {}
            lines.append(f"| {x['batch']}x{x['audio_s']:g} | {x['preset']} | {x['dtype']} | {x['step_ms']} | "
                         f"{_num(x.get('steps_per_s'))} | {x['audio_s_per_s']} | {_num(x.get('mfu'))} | "
                         f"{_num(x.get('peak_memory_gib'))} | {x['compile_s']} | {_num(t.get('step_ms'))} | "
                         f"{_num((x.get('ratio') or {}).get('audio_s_per_s'))} |")
    tr = next((r for r in report["steps"] if r["name"] == "transcribe" and isinstance(r.get("result"), dict)), None)
    if tr:
        x = tr["result"]
        lines += ["", "## transcription", "", "| impl | B | s/batch | RTF | tok/s | compile s |", "|---|---|---|---|---|---|"]
        for row in x["ours"] + x["torch"]:
            lines.append(f"| {row['impl']} | {row['batch']} | {row['batch_s']} | {row['rtf']} | {row['tokens_per_s']} | "
                         f"{row['compile_s'] if row['impl'] == 'funasr-jax' else '-'} |")
        for row in x["ratio"]:
            lines.append(f"| ratio ours/torch | {row['batch']} | | | {row['tokens_per_s']} | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (end to end in ~2-3 minutes)")
    p.add_argument("--out", default=None, help="result folder (default: $OUT, else ./out)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="overall seconds for all steps (default 480; smoke 170)")
    p.add_argument("--no-torch", action="store_true", help="skip every PyTorch comparison")
    args = p.parse_args(argv)
    budget = args.budget_s if args.budget_s is not None else (170.0 if args.smoke else 480.0)
    if budget <= 0:
        print(f"error: --budget-s must be > 0, got {budget}", file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or REPO / "out").resolve()
    (out / "anchors").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    paths = [str(REPO), str(SITE)] + ([str(REPO / ".torchref")] if (REPO / ".torchref").is_dir() else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.smoke:
        env["SMOKE"] = "1"
        env.setdefault("JAX_PLATFORMS", "cpu")
    t0 = time.perf_counter()
    compare = not args.no_torch and torch_funasr_importable(env)
    report = {"smoke": args.smoke, "budget_s": budget, "python": sys.version.split()[0], "torch_compare": compare,
              "steps": []}
    steps = plan(args.smoke, out, compare)
    # on CPU the anchors' imports dominate: run them together (never on a GPU: they would contend)
    batches = ([[s] for s in steps if not s["name"].startswith("anchor_")]
               + [[s for s in steps if s["name"].startswith("anchor_")]]) if args.smoke else [[s] for s in steps]
    for group in batches:
        left = budget - (time.perf_counter() - t0)
        recs = [run_step(group[0], env, left)] if len(group) == 1 else run_parallel(group, env, left)
        for rec in recs:
            report["steps"].append(rec)
            print(f"[gpu_check] {rec['name']}: {rec['status']} ({rec['wall_s']} s)", flush=True)
        report["total_s"] = round(time.perf_counter() - t0, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    report["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "gpu_check.md").write_text(md)
    print(md)
    bad = [r["name"] for r in report["steps"] if r["status"] in ("failed", "timeout")]
    if bad:
        print(f"[gpu_check] failed or timed out: {', '.join(bad)} (details in {out / 'gpu_check.json'})",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
