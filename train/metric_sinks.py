"""Where metric rows go besides `metrics.jsonl`: TensorBoard event files and Weights & Biases.

A row is one flat dict from the loop (`{"split": "train", "step": 40, "loss": 2.3, ...}`); every
numeric field becomes the scalar `<split>/<field>` at that step (nested dicts, e.g. an evaluation's
per-language table, become `<split>/<field>/<key>`). Text and lists are left to the JSONL.

    run.tensorboard = True       event files under <out_dir>/tensorboard (tensorboardX, a dependency)
    run.wandb_project = "asr"    also log to W&B (needs `pip install wandb`; asking for it without
                                 wandb installed is a config error, not a silent no-op)
"""

from __future__ import annotations

import math
from pathlib import Path


def scalars(row: dict) -> dict[str, float]:
    """`row` -> {"<split>/<field>[/<key>]": value} for its finite-or-not numeric fields (bools excluded)."""
    split = row.get("split", "train")
    out: dict[str, float] = {}

    def add(name, v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out[name] = float(v)
        elif isinstance(v, dict):
            for k, w in v.items():
                add(f"{name}/{k}", w)

    for k, v in row.items():
        if k not in ("split", "step"):
            add(f"{split}/{k}", v)
    return out


class TensorBoardSink:
    """Scalars into TensorBoard event files (`tensorboard --logdir <out_dir>/tensorboard`)."""

    def __init__(self, logdir, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        # purge_step: a resumed run (from checkpoint step S, so purge_step S + 1) tells TensorBoard
        # to drop what an earlier attempt logged after S: those steps are logged again now
        self.writer = SummaryWriter(logdir=str(self.logdir), flush_secs=30, purge_step=purge_step)

    def write(self, row: dict) -> None:
        step = int(row.get("step", 0))
        for name, v in scalars(row).items():
            if math.isfinite(v):  # TensorBoard cannot plot NaN / inf; the JSONL keeps them
                self.writer.add_scalar(name, v, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbSink:
    """Scalars into a Weights & Biases run (`project`, named after the run directory)."""

    def __init__(self, project: str, name: str, config: dict | None = None):
        import wandb

        self.run = wandb.init(project=project, name=name, config=config or {}, reinit=True)

    def write(self, row: dict) -> None:
        self.run.log(scalars(row), step=int(row.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def open_sinks(run_cfg, out_dir, config: dict | None = None, *, primary: bool = True, start_step: int = 0) -> list:
    """The sinks `run_cfg` asks for (`tensorboard`, `wandb_project`); none on hosts other than
    the first (`primary=False`), which would write the same rows again. `start_step`: the step a
    resumed run starts from (0 for a fresh one)."""
    if not primary:
        return []
    sinks = []
    if run_cfg.tensorboard:
        sinks.append(TensorBoardSink(Path(out_dir) / "tensorboard", purge_step=start_step + 1 if start_step else None))
    if run_cfg.wandb_project:  # RunConfig.validate has checked that wandb is installed
        sinks.append(WandbSink(run_cfg.wandb_project, Path(out_dir).name, config))
    return sinks
