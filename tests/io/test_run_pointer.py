"""A training run tells the library where its params are (`latest_params.json`), so
`load_model(run_dir)` follows the pointer rather than guessing the trainer's layout."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from funasr_jax.io.checkpoint import (
    POINTER_FILE,
    CheckpointError,
    load_model,
    save_params,
    write_meta,
    write_params_pointer,
)
from funasr_jax.models.config import tiny_config
from funasr_jax.models.funasr import init_params
from sharding.paths import flatten


def _run_with_two_steps(tmp_path):
    cfg = tiny_config(vocab_size=64, ctc_vocab_size=64)
    p3 = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(3)))
    p7 = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(7)))
    run = tmp_path / "run"
    save_params(run / "checkpoints" / "3", p3, cfg)
    save_params(run / "checkpoints" / "7", p7, cfg)
    write_meta(run, cfg)
    return run, p3, p7


def _equal(a, b):
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_load_model_follows_the_pointer_not_the_highest_step(tmp_path):
    run, p3, p7 = _run_with_two_steps(tmp_path)
    write_params_pointer(run, run / "checkpoints" / "3" / "params", step=3)  # absolute -> stored relative
    assert '"checkpoints/3/params"' in (run / POINTER_FILE).read_text()
    assert _equal(load_model(run).params, p3)
    write_params_pointer(run, "checkpoints/7/params", step=7)
    assert _equal(load_model(run).params, p7)
    # The pointer is relative: the run directory can move.
    moved = tmp_path / "moved"
    run.rename(moved)
    assert _equal(load_model(moved).params, p7)


def test_a_run_without_pointer_or_a_bad_pointer_is_named(tmp_path):
    run, _, _ = _run_with_two_steps(tmp_path)
    with pytest.raises(CheckpointError, match=POINTER_FILE):
        load_model(run)
    (run / POINTER_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable params pointer"):
        load_model(run)
