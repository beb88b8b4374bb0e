"""Progress line (loss, steps/s, audio-seconds/s, ETA), metrics JSONL, and the curves PNG."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    """Append-only JSONL of metric rows (one object per line), each row also handed to `sinks`
    (`train.metric_sinks`: TensorBoard, W&B)."""

    def __init__(self, path, sinks=()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def rewind(self, step: int, *, drop_dev_at_step: bool = False) -> int:
        """Drop the rows of steps after `step` (a resume from `step` logs them again; also the dev
        rows at `step` itself when drop_dev_at_step), rewriting the file atomically. Unparsable
        lines (a line cut by a crash) go too. -> number of rows dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
                s = int(row["step"])
            except (ValueError, KeyError, TypeError):
                dropped += bool(line.strip())
                continue
            if s > step or (drop_dev_at_step and s == step and row.get("split") != "train"):
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
        return dropped


class Progress:
    """One status line per log interval: step/total, loss, steps/s, audio-s/s, ETA."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, stream=sys.stderr):
        self.total, self.start, self.enabled, self.stream = total, start, enabled, stream
        self.t0 = time.time()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.time() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        parts = [f"step {step}/{self.total}", f"loss {row.get('loss', float('nan')):.4f}"]
        if "llm_acc" in row:
            parts.append(f"acc {row['llm_acc']:.3f}")
        if "ctc_loss" in row:
            parts.append(f"ctc {row['ctc_loss']:.3f}")
        if "aed_loss" in row:
            parts.append(f"aed {row['aed_loss']:.3f} (acc {row['aed_acc']:.3f})")
        if "bestrq_loss" in row:
            parts.append(f"bestrq {row['bestrq_loss']:.3f} (acc {row['bestrq_acc']:.3f})")
        if "reward" in row:  # a grpo stage
            comps = " ".join(f"{k[2:]} {v:+.3f}" for k, v in row.items() if k.startswith("r/"))
            parts.append(f"reward {row['reward']:+.3f} ({comps})")
            parts.append(f"kl {row.get('kl', 0):.4f} clip {100 * row.get('clip_frac', 0):.1f}% "
                         f"ent {row.get('entropy', 0):.2f} len {row.get('out_len', 0):.1f}")
            t = [row.get(k, 0.0) for k in ("t_rollout", "t_reward", "t_update")]
            parts.append("rollout/reward/update " + "/".join(f"{x:.2f}" for x in t) + " s")
        parts += [f"{row.get('steps_per_s', 0):.2f} steps/s", f"{row.get('audio_s_per_s', 0):.1f} audio-s/s"]
        if "data_share" in row:
            parts.append(f"data wait {100 * row['data_share']:.0f}%")
        parts.append(f"ETA {_fmt(eta)}")
        line = " | ".join(parts)
        print(("\r" + line + " " * 8) if self.tty else line, end="" if self.tty else "\n", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream)


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def plot_curves(metrics_path, png_path) -> Path | None:
    """Training loss (and its parts) and dev error rate against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    dev = [r for r in rows if r.get("split") == "dev" and r.get("error_rate") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rl = any("reward" in r for r in train)
    keys = ["reward"] + sorted({k for r in train for k in r if k.startswith("r/")}) if rl else \
        ["loss", "llm_loss", "ctc_loss", "bestrq_loss", "aed_loss"]
    for key in keys:
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("mean reward" if rl else "loss")
    if not rl:
        axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("reward (GRPO)" if rl else "training loss")
    if dev:
        axes[1].plot([r["step"] for r in dev], [100 * r["error_rate"] for r in dev], marker="o", label="dev")
        axes[1].legend()
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("error rate (%)")
    axes[1].set_title("dev CER / WER / MER")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
