"""The README's first command: train the tiny model on the bundled demo corpus, print the test CER.

    python -m train.quickstart [--out runs/quickstart] [--scale 1.0]

Stages chained (each starts from the previous one's checkpoint), chosen for a model whose LLM
starts untrained:
  1. ctc_warmup — encoder + CTC head with CTC loss (stands in for the recipe's encoder
     pre-training, which needs far more data than a demo);
  2. sft_full   — every part (encoder, adaptor, whole LLM) with the LLM loss and a CTC auxiliary
     loss; stages sft1-sft4 assume a pre-trained LLM, so on a random tiny LLM they are
     replaced by this joint stage (sft5, the CTC head alone, is left out: it does not change the
     LLM transcript the demo scores; `python -m train.main --config sft5.py` runs it).
Then the test split is decoded with the LLM (greedy) and scored: CER for zh, WER for en, MER
for code-switched, and overall.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from funasr_jax import configtools


def stage_config(name: str, out: Path, steps: int, init_from: str | None, **overrides):
    from train.main import load_config

    cfg = load_config(name, "tiny")
    run = dataclasses.replace(cfg.run, out_dir=str(out / cfg.stage.name), steps=steps, init_from=init_from,
                              save_every=0, log_every=max(1, min(25, steps // 10)))
    cfg = dataclasses.replace(cfg, run=run)
    for k, v in overrides.items():
        cfg = configtools.override(cfg, k, str(v))
    return cfg.validate()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.quickstart", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count")
    p.add_argument("--eval-utts", type=int, default=0, help="0 = the whole test split")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.time()

    from funasr_jax.data.manifest import read_manifests
    from funasr_jax.evaluate import evaluate_examples, format_table
    from funasr_jax.recognizer import Recognizer
    from train.loop import train

    plan = [("ctc_warmup", 1000, {"optim.warmup_steps": 50, "data.noise_prob": 0.1}),
            ("sft_full", 900, {"optim.warmup_steps": 50, "data.noise_prob": 0.1})]
    prev = None
    for name, steps, over in plan:
        n = max(2, int(steps * args.scale))
        cfg = stage_config(name, out, n, prev, **{"run.eval_max_utts": 40, **over})
        print(f"== {name}: {n} steps -> {cfg.run.out_dir}", file=sys.stderr)
        train(cfg)
        prev = cfg.run.out_dir

    rec = Recognizer.from_checkpoint(prev)
    examples = read_manifests([cfg.data.test_files[0]])
    if args.eval_utts:
        examples = examples[: args.eval_utts]
    rows, table, info = evaluate_examples(rec, examples, mode="llm", batch_size=32, max_new_tokens=64)
    with open(out / "test_hyps.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    _, ctc_table, ctc_info = evaluate_examples(rec, examples, mode="ctc", batch_size=32)
    (out / "test_scores.json").write_text(json.dumps({"llm": {"breakdown": table, **info},
                                                      "ctc": {"breakdown": ctc_table, **ctc_info}},
                                                     indent=2, ensure_ascii=False))
    print("test split, CTC head (greedy):")
    print(format_table(ctc_table, ctc_info))
    print("test split, LLM decoder (greedy):")
    print(format_table(table, info))
    wall = time.time() - t0
    print(f"quickstart: test error rate (CER zh / WER en / MER cs, overall) LLM {100 * table['overall']['rate']:.2f}%, "
          f"CTC {100 * ctc_table['overall']['rate']:.2f}% ({info['utterances']} utterances) in {wall / 60:.1f} min; "
          f"checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
