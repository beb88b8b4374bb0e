"""Reading TensorBoard event files back with TensorBoard's own reader (not the writer under test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from train.metric_sinks import scalars


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the event files under `logdir`, by TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_tensorboard_matches_jsonl(run_dir) -> None:
    """The run's TensorBoard scalars equal its metrics.jsonl rows (train and dev)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    got = read_scalars(Path(run_dir) / "tensorboard")
    want: dict[str, list] = {}
    for r in rows:
        for tag, v in scalars(r).items():
            if np.isfinite(v):
                want.setdefault(tag, []).append((r["step"], v))
    assert want and set(got) == set(want)
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in want[tag]], rtol=1e-6, err_msg=tag)
