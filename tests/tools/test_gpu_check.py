"""tools/gpu_check.py, the one-call GPU check: its time arithmetic (the required caps, a kill grace
each and the harness's own time fit the 480 s budget less 60 s of slack; larger shapes only while
time is left), the dry run (every command a sleep of its cap: the worst-case timeline ends before
the slack), a step that runs past its cap (killed with its process group; the rows of the steps
before it, and its own partial rows, stay in gpu_check.json), what a missing wheel says, the
preflight's import report, and (slow) the whole `--smoke` run on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402


def _plan(smoke=False, tmp=Path("/tmp/x"), **kw):
    kw = dict(compare_torch=True, missing=list(gpu_check.INSTALLABLE), wheels=None, cache_dir="/tmp/cache",
              compile_only=True, tools=None) | kw
    return gpu_check.plan(smoke, tmp, tmp, **kw)


@pytest.mark.parametrize("smoke", [False, True])
def test_required_caps_leave_the_slack(smoke):
    """Worst case: install needed, torch comparisons on. Required caps + graces + harness <= 420 s."""
    steps = _plan(smoke)
    assert gpu_check.plan_problems(steps) == []
    need = gpu_check.required_caps(steps) + gpu_check.HARNESS_S
    assert need <= gpu_check.BUDGET_S - gpu_check.SLACK_S == 420.0
    if not smoke:   # the figures the docstring and README state
        caps = {s["name"]: s["cap_s"] for s in steps if s["required"]}
        assert caps == {"install": 25, "preflight": 30, "kernels": 85, "gpu_tests": 45, "train_16x10": 165,
                        "transcribe": 50}
        assert need == 420.0


def test_order_and_what_is_optional():
    steps = _plan()
    names = [s["name"] for s in steps]
    assert names[:6] == ["install", "preflight", "kernels", "gpu_tests", "train_16x10", "transcribe"]
    optional = [s["name"] for s in steps if not s["required"]]
    assert optional[:3] == ["train_32x30", "train_48x30", "compile_full"]
    first = steps[4]
    assert "--compare-torch" in first["cmd"] and "nano" in first["cmd"] and "16" in first["cmd"]
    assert all("--compare-torch" not in s["cmd"] for s in steps[5:])
    assert "--no-torch" not in steps[5]["cmd"]
    # one compilation cache for every train.bench process
    assert all("mesh.compilation_cache=/tmp/cache" in s["cmd"] for s in steps if s["name"].startswith(("train_",
                                                                                                      "compile")))
    kernels = steps[2]["cmd"]
    assert kernels[kernels.index("--budget-s") + 1] == "75"        # rows stop starting 10 s before the cap
    no_torch = _plan(compare_torch=False)
    assert "--no-torch" in no_torch[5]["cmd"] and "--compare-torch" not in no_torch[4]["cmd"]
    assert all(s["skip"] for s in no_torch if s["name"] in ("anchor_torch_train_bench", "anchor_torch_infer_bench"))
    assert _plan(compile_only=False)[8]["skip"] == "train.bench has no --compile-only flag yet"


def test_a_plan_over_the_budget_is_refused():
    steps = _plan()
    steps[4]["cap_s"] += 1
    (problem,) = gpu_check.plan_problems(steps)
    assert "421 s > budget 480 - slack 60 s" in problem


def test_missing_wheels_say_what_and_how(tmp_path):
    (install, *_) = _plan(missing=["grain", "jiwer"], wheels=None)
    assert install["name"] == "install"
    assert "grain, jiwer" in install["fail"] and "bash tools/fetch_gpu_wheels.sh" in install["fail"]
    wheels = tmp_path / "whl"
    wheels.mkdir()
    (wheels / "grain-0.2.18-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (install, *_) = _plan(missing=["grain"], wheels=wheels)
    assert "fail" not in install and install["cmd"][-1].endswith("grain-0.2.18-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert [s["name"] for s in _plan(missing=[])][0] == "preflight"          # nothing missing: no install step


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    """Running (a zombie left for init to reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_step_past_its_cap_keeps_the_earlier_rows(tmp_path):
    """A writes its rows and ends; B writes one row, snapshots gpu_check.json, starts a grandchild
    and sleeps past its cap; C runs after. A's rows and B's partial row stay; B's whole process
    group is gone; the snapshot taken while B ran already held A and B as running."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    a, b = work / "a.json", work / "b.json"
    pid = work / "grandchild.pid"
    steps = [
        {"name": "A", "cap_s": 20.0, "required": True, "json": a, "env": {}, "skip": None,
         "cmd": _py(f"import json; json.dump({{'rows': [1, 2]}}, open({str(a)!r}, 'w')); print('a done')")},
        {"name": "B", "cap_s": 3.0, "required": True, "json": b, "env": {}, "skip": None,
         "cmd": _py("import json, shutil, subprocess, time\n"
                    f"json.dump({{'rows': [1]}}, open({str(b)!r}, 'w'))\n"
                    f"shutil.copy({str(out / 'gpu_check.json')!r}, {str(work / 'snapshot.json')!r})\n"
                    f"p = subprocess.Popen(['sleep', '60']); open({str(pid)!r}, 'w').write(str(p.pid))\n"
                    "print('b waiting', flush=True); time.sleep(60)")},
        {"name": "C", "cap_s": 20.0, "required": True, "json": None, "env": {}, "skip": None, "cmd": _py("print('c')")},
        # D prints its record, then is stopped before writing its file: the printed record is kept
        {"name": "D", "cap_s": 2.0, "required": True, "json": work / "d.json", "env": {}, "skip": None,
         "cmd": _py("import json, time; print(json.dumps({'step_ms': 5.0}), flush=True); print('torch...', "
                    "flush=True); time.sleep(30)")},
    ]
    report = {"smoke": True, "dry_run": False, "budget_s": 100.0, "slack_s": 10.0, "steps": []}
    t0 = time.perf_counter()
    gpu_check.run_plan(steps, dict(os.environ), out, report, deadline_s=90.0, t0=t0)
    data = json.loads((out / "gpu_check.json").read_text())
    ra, rb, rc, rd = data["steps"]
    assert rd["status"] == "timeout" and rd["result"] == {"step_ms": 5.0} and rd["result_from_output"]
    assert (ra["status"], ra["result"]) == ("ok", {"rows": [1, 2]}) and "a done" in ra["tail"]
    assert rb["status"] == "timeout" and rb["result"] == {"rows": [1]} and "b waiting" in rb["tail"]
    assert 3.0 <= rb["wall_s"] < 3.0 + gpu_check.GRACE_S + 1.5
    assert rc["status"] == "ok" and rc["start_s"] >= rb["start_s"] + 3.0
    snap = json.loads((work / "snapshot.json").read_text())
    assert [(r["name"], r["status"]) for r in snap["steps"]] == [("A", "ok"), ("B", "running")]
    assert snap["steps"][0]["result"] == {"rows": [1, 2]}
    assert not _alive(int(pid.read_text()))        # the grandchild went with B's process group
    md = (out / "gpu_check.md").read_text()
    assert "| B | timeout |" in md and "| A | ok |" in md
    log = (out / "gpu_check.log").read_text()
    assert log.index("a done") < log.index("b waiting") < log.index("\nc\n")


def test_optional_steps_only_while_time_is_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    def s(name, cap, required):
        return {"name": name, "cap_s": cap, "required": required, "json": None, "env": {}, "skip": None,
                "cmd": ["sleep", "0.01"]}

    report = {"smoke": True, "dry_run": False, "budget_s": 12.0, "slack_s": 2.0, "steps": []}
    gpu_check.run_plan([s("r", 1.0, True), s("big", 9.9, False), s("small", 1.0, False)], dict(os.environ), out,
                       report, deadline_s=10.0, t0=time.perf_counter(), grace_s=0.2)
    got = {r["name"]: (r["status"], r.get("reason", "")) for r in report["steps"]}
    assert got["r"][0] == "ok" and got["small"][0] == "ok"
    assert got["big"][0] == "skipped" and got["big"][1].startswith("time: needs 9.9 s")


def test_dry_run_timeline_ends_before_the_slack(tmp_path):
    """The GPU plan, every command a sleep of 98% of its cap, at 1/25 of real time."""
    scale = 0.04
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--dry-run", "--time-scale", str(scale),
                        "--out", str(out), "--work", str(tmp_path / "work")], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["deadline_s"] == pytest.approx((480 - 60) * scale)
    required = [r for r in data["steps"] if r["required"]]
    assert [r["name"] for r in required] == ["install", "preflight", "kernels", "gpu_tests", "train_16x10",
                                             "transcribe"]
    assert all(r["status"] == "ok" for r in required), required
    assert data["total_s"] <= data["deadline_s"]
    larger = {r["name"]: r for r in data["steps"] if r["name"] in ("train_32x30", "train_48x30")}
    assert all(r["status"] == "skipped" and r["reason"].startswith("time:") for r in larger.values()), larger
    assert "(dry run)" in (out / "gpu_check.md").read_text()


def test_preflight_reports_what_does_not_import(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "MODULES", ("json", "no_such_module_for_gpu_check"))
    monkeypatch.setattr(gpu_check, "TORCH_MODULES", ("funasr.models.no_such_model",))
    monkeypatch.setattr(sys, "path", list(sys.path))
    f = tmp_path / "pre.json"
    assert gpu_check.preflight(f) == 1
    res = json.loads(f.read_text())
    assert res["missing"] == ["no_such_module_for_gpu_check"]
    assert res["imports"]["json"]["ok"] and "ModuleNotFoundError" in res["imports"]["no_such_module_for_gpu_check"]["error"]
    assert res["torch_compare"] is False and "bash tools/fetch_gpu_wheels.sh" in res["torch_reason"]
    md = gpu_check.markdown({"budget_s": 480.0, "slack_s": 60.0, "steps": [
        {"name": "preflight", "status": "failed", "cap_s": 25.0, "wall_s": 1.0, "result": res}]})
    assert "**missing**: `no_such_module_for_gpu_check`" in md and "fetch_gpu_wheels.sh" in md


@pytest.mark.slow
def test_smoke_runs_every_step_on_cpu(tmp_path):
    """The check at tiny sizes on CPU (its required steps, without the torch comparisons: about
    two minutes here): every required step ok, the rows in the JSON and the markdown, inside the
    budget less the slack."""
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--smoke", "--required-only",
                        "--no-torch", "--out", str(out), "--work", str(tmp_path / "work"),
                        "--cache-dir", str(tmp_path / "cache")],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    data = json.loads((out / "gpu_check.json").read_text())
    required = {r["name"]: r for r in data["steps"] if r["required"]}
    assert p.returncode == 0, {n: (r["status"], r.get("tail", "")[-800:]) for n, r in required.items()}
    assert set(required) == {"preflight", "kernels", "gpu_tests", "train_1x2", "transcribe"} | (
        {"install"} if "install" in required else set())
    assert data["total_s"] <= data["deadline_s"]
    kb = required["kernels"]["result"]
    assert kb["done"] and {(r["op"], r["impl"]) for r in kb["rows"]} >= {("attention", "ours"), ("ctc", "ours")}
    assert required["train_1x2"]["result"]["step_ms"] > 0
    assert required["transcribe"]["result"]["ours"]
    assert not required["preflight"]["result"]["missing"]
    assert all(r["status"] == "skipped" for r in data["steps"] if not r["required"])
    md = (out / "gpu_check.md").read_text()
    assert "## kernels" in md and "## train step" in md and "## transcription" in md
