"""Run safety: one trainer per run directory, verified checkpoints, non-finite steps
stop (or are skipped) before anything is saved, a resume falls back past damaged checkpoints,
failed writes are one named line and exit 2 with the last good checkpoint untouched, and
metrics.jsonl has no repeated steps after a resume.

One tiny sft_full run (6 steps, checkpoints 2, 4, 6) is shared. It runs as a subprocess with a
second trainer started on the same directory while it holds the lock (that one must refuse);
the other tests damage copies of it and resume them in this process, so their results (steps
3-4 recomputed here) are compared with the subprocess's."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.train import DEMO, tiny_cfg

from funasr_jax.io.checkpoint import POINTER_FILE, CheckpointError, load_model, restore_params
from funasr_jax.io.digest import DIGEST_FILE, DigestError, verify_digest
from sharding.paths import flatten

ROOT = Path(__file__).resolve().parents[2]
STAGE = "sft_full"
pytestmark = pytest.mark.xdist_group("run_safety")  # the tests share one module run


def _cfg(tmp: Path, out: Path, steps: int, **sets):
    """The shared run's config (same manifests under tmp/data) writing to `out`."""
    sets = {"run.save_every": 2, "run.keep": 3, "run.eval_at_end": False, **sets}
    cfg = tiny_cfg(STAGE, tmp / "data", steps=steps, **sets)
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(out)))


def _cli(cfg) -> list[str]:
    """`python -m train.main` for `cfg` (the fields `_cfg` sets)."""
    sets = {"data.train_files": cfg.data.train_files[0], "data.dev_files": cfg.data.dev_files[0],
            "data.batch_size": cfg.data.batch_size, "data.bucket_frames": f"({','.join(map(str, cfg.data.bucket_frames))},)",
            "data.noise_prob": cfg.data.noise_prob, "run.out_dir": cfg.run.out_dir, "run.steps": cfg.run.steps,
            "run.log_every": 1, "run.save_every": cfg.run.save_every, "run.keep": cfg.run.keep,
            "run.decode_max_tokens": cfg.run.decode_max_tokens, "run.progress": False, "run.eval_at_end": False,
            "optim.warmup_steps": cfg.optim.warmup_steps, "mesh.compilation_cache": cfg.mesh.compilation_cache}
    cmd = [sys.executable, "-m", "train.main", "--config", f"{STAGE}.py", "--preset", "tiny"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _flat(tree) -> dict:
    return {k: np.asarray(v) for k, v in flatten(tree).items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _step_params(run: Path, step: int) -> dict:
    return _flat(restore_params(run / "checkpoints" / str(step) / "params"))


def _step_opt_state(run: Path, step: int) -> list:
    """The optimizer state's leaves as saved (orbax restores its named tuples as lists / dicts)."""
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(restore_params(run / "checkpoints" / str(step) / "opt_state"))]


def _steps(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _train_steps(run: Path) -> list[int]:
    return [r["step"] for r in _rows(run) if r["split"] == "train"]


def _overwrite_4k(params_dir: Path) -> Path:
    """4 KB inverted in the middle of the largest file under `params_dir` (the issue's damage)."""
    f = max((p for p in params_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(f.read_bytes())
    at = max(0, len(data) // 2 - 2048)
    data[at:at + 4096] = bytes(b ^ 0xFF for b in data[at:at + 4096])
    f.write_bytes(bytes(data))
    return f


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The shared run, trained by a subprocess; a second trainer started on the same directory
    once the first holds the lock (its result is kept for the lock test)."""
    tmp = tmp_path_factory.mktemp("run_safety")
    cfg = _cfg(tmp, tmp / "base", steps=6)
    run = Path(cfg.run.out_dir)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    precision = jax.config.values.get("jax_default_matmul_precision")
    if precision:  # the numerics of this process (another test module may have set it)
        env["JAX_DEFAULT_MATMUL_PRECISION"] = str(precision)
    first = subprocess.Popen(_cli(cfg), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = run / ".lock"
        deadline = time.time() + 300
        while not (lock.exists() and lock.read_text().strip()):  # the first one holds the lock
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        holder = json.loads(lock.read_text())
        t0 = time.time()
        second = subprocess.run(_cli(cfg), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        refused_s = time.time() - t0
        out, err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    return SimpleNamespace(tmp=tmp, cfg=cfg, run=run, first=first, first_out=out, holder=holder, second=second,
                           refused_s=refused_s)


def _copy(base, name: str, steps: int, **sets):
    run = base.tmp / name
    shutil.copytree(base.run, run)
    return run, _cfg(base.tmp, run, steps, **sets)


# --- one trainer per run directory ----------------------------------------------------------------

def test_a_second_trainer_on_the_same_run_dir_refuses_at_once(base):
    lock = base.run / ".lock"
    assert base.holder["pid"] == base.first.pid
    assert base.second.returncode == 2, base.second.stderr[-3000:]
    assert base.second.stderr.strip().splitlines()[-1] == (
        f"error: {base.run} is in use by another trainer: pid {base.first.pid} on {base.holder['host']} "
        f"since {base.holder['since']} (lock {lock})")
    assert "Traceback" not in base.second.stderr and base.refused_s < 120
    # the first one was not disturbed: all its steps, checkpoints and digests; the lock released
    assert json.loads(base.first_out[base.first_out.index("{"):])["steps"] == 6
    assert _train_steps(base.run) == [1, 2, 3, 4, 5, 6]
    assert _steps(base.run) == [2, 4, 6] and all(verify_digest(base.run / "checkpoints" / str(s)) for s in (2, 4, 6))
    assert json.loads((base.run / POINTER_FILE).read_text())["step"] == 6
    assert lock.read_text() == ""


# --- verified checkpoints --------------------------------------------------------------------------

def test_a_corrupted_params_shard_is_refused_by_load_model_transcribe_and_evaluate(base, capsys):
    from funasr_jax.infer.evaluate import main as evaluate_main
    from funasr_jax.infer.transcribe import main as transcribe_main

    run, _ = _copy(base, "corrupt", 6)
    shard = _overwrite_4k(run / "checkpoints" / "6" / "params")
    with pytest.raises(DigestError, match=re.escape(f"{shard}: sha256 differs")):
        load_model(run)
    wav = next((DEMO / "audio" / "dev").glob("*.ogg"))
    for main, args in ((transcribe_main, [str(wav)]), (evaluate_main, ["--data", str(DEMO / "dev.jsonl")])):
        capsys.readouterr()
        assert main(["--checkpoint", str(run), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == f"error: {shard}: sha256 differs from the digest (corrupted)"
    (run / "checkpoints" / "6" / "params").rename(run / "params_gone")  # the newest params/ missing
    with pytest.raises(CheckpointError, match=re.escape(str(run / "checkpoints" / "6" / "params"))):
        load_model(run)


# --- resume that falls back; a full disk -----------------------------------------------------------

def test_resume_falls_back_to_the_uninterrupted_result_then_a_full_disk_is_one_line_exit_2(base, monkeypatch,
                                                                                          capsys):
    """Newest checkpoint (6) with 4 KB of a params shard overwritten, the one before (4) with its
    data-iterator state cut in half: the resume falls back to 2, and its steps 3-4 give the shared
    run's step-4 params. Then the save at step 6 hits a full disk (tensorstore's error, after a
    partial write): one line, exit 2, checkpoints 2 and 4 untouched. (Same run.steps as the shared
    run: the learning-rate schedule depends on it.)"""
    import orbax.checkpoint as ocp

    import train.main

    run, cfg = _copy(base, "fallback", 6)
    shard = _overwrite_4k(run / "checkpoints" / "6" / "params")  # the issue: resumed on with loss nan
    data_file = run / "checkpoints" / "4" / "data" / "metadata"  # the grain iterator state (JSON)
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    real_save = ocp.CheckpointManager.save

    def full_disk_at_6(self, step, *args, **kwargs):
        if step != 6:
            return real_save(self, step, *args, **kwargs)
        tmp = Path(str(self.directory)) / f"{step}.orbax-checkpoint-tmp-1234" / "params"
        tmp.mkdir(parents=True)
        (tmp / "partial").write_bytes(b"\0" * 100)
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{tmp}/d/abc": '
                         "[OS error 28: No space left on device]")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk_at_6)
    monkeypatch.setattr(train.main, "load_config", lambda *a, **k: cfg)
    capsys.readouterr()
    assert train.main.main(["--config", f"{STAGE}.py"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {run / 'checkpoints' / '6'} not usable: {shard}: sha256 differs" in err
    assert f"checkpoint {run / 'checkpoints' / '4'} not usable: {data_file}:" in err
    assert f"resumed from {run / 'checkpoints'}/2" in err
    assert sorted(p.name.split("-")[0] for p in (run / "checkpoints_rejected").iterdir()) == ["4", "6"]
    assert _same(_step_params(run, 4), _step_params(base.run, 4))  # = the uninterrupted run
    assert _train_steps(run) == [1, 2, 3, 4, 5, 6]  # steps 3-6 logged once, not twice
    assert err.strip().splitlines()[-1] == (f"error: cannot write checkpoint {run / 'checkpoints' / '6'}: "
                                            "No space left on device (errno ENOSPC); the previous checkpoints "
                                            "are untouched")
    assert "Traceback" not in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4"]  # no tmp left
    assert all(verify_digest(run / "checkpoints" / str(s)) for s in (2, 4))
    assert json.loads((run / POINTER_FILE).read_text())["step"] == 4
    assert _same(_flat(load_model(run).params), _step_params(base.run, 4))


# --- non-finite steps ------------------------------------------------------------------------------

def _nan_at(monkeypatch, call: int):
    """The `call`-th training batch of a run (1-based) gets NaN features."""
    from train.data import TrainData

    real, n = TrainData.next_train, {"calls": 0}

    def next_train(self):
        b = real(self)
        n["calls"] += 1
        return b.replace(feats=np.full_like(b.feats, np.nan)) if n["calls"] == call else b

    monkeypatch.setattr(TrainData, "next_train", next_train)


def test_a_nonfinite_loss_stops_before_saving_and_keeps_the_good_checkpoints(base, monkeypatch, capsys):
    import train.main

    run, cfg = _copy(base, "nan", 8, **{"run.save_every": 1, "run.keep": 2})
    _nan_at(monkeypatch, 2)  # resumed at 6: step 8
    monkeypatch.setattr(train.main, "load_config", lambda *a, **k: cfg)
    capsys.readouterr()
    assert train.main.main(["--config", f"{STAGE}.py"]) == 3
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"error: step 8: loss nan, grad norm nan; training stopped before "
                                            f"saving it (run.on_nonfinite=stop; newest checkpoint "
                                            f"{run / 'checkpoints' / '7'})")
    assert "Traceback" not in err
    assert _steps(run) == [6, 7]  # keep=2 pruned 2 and 4 after step 7; nothing of step 8 was saved
    assert all(verify_digest(run / "checkpoints" / str(s)) for s in (6, 7))
    assert json.loads((run / POINTER_FILE).read_text())["step"] == 7
    assert _train_steps(run) == [1, 2, 3, 4, 5, 6, 7]


def test_skip_leaves_a_nonfinite_update_out(base, monkeypatch, capsys):
    from train.loop import train

    run, cfg = _copy(base, "skip", 8, **{"run.save_every": 1, "run.keep": 4, "run.on_nonfinite": "skip"})
    _nan_at(monkeypatch, 1)  # resumed at 6: step 7
    assert train(cfg)["steps"] == 8
    assert "warning: step 7: loss nan, grad norm nan; its update was skipped" in capsys.readouterr().err
    assert _steps(run) == [4, 6, 7, 8]
    assert _same(_step_params(run, 7), _step_params(run, 6))  # params and optimizer state as before step 7
    a, b = _step_opt_state(run, 7), _step_opt_state(run, 6)
    assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not _same(_step_params(run, 8), _step_params(run, 7))  # and training goes on
    rows = {r["step"]: r for r in _rows(run) if r["split"] == "train"}
    assert rows[7]["skipped"] == 1 and np.isfinite(rows[8]["loss"]) and "skipped" not in rows[8]


# --- a read-only run directory ---------------------------------------------------------------------

def test_a_read_only_run_dir_is_one_line_and_exit_2(base, monkeypatch, capsys):
    import train.main

    run, cfg = _copy(base, "readonly", 8)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    if os.geteuid() == 0:  # root writes through permissions: the filesystem says read-only instead
        real_open = os.open

        def read_only_open(path, flags, *a, **k):
            if str(path).startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", read_only_open)
        code = "EROFS"
    else:
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        code = "EACCES"
    monkeypatch.setattr(train.main, "load_config", lambda *a, **k: cfg)
    capsys.readouterr()
    try:
        assert train.main.main(["--config", f"{STAGE}.py"]) == 2
    finally:
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: {re.escape(str(run / '.lock'))}: .* \(errno {code}\)", err.strip().splitlines()[-1])
    assert "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


# --- the checkpointer alone (no model): keep-last, fallback, failed saves --------------------------

def _state(step: int):
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(step), (64, 32)), np.float32)
    return {"step": jnp.asarray(step, jnp.int32), "params": {"w": w, "b": w[0].copy()},
            "opt_state": {"mu": w * 0.5}, "rng": jax.random.PRNGKey(100 + step)}


def _abstract(state):
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    spec = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=dev)  # noqa: E731
    return {"params": jax.tree_util.tree_map(spec, state["params"]),
            "opt_state": jax.tree_util.tree_map(spec, state["opt_state"])}


def test_checkpointer_keeps_the_newest_and_falls_back_past_a_missing_params_dir(tmp_path, capsys):
    from train.checkpointing import TrainCheckpointer

    ck = TrainCheckpointer(tmp_path, keep=2)
    for s in (1, 2, 3, 4):
        ck.save(_state(s), {"pos": s})
    assert _steps(tmp_path) == [3, 4] and all(verify_digest(tmp_path / "checkpoints" / str(s)) for s in (3, 4))
    shutil.rmtree(tmp_path / "checkpoints" / "4" / "params")
    ck.close()
    ck = TrainCheckpointer(tmp_path, keep=2)
    state, data = ck.restore(_abstract(_state(0)))
    assert ck.restored_step == 3 and data == {"pos": 3}
    assert _same(_flat(state["params"]), _flat(_state(3)["params"]))
    assert "checkpoints/4 not usable" in capsys.readouterr().err and "missing" in ck.rejected[4]
    assert json.loads((tmp_path / POINTER_FILE).read_text())["step"] == 3
    ck.save(_state(4), {"pos": 4})  # the rejected step's number is free again
    assert _steps(tmp_path) == [3, 4]
    ck.close()


def test_a_failed_save_raises_the_errno_and_keeps_the_only_good_checkpoint(tmp_path, monkeypatch):
    import train.checkpointing as tc

    ck = tc.TrainCheckpointer(tmp_path, keep=1)
    ck.save(_state(1), {})

    def no_space(root, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(root) / DIGEST_FILE))

    monkeypatch.setattr(tc, "write_digest", no_space)
    with pytest.raises(tc.CheckpointWriteError) as e:
        ck.save(_state(2), {})
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "checkpoints" / "2") in str(e.value)
    assert _steps(tmp_path) == [1] and verify_digest(tmp_path / "checkpoints" / "1")  # keep=1 kept it
    assert json.loads((tmp_path / POINTER_FILE).read_text())["step"] == 1
    ck.close()


_FULL_DISK = """
import sys
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
import jax, numpy as np
from funasr_jax.io.digest import verify_digest
from train.checkpointing import CheckpointWriteError, TrainCheckpointer

def state(step, n):
    w = np.random.default_rng(step).standard_normal((256, 1024)).astype(np.float32)  # incompressible
    return {"step": np.int32(step), "params": {f"w{i}": w + i for i in range(n)}, "opt_state": {"mu": w[:4]},
            "rng": jax.random.PRNGKey(step)}

ck = TrainCheckpointer(sys.argv[1], keep=1)
ck.save(state(1, 1), {})
try:
    ck.save(state(2, 12), {})  # 12 MB on a 4 MB filesystem
except CheckpointWriteError as e:
    print(f"error: {e}", file=sys.stderr)
    print(sorted(p.name for p in ck.dir.iterdir()), verify_digest(ck.dir / "1"))
    ck.close()
    sys.exit(2)
"""


def test_a_really_full_disk_is_one_line(tmp_path):
    """A 4 MB tmpfs (in a user + mount namespace: no root needed, gone with the process): orbax's
    parallel writes fail with ENOSPC, and all that reaches stderr is the one error line."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f'mount -t tmpfs -o size=4m tmpfs {mnt} || exit 99; exec "$0" -c "$1" {mnt} {ROOT}'
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, sys.executable,
                            _FULL_DISK], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if r.returncode == 99 or "unshare failed" in r.stderr or "Operation not permitted" in r.stderr:
        pytest.skip(f"cannot mount a small filesystem here: {r.stderr.strip()[-300:]}")
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [f"error: cannot write checkpoint {mnt}/checkpoints/2: No space left on "
                                             "device (errno ENOSPC); the previous checkpoints are untouched"]
    assert r.stdout.split() == ["['1']", "True"]  # the last good checkpoint, no tmp directory, still verifies


# --- the lock alone ----------------------------------------------------------------------------------

def test_the_lock_names_its_holder_and_is_released(tmp_path):
    import socket

    from train.run_lock import RunLock, RunLockedError

    with RunLock(tmp_path) as held:
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=re.escape(f"pid {os.getpid()} on {info['host']} since {info['since']}")):
            RunLock(tmp_path).acquire()  # another open file description: flock refuses it too
        other = RunLock(tmp_path, process_index=1).acquire()  # process 1 of a multi-host job: its own file
        assert other.path.name == ".lock.1"
        other.release()
    assert held.fd is None and (tmp_path / ".lock").read_text() == ""
    RunLock(tmp_path).acquire().release()


def test_without_flock_a_dead_holder_is_stale_and_a_live_one_refuses(tmp_path, monkeypatch):
    import fcntl
    import socket

    from train import run_lock
    from train.run_lock import RunLock, RunLockedError

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": "then"}))
    RunLock(tmp_path).acquire().release()  # its process is gone: taken over
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "then"}))
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "then"}))
    with pytest.raises(RunLockedError, match=f"cannot lock files, so if that trainer is gone delete {re.escape(str(lock))}"):
        RunLock(tmp_path).acquire()
    assert run_lock.lock_path(tmp_path, 3).name == ".lock.3"
