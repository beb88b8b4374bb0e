"""One call on a fresh GPU machine: install what is missing, then the kernel bench, the GPU tests, a
nano training step and transcription, and the larger shapes while time is left.

Before the call, on the development machine (where pip reaches a registry), once:
    bash tools/fetch_gpu_wheels.sh                  # -> .whl/ and .torchref/ (ignored by git)
then the device tool: command `bash tools/gpu_check.sh`, carry [".whl", ".torchref"], timeout_s 480.

    bash tools/gpu_check.sh [--smoke] [--dry-run] [--imports-only] [--required-only] [--out DIR] [--no-torch]

Time: the whole call fits BUDGET_S = 480 s with SLACK_S = 60 s never planned: every step ends by
480 - 60 = 420 s. The required steps' caps, plus a kill grace per step and the harness's own time,
sum to <= 420 s (`plan_problems`; tests/tools/test_gpu_check.py); an optional step starts only when
its whole cap (+ grace) fits before that deadline. A step that runs past its cap is killed with its
process group and recorded as `timeout`; the next step runs.

Steps, in order (GPU cap s / smoke cap s):
  install      25 / 25  only when a module the steps import is missing: `pip install --no-index
                        --no-deps --target /tmp/funasr_jax_site .whl/*.whl` (that folder and .torchref/
                        go on every later step's PYTHONPATH); no wheels -> failed, naming the modules
                        and the command that makes them
  preflight    30 / 45  versions, devices, nvidia-smi, and an import of every module the later steps
                        use; torch + FunASR's model code importable and a tiny FunASRNano builds ->
                        the torch comparisons run (else they are left out, the reason recorded)
  kernels      85 / 75  python -m kernels.bench (production shapes x ours / cuDNN / XLA / torch
                        first, its JSON rewritten after every row, --budget-s 10 s under the cap)
  gpu_tests    45 / 40  pytest -m gpu on the test files that carry the mark
  train_16x10 165 / 90  python -m train.bench, nano sft4 bf16, 16 x 10 s (--compare-torch when
                        importable); the cap covers a cold compile
  transcribe   50 / 70  python -m funasr_jax.bench, nano bf16, batch 1 and 16
  optional, while time is left: train_32x30 (90), train_48x30 (90), compile_full (120: `train.bench
  --compile-only` at the full preset, skipped while train.bench has no such flag), anchor_* (45 each:
  shared/tools/anchor_*.py, only when shared/ is in the tree).
The persistent compilation cache is on for every step, in one folder (--cache-dir, default
~/.cache/funasr_jax/xla, the trainer's own), so a rerun on a warm machine reads back what compiled.
JAX does not preallocate GPU memory (XLA_PYTHON_CLIENT_PREALLOCATE=false): torch shares the card.

Results under OUT (--out, else $OUT, else ./out), each rewritten as every step finishes (a step
about to run is recorded as `running` first, so a call stopped from outside keeps everything
done so far): gpu_check.json (every step: command, cap, start / wall seconds, status, output
tail, its JSON), gpu_check.md (the timeline, the kernel / train / transcription rows, what is
missing), gpu_check.log (every step's output as it is written), kernels_bench.json (rewritten
after every kernel row). Exit status 1 when a required step failed or timed out.
--smoke: the same steps at tiny sizes on CPU. --dry-run: the GPU plan with every command
replaced by a sleep of its cap (the worst-case timeline, nothing else runs). --imports-only:
install + preflight alone (the import check of a Python 3.12 / jax 0.11 environment).

The GPU machine's Python, rebuilt here for that check (the image's versions; torch left out):
    PYENV_VERSION=3.12.1 python3.12 -m venv .venv-gpucheck
    .venv-gpucheck/bin/pip install jax==0.11.2 jaxlib==0.11.2 flax==0.12.10 optax==0.2.8 \
        orbax-checkpoint==0.12.4 numpy==2.5.2 chex sentencepiece tokenizers safetensors tiktoken pytest \
        pytest-xdist pyyaml matplotlib absl-py scipy cloudpickle protobuf psutil click fsspec zipp
    FUNASR_JAX_GPU_SITE=/tmp/site312 JAX_PLATFORMS=cpu PYTHON=.venv-gpucheck/bin/python \
        bash tools/gpu_check.sh --imports-only      # then --smoke --no-torch runs the whole check
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 480.0      # the whole call
SLACK_S = 60.0        # never planned: every step ends by BUDGET_S - SLACK_S
GRACE_S = 2.0         # SIGTERM -> SIGKILL wait when a step's process group is stopped at its cap
HARNESS_S = 8.0       # this script's own time outside the steps (start, JSON / markdown writes)
MIN_START_S = 5.0     # a required step with less time left than this is skipped
TAIL_CHARS = 3000
SITE = Path(os.environ.get("FUNASR_JAX_GPU_SITE", "/tmp/funasr_jax_site"))   # where carried wheels go
WHEEL_DIRS = (".whl", "wheels")
TORCHREF = ".torchref"
FETCH_CMD = "bash tools/fetch_gpu_wheels.sh"
# import name -> wheel (tools/fetch_gpu_wheels.sh fetches these for the GPU machine's Python 3.12)
INSTALLABLE = {"grain": "grain", "array_record": "array-record", "portpicker": "portpicker", "jiwer": "jiwer",
               "rapidfuzz": "rapidfuzz", "soundfile": "soundfile", "cffi": "cffi", "soxr": "soxr",
               "kaldi_native_fbank": "kaldi-native-fbank", "pypinyin": "pypinyin", "webrtcvad": "webrtcvad-wheels"}
# every module a step imports (the preflight imports each; a failure names the module and why)
MODULES = ("jax", "flax", "optax", "orbax.checkpoint", "numpy", "kernels.bench", "train.bench", "train.main",
           "train.torch_compare", "funasr_jax.bench", "funasr_jax.io.torch_nano", "funasr_jax.data.datasets",
           "funasr_jax.text.metrics", "funasr_jax.text.hotwords", "funasr_jax.audio.io", "funasr_jax.audio.vad",
           "pytest", "xdist", "helpers.lowering", *INSTALLABLE)
TORCH_MODULES = ("torch", "transformers", "funasr.models.fun_asr_nano.model")


def wheel_dir() -> Path | None:
    """The carried wheels: .whl/ (made by tools/fetch_gpu_wheels.sh) or wheels/, whichever holds some."""
    for d in WHEEL_DIRS:
        if (REPO / d).is_dir() and any((REPO / d).glob("*.whl")):
            return REPO / d
    return None


def shared_tools() -> Path | None:
    """shared/tools inside the repo (only there does it travel to the GPU machine) or beside it."""
    for d in (REPO / "shared" / "tools", REPO.parent / "shared" / "tools"):
        if d.is_dir():
            return d
    return None


def has_compile_only() -> bool:
    """Whether train.bench offers --compile-only yet (read from its source: no import, no process)."""
    try:
        return "--compile-only" in (REPO / "train" / "bench.py").read_text()
    except OSError:
        return False


# ----------------------------------------------------------------------------- the plan

def step(name, cap, cmd, *, json_path=None, required=True, env=None, skip=None, smoke_cap=None, smoke=False):
    """One step: {name, cap_s, cmd (argv), json (file it writes, or None), required, env, skip}."""
    return {"name": name, "cap_s": float(smoke_cap if smoke and smoke_cap is not None else cap), "cmd": cmd,
            "json": json_path, "required": required, "env": env or {}, "skip": skip}


def plan(smoke: bool, out: Path, work: Path, *, compare_torch: bool | None, missing: list[str],
         wheels: Path | None, cache_dir: str, compile_only: bool, tools: Path | None) -> list[dict]:
    """The steps in order. compare_torch None: decided after the preflight (its JSON says)."""
    py = sys.executable
    kw = {"smoke": smoke}
    steps = []
    if missing:
        files = sorted(str(w) for w in wheels.glob("*.whl")) if wheels else []
        s = step("install", 25, [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                                 "--no-cache-dir", "--upgrade", "--target", str(SITE), *files], **kw)
        if not files:
            s["fail"] = (f"not importable: {', '.join(missing)}; no wheels in .whl/ or wheels/: run `{FETCH_CMD}` "
                         "before the call and carry .whl (and .torchref)")
        steps.append(s)
    pre = work / "preflight.json"
    steps.append(step("preflight", 30, [py, str(Path(__file__).resolve()), "--preflight", str(pre)],
                      json_path=pre, smoke_cap=45, **kw))
    kb = out / "kernels_bench.json"
    kcap = 75 if smoke else 85
    steps.append(step("kernels", kcap, [py, "-m", "kernels.bench", "--out", str(kb), "--budget-s", str(kcap - 10)]
                      + (["--smoke"] if smoke else []), json_path=kb, **kw))
    gpu_files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                       if "mark.gpu" in p.read_text())
    steps.append(step("gpu_tests", 45, [py, "-m", "pytest", "-q", "-n", "0", "-m", "gpu", "-p", "no:cacheprovider",
                                        *gpu_files], smoke_cap=40, **kw))
    tb = [py, "-m", "train.bench", "--config", "sft4.py", "--no-eval", "--set", f"mesh.compilation_cache={cache_dir}"]
    if smoke:
        shapes = [(1, 2.0, 90, True), (2, 2.0, 60, False), (2, 3.0, 60, False)]
        size = ["--preset", "tiny", "--dtype", "float32", "--steps", "1", "--warmup", "1"]
    else:
        shapes = [(16, 10.0, 165, True), (32, 30.0, 90, False), (48, 30.0, 90, False)]
        size = ["--preset", "nano", "--dtype", "bfloat16", "--steps", "5", "--warmup", "2"]
    first, *larger = shapes
    ib = work / "transcribe.json"
    transcribe = step("transcribe", 50, [py, "-m", "funasr_jax.bench", "--out", str(ib)]
                      + (["--smoke"] if smoke else ["--preset", "nano", "--dtype", "bfloat16", "--batch", "1,16"]),
                      json_path=ib, smoke_cap=70, **kw)
    transcribe["torch_flag"] = ("", "--no-torch")           # (when comparing, when not)
    for i, (b, sec, cap, required) in enumerate(shapes):
        f = work / f"train_{b}x{sec:g}.json"
        s = {"name": f"train_{b}x{sec:g}", "cap_s": float(cap), "json": f, "required": required, "env": {},
             "skip": None, "cmd": tb + size + ["--batch", str(b), "--seconds", str(sec), "--out", str(f)]}
        if i == 0:
            s["torch_flag"] = ("--compare-torch", "")       # the first shape carries the torch comparison
            steps += [s, transcribe]
        else:
            steps.append(s)
    cf = work / "compile_full.json"
    size_full = (["--preset", "tiny", "--batch", "1", "--seconds", "2"] if smoke else
                 ["--preset", "full", "--dtype", "bfloat16", "--batch", "8", "--seconds", "30"])
    steps.append(step("compile_full", 120, tb + size_full + ["--compile-only", "--out", str(cf)], json_path=cf,
                      required=False, smoke_cap=60,
                      skip=None if compile_only else "train.bench has no --compile-only flag yet", **kw))
    for name in ("anchor_gpu_bench", "anchor_torch_train_bench", "anchor_torch_infer_bench"):
        res = {"anchor_gpu_bench": "anchors.json", "anchor_torch_train_bench": "torch_train.json",
               "anchor_torch_infer_bench": "torch_infer.json"}[name]
        s = step(name, 45, [py, str(tools / f"{name}.py")] if tools else [], json_path=work / res, required=False,
                 env={"OUT": str(work)}, smoke_cap=60,
                 skip=None if tools else "shared/tools is not in the tree (the kernel bench and the torch "
                                         "comparisons cover the same ground)", **kw)
        if name != "anchor_gpu_bench":
            s["needs_torch"] = True
        steps.append(s)
    if compare_torch is not None:
        apply_torch(steps, compare_torch)
    return steps


def apply_torch(steps: list[dict], compare: bool) -> None:
    """Add each step's torch flag for `compare`, and skip the torch-only steps when not comparing."""
    for s in steps:
        flag = s.pop("torch_flag", None)
        if flag and flag[0 if compare else 1]:
            s["cmd"] = s["cmd"] + [flag[0 if compare else 1]]
        if s.pop("needs_torch", False) and not compare and not s["skip"]:
            s["skip"] = "torch / FunASR's model code not importable (see preflight)"


def required_caps(steps: list[dict], grace_s: float = GRACE_S) -> float:
    """Seconds the required steps may take at most: caps + a kill grace each."""
    return sum(s["cap_s"] + grace_s for s in steps if s["required"] and not s.get("skip"))


def plan_problems(steps: list[dict], budget_s: float = BUDGET_S, slack_s: float = SLACK_S, *,
                  grace_s: float = GRACE_S, harness_s: float = HARNESS_S) -> list[str]:
    """What breaks the time rule (empty: fine): the required caps + graces + the harness's own
    time must fit in budget - slack."""
    need = required_caps(steps, grace_s) + harness_s
    if need > budget_s - slack_s:
        return [f"required caps + graces + harness = {need:g} s > budget {budget_s:g} - slack {slack_s:g} s"]
    return []


# ----------------------------------------------------------------------------- running

def _kill_group(p: subprocess.Popen) -> None:
    """SIGTERM the step's process group, SIGKILL it after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    p.wait()


def run_step(s: dict, env: dict, limit_s: float, log) -> dict:
    """Run one step (its own process group) for at most `limit_s` seconds, its output appended to
    `log` (an open binary file); returns its record."""
    rec = {"name": s["name"], "cmd": " ".join(s["cmd"]), "cap_s": s["cap_s"], "required": s["required"]}
    if s.get("fail"):
        return {**rec, "status": "failed", "reason": s["fail"], "wall_s": 0.0}
    log.write(f"\n===== {s['name']} (cap {s['cap_s']:g} s, limit {limit_s:.1f} s): {rec['cmd']}\n".encode())
    log.flush()
    start = log.tell()
    t0 = time.perf_counter()
    p = subprocess.Popen(s["cmd"], cwd=REPO, env={**env, **s.get("env", {})}, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, process_group=0)
    try:
        rc = p.wait(timeout=limit_s)
        status = "ok" if rc == 0 else "failed"
        if s["name"] == "gpu_tests" and rc == 5:   # pytest: nothing selected / all deselected
            status = "ok"
    except subprocess.TimeoutExpired:
        _kill_group(p)
        rc, status = None, "timeout"
    except BaseException:
        _kill_group(p)
        raise
    log.flush()
    text = _read_from(log.name, start)
    rec.update(status=status, rc=rc, wall_s=round(time.perf_counter() - t0, 1), limit_s=round(limit_s, 1),
               tail=text[-TAIL_CHARS:])
    f = s.get("json")
    if f is not None and Path(f).exists():
        try:
            rec["result"] = json.loads(Path(f).read_text())
        except json.JSONDecodeError as e:
            rec["result_error"] = f"{f}: {e}"
    elif f is not None and (printed := last_json_line(text)) is not None:
        # the step ended before writing its file (e.g. stopped in the torch half of train.bench):
        # the record it printed on the way is kept
        rec["result"], rec["result_from_output"] = printed, True
    return rec


def last_json_line(text: str) -> dict | None:
    """The last line of `text` that is a JSON object, or None."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _read_from(path: str, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def write_report(out: Path, report: dict) -> None:
    """gpu_check.json and gpu_check.md, each written to a temporary file and renamed."""
    for name, text in (("gpu_check.json", json.dumps(report, indent=1, default=str)),
                       ("gpu_check.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def run_plan(steps: list[dict], env: dict, out: Path, report: dict, *, deadline_s: float, t0: float,
             after_step=None, grace_s: float = GRACE_S, min_start_s: float = MIN_START_S) -> dict:
    """Run `steps` in order. A required step gets min(cap, time left before the deadline); an
    optional one starts only when its whole cap + grace fits; nothing starts with less than
    `min_start_s` left. The report is written before each
    step (it is recorded as running) and after it. `after_step(rec, steps)` may edit the rest."""
    log_path = out / "gpu_check.log"
    with open(log_path, "ab") as log:
        for i, s in enumerate(steps):
            left = deadline_s - (time.perf_counter() - t0)
            rec = {"name": s["name"], "cap_s": s["cap_s"], "required": s["required"],
                   "start_s": round(time.perf_counter() - t0, 1)}
            if s.get("skip"):
                rec.update(status="skipped", reason=s["skip"], wall_s=0.0)
            elif not s["required"] and left < s["cap_s"] + grace_s:
                rec.update(status="skipped", wall_s=0.0,
                           reason=f"time: needs {s['cap_s']:g} s, {max(left, 0):.0f} s left before the slack")
            elif left < min_start_s:
                rec.update(status="skipped", reason="overall budget spent", wall_s=0.0)
            else:
                report["steps"].append({**rec, "status": "running", "cmd": " ".join(s["cmd"])})
                report["total_s"] = round(time.perf_counter() - t0, 1)
                write_report(out, report)
                report["steps"].pop()
                rec.update(run_step(s, env, min(s["cap_s"], left), log))
            report["steps"].append(rec)
            report["total_s"] = round(time.perf_counter() - t0, 1)
            write_report(out, report)
            print(f"[gpu_check] {rec['name']}: {rec['status']} ({rec['wall_s']} s; at {rec['start_s']} s)"
                  + (f" - {rec['reason']}" if rec.get("reason") else ""), flush=True)
            if after_step is not None:
                after_step(rec, steps[i + 1:])
    return report


# ----------------------------------------------------------------------------- preflight

def preflight(path: Path) -> int:
    """Versions, devices and an import of every module in MODULES (+ TORCH_MODULES), written to
    `path` as JSON after each part. Exit status 1 when one of MODULES does not import."""
    res = {"python": sys.version.split()[0], "executable": sys.executable,
           "pythonpath": os.environ.get("PYTHONPATH", ""), "imports": {}, "missing": []}
    sys.path[:0] = [str(REPO), str(REPO / "tests")]

    def save():
        path.write_text(json.dumps(res, indent=1, default=str))

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        res["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        res["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    save()
    for m in MODULES:
        t = time.perf_counter()
        try:
            mod = importlib.import_module(m)
            res["imports"][m] = {"ok": True, "s": round(time.perf_counter() - t, 2),
                                 "version": getattr(mod, "__version__", None)}
        except BaseException as e:  # noqa: BLE001 - a SystemExit / ImportError alike: report it
            res["imports"][m] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            res["missing"].append(m)
        save()
    try:
        import jax
        res["jax"] = jax.__version__
        res["backend"] = jax.default_backend()
        res["devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    except Exception as e:  # noqa: BLE001
        res["jax_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    save()
    torch_ok = True
    for m in TORCH_MODULES:
        try:
            mod = importlib.import_module(m)
            res["imports"][m] = {"ok": True, "version": getattr(mod, "__version__", None)}
        except BaseException as e:  # noqa: BLE001
            res["imports"][m] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            torch_ok = False
    if torch_ok:
        import torch
        res["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if res.get("backend") == "gpu" and not res["torch_cuda"]:
            torch_ok = False
            res["torch_reason"] = "torch sees no CUDA device"
        else:   # what the torch comparisons do first: build FunASR's FunASRNano (tiny, CPU)
            t = time.perf_counter()
            try:
                from funasr_jax.io.torch_nano import build_torch_nano
                from funasr_jax.models.config import preset
                build_torch_nano(preset("tiny"), trainable=(), llm_dtype="fp32", device="cpu")
                res["torch_build_s"] = round(time.perf_counter() - t, 2)
            except Exception as e:  # noqa: BLE001 - reported; the comparisons are then left out
                torch_ok = False
                res["torch_reason"] = f"FunASR's FunASRNano does not build: {type(e).__name__}: {str(e)[:200]}"
    else:
        bad = [m for m in TORCH_MODULES if not res["imports"][m]["ok"]]
        res["torch_reason"] = (f"not importable: {', '.join(bad)}"
                               + (f" (FunASR's model code: run `{FETCH_CMD}` and carry .torchref)"
                                  if any(m.startswith("funasr") for m in bad) else ""))
    res["torch_compare"] = torch_ok
    save()
    for m in res["missing"]:
        print(f"[preflight] cannot import {m}: {res['imports'][m]['error']}", file=sys.stderr)
    print(json.dumps({k: res[k] for k in ("python", "jax", "backend", "devices", "nvidia_smi", "torch_compare",
                                          "missing") if k in res}))
    return 1 if res["missing"] else 0


# ----------------------------------------------------------------------------- markdown

def _num(v, fmt="{:.3g}"):
    if v is None or v == "":
        return "-"
    return fmt.format(v) if isinstance(v, float) else str(v)


def _note(r: dict) -> str:
    if r.get("reason"):
        return r["reason"]
    if r["status"] in ("ok", "running"):
        return ""
    lines = (r.get("tail") or "").strip().splitlines()
    return lines[-1] if lines else ""


def markdown(report: dict) -> str:
    """The timeline, what is missing, then the kernel, train and transcription rows."""
    mode = ("imports only, " if report.get("imports_only") else "") + (
        "smoke" if report.get("smoke") else "dry run" if report.get("dry_run") else "GPU")
    lines = [f"# gpu_check ({mode}), {report.get('total_s', 0)} s of {report['budget_s']:g} s "
             f"({report['slack_s']:g} s slack)", ""]
    pre = next((r.get("result") for r in report["steps"] if r["name"] == "preflight" and r.get("result")), None)
    if pre:
        lines += [f"device: {', '.join(pre.get('devices') or []) or '-'}; nvidia-smi: {pre.get('nvidia_smi', '-')}; "
                  f"python {pre.get('python')}, jax {pre.get('jax', '-')}; torch comparisons: "
                  f"{'on' if pre.get('torch_compare') else 'off (' + str(pre.get('torch_reason')) + ')'}", ""]
        if pre.get("missing"):
            lines += ["**missing**: " + "; ".join(f"`{m}` ({pre['imports'][m]['error']})" for m in pre["missing"])
                      + f" — run `{FETCH_CMD}` before the call and carry .whl / .torchref", ""]
    lines += ["| step | status | start s | wall s | cap s | note |", "|---|---|---|---|---|---|"]
    for r in report["steps"]:
        cap = f"{r['cap_s']:g}" + ("" if r.get("required", True) else " (opt)")
        lines.append(f"| {r['name']} | {r['status']} | {r.get('start_s', '-')} | {r.get('wall_s', '-')} | {cap} | "
                     f"{_note(r)[:140].replace('|', '/')} |")
    kb = next((r.get("result") for r in report["steps"] if r["name"] == "kernels" and r.get("result")), None)
    if kb and kb.get("rows"):
        lines += ["", f"## kernels ({(kb.get('meta') or {}).get('device', '-')})", "",
                  "| op | shape | impl | ran | fwd ms | fwd+bwd ms | fwd TFLOP/s | fwd+bwd TFLOP/s | "
                  "t/t(ours) fwd+bwd | diff vs xla |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in kb["rows"]:
            if "error" in x:
                lines.append(f"| {x['op']} | {x['label']} | {x['impl']} | {x.get('ran', '-')} | error: "
                             f"{x['error'][:100].replace('|', '/')} | | | | | |")
                continue
            diff = x.get("max_abs_diff_vs_xla", x.get("rel_diff_vs_xla"))
            lines.append(f"| {x['op']} | {x['label']} {x.get('shape', '')} | {x['impl']} | {x.get('ran', '-')} | "
                         f"{_num(x.get('fwd_ms'))} | {_num(x.get('fwdbwd_ms'))} | {_num(x.get('fwd_tflops'))} | "
                         f"{_num(x.get('fwdbwd_tflops'))} | {_num(x.get('speedup_of_ours_fwdbwd'))} | {_num(diff)} |")
        if kb.get("not_run"):
            lines.append(f"\nnot run (time): {', '.join(kb['not_run'])}")
    train = [r for r in report["steps"] if r["name"].startswith("train_") and isinstance(r.get("result"), dict)]
    if train:
        lines += ["", "## train step", "",
                  "| shape | preset | dtype | step ms | steps/s | audio s/s | MFU | peak GiB | compile s | torch step ms | "
                  "ratio audio s/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in train:
            x = r["result"]
            t = x.get("torch") or {}
            lines.append(f"| {x.get('batch')}x{x.get('audio_s', 0):g} | {x.get('preset')} | {x.get('dtype')} | "
                         f"{_num(x.get('step_ms'))} | {_num(x.get('steps_per_s'))} | {_num(x.get('audio_s_per_s'))} | "
                         f"{_num(x.get('mfu'))} | {_num(x.get('peak_memory_gib'))} | {_num(x.get('compile_s'))} | "
                         f"{_num(t.get('step_ms'))} | {_num((x.get('ratio') or {}).get('audio_s_per_s'))} |")
    cf = next((r.get("result") for r in report["steps"] if r["name"] == "compile_full" and r.get("result")), None)
    if cf:
        lines += ["", "## compile only", "", "```", json.dumps(cf)[:1500], "```"]
    tr = next((r.get("result") for r in report["steps"] if r["name"] == "transcribe" and r.get("result")), None)
    if tr:
        lines += ["", "## transcription", "", "| impl | B | s/batch | RTF | tok/s | compile s |",
                  "|---|---|---|---|---|---|"]
        for row in tr.get("ours", []) + tr.get("torch", []):
            lines.append(f"| {row.get('impl')} | {row.get('batch')} | {_num(row.get('batch_s'))} | {_num(row.get('rtf'))} | "
                         f"{_num(row.get('tokens_per_s'))} | "
                         f"{_num(row.get('compile_s')) if row.get('impl') == 'funasr-jax' else '-'} |")
        for row in tr.get("ratio", []):
            lines.append(f"| ratio ours/torch | {row.get('batch')} | | | {_num(row.get('tokens_per_s'))} | |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main

def _dry(steps: list[dict]) -> None:
    """Replace every command by a sleep of 98% of its cap (`sleep`: no interpreter start-up to
    push it past the cap): the worst-case timeline."""
    for s in steps:
        s.pop("fail", None)
        if not s.get("skip"):
            s["cmd"] = ["sleep", f"{s['cap_s'] * 0.98:.3f}"]
            s["json"] = None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="the same steps at tiny sizes on CPU")
    p.add_argument("--dry-run", action="store_true",
                   help="the GPU plan with every command replaced by a sleep of its cap (worst-case timeline)")
    p.add_argument("--imports-only", action="store_true", help="install + preflight only (an import check)")
    p.add_argument("--out", default=None, help="result folder (default: $OUT, else ./out)")
    p.add_argument("--work", default=None, help="folder for the steps' own JSON (default: a temporary one)")
    p.add_argument("--cache-dir", default="~/.cache/funasr_jax/xla", help="persistent compilation cache")
    p.add_argument("--no-torch", action="store_true", help="skip every PyTorch comparison")
    p.add_argument("--required-only", action="store_true", help="skip the optional steps (larger shapes, anchors)")
    p.add_argument("--preflight", default=None, metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--time-scale", type=float, default=1.0, help=argparse.SUPPRESS)   # tests: caps x this
    args = p.parse_args(argv)
    if args.preflight:
        return preflight(Path(args.preflight))
    scale = args.time_scale
    budget, slack = BUDGET_S * scale, SLACK_S * scale
    out = Path(args.out or os.environ.get("OUT") or REPO / "out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_bytes(b"")
    cache_dir = str(Path(args.cache_dir).expanduser())
    env = dict(os.environ)
    paths = [str(REPO), str(SITE)] + ([str(REPO / TORCHREF)] if (REPO / TORCHREF).is_dir() else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=cache_dir)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.smoke:
        env["SMOKE"] = "1"
        env.setdefault("JAX_PLATFORMS", "cpu")
    t0 = time.perf_counter()
    missing = [] if args.dry_run else [m for m in INSTALLABLE if importlib.util.find_spec(m) is None
                                       and not any(SITE.glob(f"{m}*"))]   # a package dir or a .so
    steps = plan(args.smoke, out, work, compare_torch=(not args.no_torch) if args.dry_run else None,
                 missing=missing if not args.dry_run else list(INSTALLABLE), wheels=wheel_dir(),
                 cache_dir=cache_dir, compile_only=has_compile_only(), tools=shared_tools())
    if args.imports_only:
        steps = [s for s in steps if s["name"] in ("install", "preflight")]
    if args.required_only:
        for s in steps:
            if not s["required"] and not s["skip"]:
                s["skip"] = "--required-only"
    for s in steps:
        s["cap_s"] *= scale
    problems = plan_problems(steps, budget, slack, grace_s=GRACE_S * scale, harness_s=HARNESS_S * scale)
    if problems and not args.imports_only:
        print(f"error: the plan breaks the time rule: {'; '.join(problems)}", file=sys.stderr)
        return 2
    if args.dry_run:
        _dry(steps)
    report = {"smoke": args.smoke, "dry_run": args.dry_run, "imports_only": args.imports_only, "budget_s": budget, "slack_s": slack,
              "deadline_s": budget - slack, "required_caps_s": round(required_caps(steps, GRACE_S * scale), 1),
              "python": sys.version.split()[0], "cache_dir": cache_dir, "work": str(work), "steps": []}

    def after_step(rec, rest):
        if rec["name"] == "preflight" and not args.dry_run:
            res = rec.get("result") or {}
            compare = bool(res.get("torch_compare")) and not args.no_torch
            report["torch_compare"] = compare
            apply_torch(rest, compare)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        run_plan(steps, env, out, report, deadline_s=budget - slack, t0=t0, after_step=after_step,
                 grace_s=GRACE_S * scale, min_start_s=MIN_START_S * scale)
    except KeyboardInterrupt as e:
        report["interrupted"] = str(e) or "interrupted"
    report["total_s"] = round(time.perf_counter() - t0, 1)
    write_report(out, report)
    print(markdown(report))
    bad = [r["name"] for r in report["steps"] if r["required"] and r["status"] in ("failed", "timeout")]
    if bad:
        print(f"[gpu_check] failed or timed out: {', '.join(bad)} (details in {out / 'gpu_check.json'})",
              file=sys.stderr)
    return 1 if bad or report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
