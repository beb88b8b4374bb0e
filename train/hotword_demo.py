"""The demo's hotword figures: keyword recall / accuracy and overall error on
the test split, without hotwords and with each utterance's own hotwords among 0 / 100 / 1,000
distractors (`funasr_jax.infer.hotword_eval`), overall, per subset and per hotword category,
plus the noise-only clips that got any output. Run by `python -m train.quickstart --hotwords`
after its hotword SFT stage (configs/hotword_sft.py); also usable on any run directory:

    python -m train.hotword_demo --checkpoint runs/quickstart/hotword_sft [--max-utts N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples
from funasr_jax.infer.hotword_eval import HotwordPlan, hotword_indexes, keyword_breakdown, load_categories
from funasr_jax.infer.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
POOL = DEMO / "hotwords" / "distractors.txt"
CATEGORIES = DEMO / "hotwords" / "categories.tsv"
DISTRACTORS = (0, 100, 1000)


def hotword_figures(run_dir, examples, *, distractors=DISTRACTORS, pool=POOL, categories=CATEGORIES,
                    batch_size: int = 32, max_new_tokens: int = 64, out: Path | None = None) -> dict:
    """{"without": fig, "with_<n>": fig ...}; fig = {error: breakdown, keywords: keyword_breakdown,
    noise_only: {...}, utterances}. Hypotheses go to out/hotword_hyps_<label>.jsonl when out is set."""
    rec = Recognizer.from_checkpoint(run_dir)
    cats = load_categories(categories) if categories else None
    figures = {}
    runs = [("without", None)] + [(f"with_{n}", n) for n in distractors]
    for label, n in runs:
        indexes = None if n is None else hotword_indexes(examples, HotwordPlan.make("manifest", examples, n, str(pool)))
        rows, table, info = evaluate_examples(rec, examples, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                              hotwords=indexes)
        figures[label] = {"error": table, "keywords": keyword_breakdown(rows, cats),
                          "noise_only": info["noise_only"], "utterances": info["utterances"]}
        if out is not None:
            with open(Path(out) / f"hotword_hyps_{label}.jsonl", "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return figures


def hotword_table(figures: dict) -> str:
    """Markdown: one row per group (overall error, subsets, categories), one column triple per run."""
    labels = list(figures)
    f3 = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    head = "| group | " + " | ".join(f"{lab} err / acc / rec" for lab in labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 1)]
    groups = list(dict.fromkeys(g for fig in figures.values() for g in [*fig["error"], *fig["keywords"]]))
    for g in groups:
        cells = []
        for lab in labels:
            e = figures[lab]["error"].get(g)
            k = figures[lab]["keywords"].get(g)
            err = f"{100 * e['rate']:.2f}%" if e else "–"
            cells.append(f"{err} / {f3(k and k['accuracy'])} / {f3(k and k['recall'])}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines.append("| noise-only clips with output | " + " | ".join(
        f"{figures[lab]['noise_only']['nonempty']}/{figures[lab]['noise_only']['utterances']}" for lab in labels) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.hotword_demo", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="the hotword SFT run (or any model)")
    p.add_argument("--data", default=str(DEMO / "test.jsonl"))
    p.add_argument("--max-utts", type=int, default=0)
    p.add_argument("--distractors", type=int, nargs="+", default=list(DISTRACTORS))
    p.add_argument("--out", help="write the figures (JSON) and hypotheses into this folder")
    args = p.parse_args(argv)
    examples = read_manifests([args.data])
    if args.max_utts:
        examples = examples[: args.max_utts]
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    figures = hotword_figures(args.checkpoint, examples, distractors=tuple(args.distractors), out=out)
    if out is not None:
        (out / "hotword_scores.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    print(hotword_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
