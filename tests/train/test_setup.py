"""The training loop, the step benchmark and the memory planner build their step in one place
(`train.setup`): checked statically over the sources and by running the loop and the bench with
the builder instrumented."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from helpers.sharding import slim_cfg

from train import setup

REPO = Path(__file__).resolve().parents[2]
# Constructing a step by hand: only train/setup.py may call these.
BUILDERS = {"make_steps", "make_sharded_steps", "make_optimizer", "jit_sharded_train_step", "trainable_mask"}


def _called_names(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_only_setup_builds_steps():
    offenders = {}
    for path in sorted((REPO / "train").rglob("*.py")):
        if path.name in ("setup.py", "step.py", "sharded.py", "optimizer.py"):
            continue  # the builder itself and the pieces it assembles
        hit = _called_names(path) & BUILDERS
        if hit:
            offenders[str(path.relative_to(REPO))] = sorted(hit)
    assert not offenders, f"step construction outside train/setup.py: {offenders}"
    for name in ("loop.py", "bench.py", "plan.py"):
        names = _called_names(REPO / "train" / name)
        assert names & {"prepare", "stage_parts", "build_steps"}, f"train/{name} does not use train.setup"


def _count_stage_parts(monkeypatch):
    calls = []
    real = setup.stage_parts

    def counted(cfg, **kw):
        calls.append(cfg.stage.name)
        return real(cfg, **kw)

    monkeypatch.setattr(setup, "stage_parts", counted)
    return calls


def test_bench_and_loop_go_through_setup(monkeypatch, tmp_path):
    from train import bench
    from train.loop import train

    calls = _count_stage_parts(monkeypatch)
    cfg = slim_cfg()
    _, _, steps, state, batch, norm, info = bench.prepare(cfg, batch=2, seconds=1.0, text_tokens=4)
    assert calls == ["sft4"] and info["mask"] is not None
    assert jax.tree_util.tree_structure(state["params"]) == jax.tree_util.tree_structure(info["abstract_params"])

    run = dataclasses.replace(cfg.run, out_dir=str(tmp_path / "run"), steps=1, eval_at_end=False, save_every=0,
                              progress=False)
    summary = train(dataclasses.replace(cfg, run=run))
    assert calls == ["sft4", "sft4"] and summary["steps"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
