"""Multi-host: two processes on localhost (CPU collectives) train, save with orbax, and a fresh
run on a DIFFERENT device count restores (StandardRestore with the new shardings) and continues
with the same numbers.

Run A: 2 processes x 4 fake CPU devices, mesh data=2 (across processes) x fsdp=4 (within);
       5 steps, checkpoint after step 3.
Run B: 1 process x 4 fake devices, mesh fsdp=2 x tensor=2; restores step 3, runs steps 4-5.
Checks: restored params == saved params bit for bit; B's losses and final params match A's.
Workers are this file run as a script (`python tests/train/test_multihost.py worker '<json>'`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # worker: fake devices before jax starts
    _ARGS = json.loads(sys.argv[2])
    os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={_ARGS['devices']} "
                               "--xla_backend_optimization_level=0")
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pytest
from helpers.memo import once_per_session

# both tests read one module fixture (two multi-process runs): keep them on one xdist worker
pytestmark = pytest.mark.xdist_group("multihost")
ROOT = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: dict):
    env = dict(os.environ, FUNASR_JAX_NO_COMPILE_CACHE="1")
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def _wait(procs, timeout=300):
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-4000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _launch_runs(tmp: Path) -> dict:
    """Run A (two processes) then B (one, restoring A's step-3 checkpoint); their records land in `tmp`."""
    port = _free_port()
    common = {"ckpt": str(tmp / "ckpt"), "out": str(tmp)}
    a = [_launch({**common, "name": "A", "proc": i, "nproc": 2, "devices": 4, "port": port,
                  "mesh": "data=2,fsdp=4", "steps": [0, 5], "save_at": 3, "restore": False}) for i in range(2)]
    _wait(a)
    b = [_launch({**common, "name": "B", "proc": 0, "nproc": 1, "devices": 4, "port": 0,
                  "mesh": "fsdp=2,tensor=2", "steps": [3, 5], "save_at": -1, "restore": True})]
    _wait(b)
    return {"folder": str(tmp)}


# session scope: a worker interleaves modules, and a module fixture is torn down (and rebuilt,
# ~4 min) whenever the worker's next test comes from another module; pytest-xdist also tears session
# fixtures down when a worker's queue runs dry, hence `once_per_session`
@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    tmp = Path(once_per_session(tmp_path_factory, "multihost", _launch_runs)["folder"])
    load = lambda n: json.loads((tmp / f"{n}.json").read_text())  # noqa: E731
    npz = lambda n: dict(np.load(tmp / f"{n}.npz"))  # noqa: E731
    return {"A": load("A"), "B": load("B"), "A_saved": npz("A_saved"), "A_final": npz("A_final"),
            "B_restored": npz("B_restored"), "B_final": npz("B_final")}


def test_two_process_run_used_both_processes(runs):
    a = runs["A"]
    assert a["process_count"] == 2 and a["device_count"] == 8 and a["local_device_count"] == 4
    assert a["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert a["compiles"] == {"train": 1}
    assert all(np.isfinite(a["losses"])) and len(a["losses"]) == 5


def test_restore_on_other_device_count_is_bit_exact(runs):
    b = runs["B"]
    assert b["process_count"] == 1 and b["device_count"] == 4 and b["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert b["restored_step"] == 3
    saved, restored = runs["A_saved"], runs["B_restored"]
    assert sorted(saved) == sorted(restored) and len(saved) > 50
    for k in saved:
        np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
    # The restored arrays carry the new mesh's layout (tensor-sharded q_proj).
    assert b["q_proj_shard_shape"] == [64, 64]


def test_continued_run_matches_uninterrupted_run(runs):
    np.testing.assert_allclose(runs["B"]["losses"], runs["A"]["losses"][3:], rtol=2e-6)
    for k, v in runs["A_final"].items():
        np.testing.assert_allclose(runs["B_final"][k], v, atol=2e-6, rtol=0, err_msg=k)


# ----------------------------------------------------------------------------- worker


def worker(args: dict) -> None:
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils

    jax.config.update("jax_default_matmul_precision", "highest")
    from train.distributed import initialize_distributed

    if args["nproc"] > 1:
        initialize_distributed({"coordinator_address": f"127.0.0.1:{args['port']}",
                                "num_processes": args["nproc"], "process_id": args["proc"]})
    from helpers.sharding import slim_cfg

    from funasr_jax.io.names import flatten
    from train import setup
    from train.checkpointing import TrainCheckpointer
    from train.config import MeshConfig
    from train.sharded import mesh_and_rules, replicate, restore_target, shard_batch, shard_state
    from train.step import batch_counts
    from train.synthetic import random_params, synthetic_batch

    pid, nproc = jax.process_index(), jax.process_count()
    cfg = slim_cfg(["optim.eps=1e-3"])
    mc = cfg.model
    mesh, rules = mesh_and_rules(MeshConfig(preset=args["mesh"]))
    built = setup.build_steps(setup.stage_parts(cfg, total_steps=100), mesh, rules, seed=1)
    abstract, abstract_state, steps = built.parts.abstract_params, built.abstract_state, built.steps
    ckpt = TrainCheckpointer(args["ckpt"], keep=3)
    out = Path(args["out"])

    def gather(params):
        host = multihost_utils.process_allgather(params, tiled=True)
        return {"/".join(k): np.asarray(v) for k, v in flatten(host).items()}

    rec = {"process_count": nproc, "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
           "mesh": dict(mesh.shape)}
    if args["restore"]:
        state, data_state = ckpt.restore(restore_target(abstract_state, steps.state_shardings))
        state = shard_state(state, steps.state_shardings)
        rec["restored_step"] = int(state["step"])
        assert data_state == {"next_step": args["steps"][0]}, data_state
        q = state["params"]["llm"]["model"]["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
        rec["q_proj_shard_shape"] = list(q.sharding.shard_shape(q.shape))
        restored = gather(state["params"])
        if pid == 0:
            np.savez(out / f"{args['name']}_restored.npz", **restored)
    else:
        state = built.init_state(random_params(abstract, steps.state_shardings["params"], seed=0))
    losses = []
    rows = GLOBAL_BATCH // nproc
    for step in range(*args["steps"]):
        host = synthetic_batch(mc, GLOBAL_BATCH, 1.5, text_tokens=8, seed=100 + step, ctc=True)
        norm = replicate({k: jnp.asarray(max(1.0, v), jnp.float32) for k, v in batch_counts(host).items()}, mesh)
        local = host.map(lambda v: v[pid * rows:(pid + 1) * rows])  # this process's rows
        state, m = steps.train(state, shard_batch(local, mesh), norm)
        losses.append(float(m["loss"]))
        if step + 1 == args["save_at"]:
            ckpt.save(state, {"next_step": step + 1})
            saved = gather(state["params"])
            if pid == 0:
                np.savez(out / f"{args['name']}_saved.npz", **saved)
    final = gather(state["params"])
    ckpt.close()
    rec.update(losses=losses, compiles=dict(steps.counter.by_name))
    if pid == 0:
        np.savez(out / f"{args['name']}_final.npz", **final)
        (out / f"{args['name']}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    worker(_ARGS)
