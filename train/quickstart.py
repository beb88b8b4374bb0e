"""The README's first command: train the tiny model on the bundled demo corpus, print the test CER.

    python -m train.quickstart [--out runs/quickstart] [--scale 1.0]

Stages chained (each starts from the previous one's checkpoint), chosen for a model whose LLM
starts untrained:
  1. ctc_warmup — encoder + CTC head with CTC loss (stands in for the recipe's encoder
     pre-training, which needs far more data than a demo);
  2. first pass — the CTC head decodes the training split; its hypotheses go into the manifests
     (`funasr_jax.infer.first_pass`), as the recipe feeds the CTC hypothesis to the LLM;
  3. sft_llm    — adaptor + whole LLM on the frozen encoder, the prompt carrying the first pass
     (stages sft1-sft4 assume a pre-trained LLM; sft5, the CTC head alone, would only repeat
     what ctc_warmup trained).
Then the test split is decoded three ways and scored (CER for zh, WER for en, MER for
code-switched, overall): the headline is the LLM decoded jointly with the CTC head's prefix
scores (weight 0.5, the model's recorded default); plain LLM greedy and CTC greedy are shown
beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from funasr_jax import configtools
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples, format_table
from funasr_jax.infer.first_pass import write_first_pass_manifests
from funasr_jax.infer.recognizer import Recognizer
from train.loop import train
from train.main import load_config


def stage_config(name: str, out: Path, steps: int, init_from: str | None, **overrides):
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

    def run_stage(name, steps, prev, **over):
        n = max(2, int(steps * args.scale))
        cfg = stage_config(name, out, n, prev, **{"run.eval_max_utts": 40, "optim.warmup_steps": 50,
                                                   "data.noise_prob": 0.1, **over})
        print(f"== {name}: {n} steps -> {cfg.run.out_dir}", file=sys.stderr)
        train(cfg)
        return cfg

    warm = run_stage("ctc_warmup", 2000, None)
    print("== first pass: CTC hypotheses of the training split", file=sys.stderr)
    fp = write_first_pass_manifests(Recognizer.from_checkpoint(warm.run.out_dir), warm.data.train_files,
                                    out / "first_pass", batch_size=32)
    cfg = run_stage("sft_llm", 800, warm.run.out_dir, **{"data.train_files": tuple(fp["files"])})

    rec = Recognizer.from_checkpoint(cfg.run.out_dir)  # first-pass prompt + joint weight from the checkpoint
    examples = read_manifests([cfg.data.test_files[0]])
    if args.eval_utts:
        examples = examples[: args.eval_utts]
    results = {}
    for label, mode, weight in (("joint", "llm", rec.ctc_weight), ("llm", "llm", 0.0), ("ctc", "ctc", 0.0)):
        rec.ctc_weight = weight
        rows, table, info = evaluate_examples(rec, examples, mode=mode, batch_size=32, max_new_tokens=64)
        results[label] = {"ctc_weight": weight, "breakdown": table, **info}
        with open(out / f"test_hyps_{label}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "test_scores.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    titles = {"ctc": "CTC head (greedy)", "llm": "LLM decoder (greedy, first pass in the prompt)",
              "joint": f"LLM decoder + CTC prefix scores (weight {results['joint']['ctc_weight']})"}
    for label in ("ctc", "llm", "joint"):
        print(f"test split, {titles[label]}:")
        print(format_table(results[label]["breakdown"], results[label]))
    wall = time.time() - t0
    rate = {k: 100 * v["breakdown"]["overall"]["rate"] for k, v in results.items()}
    print(f"quickstart: test error rate (CER zh / WER en / MER cs, overall) {rate['joint']:.2f}% "
          f"(LLM + CTC prefix scores; LLM greedy {rate['llm']:.2f}%, CTC greedy {rate['ctc']:.2f}%; "
          f"{results['joint']['utterances']} utterances) in {wall / 60:.1f} min; checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
