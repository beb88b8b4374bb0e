"""The README's first command: train the tiny model on the bundled demo corpus, print the test CER.

    python -m train.quickstart [--out runs/quickstart] [--scale 1.0] [--rl]

Stages chained (each starts from the previous one's checkpoint), chosen for a model whose LLM
starts untrained:
  0. ctc_seed   — encoder + CTC head with CTC loss on the first 96 training utterances only, until
     it has memorised them (~40 views each). From scratch on the whole corpus CTC sits on its
     blank plateau for ~10 epochs; starting from a model that has learnt to emit aligned labels
     on a few sentences, it generalises within a few epochs (a data curriculum);
  1. ctc_warmup — the same on the whole training split, batches of 32 (stands in for the
     recipe's encoder pre-training, which needs far more data than a demo);
  2. first pass — the CTC head decodes the training split; its hypotheses go into the manifests
     (`funasr_jax.infer.first_pass`), as the recipe feeds the CTC hypothesis to the LLM;
  3. llm_text   — the LLM alone on text (no audio read): each training utterance's first pass,
     given further simulated errors, in the prompt and its transcript as the answer, so the
     untrained LLM learns to copy and repair the hypothesis before it sees audio (the recipe
     starts from a pre-trained text LLM); not decoded on dev (it has never seen audio);
  4. sft_llm    — adaptor + whole LLM on the frozen encoder, the prompt carrying the first pass
     (stages sft1-sft4 assume a pre-trained LLM; sft5, the CTC head alone, would only repeat
     what ctc_warmup trained).
The seed stage trains without noise; the audio stages after it add noise to 20 % of utterances,
half of those zero-padded first (noise-only stretches), besides the noise-only clips of the corpus
(target ""). Then the test split is decoded three ways and
scored (CER for zh, WER for en, MER for code-switched; overall, per language, per subset): the
LLM decoded jointly with the CTC head's prefix scores (weight 0.5, the model's recorded
default), plain LLM greedy and CTC greedy. The headline is the `free` subset (sentences of
structures never seen in train); noise-only clips are counted apart (how many got any output).
Everything is written to `test_scores.json` with the vocabulary coverage and each stage's time.

With `--rl`, a GRPO stage (configs/grpo.py: LoRA on the LLM, the four rewards, G = 4 samples per
utterance) follows sft_llm and the test split is decoded again the same three ways: the before /
after table (error per language for LLM greedy and joint decoding, noise-only clips with output,
keyword recall and accuracy) goes to `test_scores.json` under "rl". A stage whose run directory
already holds a finished run of the same length (its summary.json) is reused, not retrained, so
`--rl` after a plain quickstart in the same `--out` trains only the RL stage.

With `--pretrain`, the encoder stages become the recipe's encoder pre-training (§4.1) at about the
same wall time as ctc_seed + ctc_warmup: bestrq (Best-RQ on the training audio, transcripts not
read, BESTRQ_STEPS of 16) -> aed_seed (AED + joint CTC on the 96 seed utterances, the seed
curriculum's steps) -> aed (AED + joint CTC on the whole split, AED_STEPS of 32, fewer than
ctc_warmup's because a step also runs the attention decoder); the first pass, llm_text and
sft_llm then follow from the aed run as they do from ctc_warmup, and the test split is decoded
the same three ways plus the AED decoder of the aed run ("aed" in `test_scores.json`).

With `--hotwords`, a hotword SFT stage (configs/hotword_sft.py) follows sft_llm and the test split
is decoded without hotwords and with each utterance's own hotwords among 0 / 100 / 1,000
distractors (`train.hotword_demo`): error, keyword accuracy and recall overall, per subset and
per hotword category, under "hotwords" in `test_scores.json`.
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
from funasr_jax.infer.evaluate import evaluate_examples, format_table, is_noise_only
from funasr_jax.infer.first_pass import write_first_pass_manifests
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.rewards import keyword_scores
from funasr_jax.text.metrics import breakdown, vocabulary_coverage
from train.hotword_demo import POOL, hotword_figures, hotword_table
from train.loop import train
from train.main import apply_overrides, load_config

# Steps per stage and the data settings the quickstart gives each (see the README for the why).
SEED_UTTS, SEED_STEPS, CTC_STEPS, TEXT_STEPS, LLM_STEPS, RL_STEPS, HOTWORD_STEPS = 96, 500, 800, 400, 600, 150, 2000
BESTRQ_STEPS, AED_STEPS = 300, 600  # --pretrain: ~ the wall time of ctc_seed + ctc_warmup in all
STAGE_DATA = {
    "ctc_seed": {"data.batch_size": 8, "data.noise_prob": 0.0, "data.max_train_utts": SEED_UTTS,
                 "optim.warmup_steps": 50},
    "ctc_warmup": {"data.batch_size": 32, "optim.lr": 4e-3, "data.noise_prob": 0.2, "data.zero_pad_prob": 0.5,
                   "optim.warmup_steps": 50},
    "bestrq": {"data.batch_size": 16, "data.noise_prob": 0.0},
    "aed_seed": {"data.batch_size": 8, "data.noise_prob": 0.0, "data.max_train_utts": SEED_UTTS,
                 "optim.warmup_steps": 50},
    "aed": {"data.batch_size": 32, "optim.lr": 4e-3, "data.noise_prob": 0.2, "data.zero_pad_prob": 0.5,
            "optim.warmup_steps": 50},
    "llm_text": {"data.batch_size": 32, "run.eval_at_end": False},
    "sft_llm": {"data.batch_size": 8, "data.noise_prob": 0.2, "data.zero_pad_prob": 0.5,
                "optim.warmup_steps": 50},
    "grpo": {"data.batch_size": 8, "run.eval_at_end": False, "run.eval_every": 0},
    "hotword_sft": {"data.batch_size": 8, "run.eval_every": 0, "data.hotword_pool_file": str(POOL)},
}
MODES = (("joint", "llm", None), ("llm", "llm", 0.0), ("ctc", "ctc", 0.0))  # label, mode, CTC weight (None: the model's)


def finished(cfg) -> bool:
    """True when cfg's run directory holds a finished, uninterrupted run of cfg.run.steps steps."""
    path = Path(cfg.run.out_dir) / "summary.json"
    if not path.exists():
        return False
    summary = json.loads(path.read_text())
    return summary.get("steps") == cfg.run.steps and not summary.get("interrupted")


def keyword_totals(rows, examples) -> dict:
    """Keyword recall / accuracy over the test rows with hotwords (funasr_jax.rewards.keyword_scores)."""
    hot = {ex.key: ex.hotwords for ex in examples if ex.hotwords}
    m = r = h = 0
    for row in rows:
        if row.get("key") in hot:
            k = keyword_scores(row["hyp"], row["ref"], hot[row["key"]])
            m, r, h = m + k["matched"], r + k["in_ref"], h + k["in_hyp"]
    return {"recall": m / r if r else 1.0, "accuracy": m / h if h else 1.0, "hotwords_in_refs": r}


def evaluate_test(run_dir, examples, subsets, out: Path, tag: str = "") -> dict:
    """Decode the test examples with the model in `run_dir` the three ways of MODES and score them."""
    rec = Recognizer.from_checkpoint(run_dir)  # first-pass prompt + joint weight from the checkpoint
    default_weight = rec.ctc_weight
    results = {}
    for label, mode, weight in MODES:
        rec.ctc_weight = default_weight if weight is None else weight
        rows, table, info = evaluate_examples(rec, examples, mode=mode, batch_size=32, max_new_tokens=64)
        per_subset = {sub: breakdown([r for r in rows if r.get("subset") == sub and not is_noise_only(r)])
                      for sub in subsets}
        results[label] = {"ctc_weight": rec.ctc_weight, "breakdown": table, "per_subset": per_subset,
                          "keywords": keyword_totals(rows, examples), **info}
        with open(out / f"test_hyps_{label}{tag}.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return results


def rl_table(before: dict, after: dict) -> str:
    """Markdown before/after table of the test split: error per language (LLM greedy, joint),
    noise-only clips with output, keyword recall / accuracy."""
    lines = ["| decoding | group | SFT | after GRPO |", "|---|---|---|---|"]
    for label in ("llm", "joint"):
        for group in ("overall", "subset/free", "language/zh", "language/en", "language/cs"):
            b = before[label]["breakdown"].get(group, {}).get("rate", float("nan"))
            a = after[label]["breakdown"].get(group, {}).get("rate", float("nan"))
            metric = before[label]["breakdown"].get(group, {}).get("metric", "")
            lines.append(f"| {label} | {group} ({metric}) | {100 * b:.2f}% | {100 * a:.2f}% |")
        nb, na = before[label]["noise_only"], after[label]["noise_only"]
        lines.append(f"| {label} | noise-only clips with output | {nb['nonempty']}/{nb['utterances']} | "
                     f"{na['nonempty']}/{na['utterances']} |")
        for k in ("recall", "accuracy"):
            lines.append(f"| {label} | keyword {k} | {before[label]['keywords'][k]:.3f} | "
                         f"{after[label]['keywords'][k]:.3f} |")
    return "\n".join(lines)


def stage_config(name: str, out: Path, steps: int, init_from: str | None, user_sets=(), **overrides):
    """The stage's config: its file at the tiny preset, the quickstart's settings (`overrides`),
    then the user's `--set a.b=v` strings (`user_sets`), which win."""
    cfg = load_config(name, "tiny")
    run = dataclasses.replace(cfg.run, out_dir=str(out / cfg.stage.name), steps=steps, init_from=init_from,
                              save_every=0, log_every=max(1, min(25, steps // 10)))
    cfg = dataclasses.replace(cfg, run=run)
    for k, v in overrides.items():
        cfg = configtools.override(cfg, k, str(v))
    return apply_overrides(cfg, user_sets)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.quickstart", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count")
    p.add_argument("--eval-utts", type=int, default=0, help="0 = the whole test split")
    p.add_argument("--rl", action="store_true", help="add the GRPO stage and report the test split before / after it")
    p.add_argument("--pretrain", action="store_true",
                   help="encoder pre-training (Best-RQ -> AED) in place of the CTC seed / warm-up stages")
    p.add_argument("--hotwords", action="store_true",
                   help="add hotword SFT and report keyword recall / accuracy with 0 / 100 / 1,000 distractors")
    p.add_argument("--set", action="append", default=[], metavar="A.B=V",
                   help="override a config field of every stage (after the quickstart's own settings)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.time()

    timing: dict[str, dict] = {}

    def run_stage(name, steps, prev, config=None, **over):
        n = max(2, int(steps * args.scale))
        cfg = stage_config(config or name, out, n, prev, args.set,
                           **{"run.eval_max_utts": 40, **STAGE_DATA[name], **over})
        if finished(cfg):
            print(f"== {name}: reusing the finished run in {cfg.run.out_dir}", file=sys.stderr)
            timing[name] = {"steps": n, "reused": True, "wall_s": 0.0}
            return cfg
        print(f"== {name}: {n} steps of {cfg.data.batch_size} -> {cfg.run.out_dir}", file=sys.stderr)
        t = time.time()
        train(cfg)
        timing[name] = {"steps": n, "batch_size": cfg.data.batch_size, "wall_s": round(time.time() - t, 1),
                        "steps_per_s": round(n / (time.time() - t), 2)}
        return cfg

    if args.pretrain:
        rq = run_stage("bestrq", BESTRQ_STEPS, None)
        seed = run_stage("aed_seed", SEED_STEPS, rq.run.out_dir, config="aed", **{"run.out_dir": str(out / "aed_seed")})
        warm = run_stage("aed", AED_STEPS, seed.run.out_dir)
    else:
        seed = run_stage("ctc_seed", SEED_STEPS, None, config="ctc_warmup", **{"run.out_dir": str(out / "ctc_seed")})
        warm = run_stage("ctc_warmup", CTC_STEPS, seed.run.out_dir)
    print("== first pass: CTC hypotheses of the training split", file=sys.stderr)
    t = time.time()
    fp_files = [str(out / "first_pass" / Path(f).name) for f in warm.data.train_files]
    if timing[warm.stage.name].get("reused") and all(Path(f).exists() for f in fp_files):
        fp = {"files": fp_files}  # written by the run that trained this ctc_warmup
    else:
        fp = write_first_pass_manifests(Recognizer.from_checkpoint(warm.run.out_dir), warm.data.train_files,
                                        out / "first_pass", batch_size=32)
    timing["first_pass"] = {"wall_s": round(time.time() - t, 1)}
    text = run_stage("llm_text", TEXT_STEPS, warm.run.out_dir, **{"data.train_files": tuple(fp["files"])})
    cfg = run_stage("sft_llm", LLM_STEPS, text.run.out_dir, **{"data.train_files": tuple(fp["files"])})

    t = time.time()
    examples = read_manifests([cfg.data.test_files[0]])
    if args.eval_utts:
        examples = examples[: args.eval_utts]
    train_texts = [ex.target for ex in read_manifests(list(warm.data.train_files))]
    coverage = {sub: vocabulary_coverage(train_texts, [ex.target for ex in examples if ex.subset == sub])
                for sub in sorted({ex.subset for ex in examples if ex.target})}
    results = evaluate_test(cfg.run.out_dir, examples, coverage, out)
    timing["test_decode"] = {"wall_s": round(time.time() - t, 1)}
    if args.pretrain:  # the AED decoder of the pre-trained encoder, on its own
        rows, table, info = evaluate_examples(Recognizer.from_checkpoint(warm.run.out_dir), examples, mode="aed",
                                              batch_size=32, max_new_tokens=64)
        results["aed"] = {"breakdown": table, **info,
                          "per_subset": {sub: breakdown([r for r in rows if r.get("subset") == sub
                                                         and not is_noise_only(r)]) for sub in coverage}}
    rl = None
    if args.rl:
        rl_cfg = run_stage("grpo", RL_STEPS, cfg.run.out_dir, **{"data.train_files": tuple(fp["files"])})
        t = time.time()
        rl = {"results": evaluate_test(rl_cfg.run.out_dir, examples, coverage, out, tag="_rl"),
              "run_dir": rl_cfg.run.out_dir}
        timing["test_decode_rl"] = {"wall_s": round(time.time() - t, 1)}
        rows = [json.loads(line) for line in (Path(rl_cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
        rewards = [r["reward"] for r in rows if r.get("split") == "train" and "reward" in r]
        rl["reward_first_last"] = [rewards[0], rewards[-1]] if rewards else None
    hot = None
    if args.hotwords:
        hw_cfg = run_stage("hotword_sft", HOTWORD_STEPS, cfg.run.out_dir, **{"data.train_files": tuple(fp["files"])})
        t = time.time()
        hot = {"run_dir": hw_cfg.run.out_dir, "figures": hotword_figures(hw_cfg.run.out_dir, examples, out=out)}
        timing["test_decode_hotwords"] = {"wall_s": round(time.time() - t, 1)}
    wall = time.time() - t0
    (out / "test_scores.json").write_text(json.dumps({"results": results, "coverage": coverage, "timing": timing,
                                                      "rl": rl, "hotwords": hot, "wall_s": round(wall, 1)},
                                                     indent=2, ensure_ascii=False))
    titles = {"ctc": "CTC head (greedy)", "llm": "LLM decoder (greedy, first pass in the prompt)",
              "joint": f"LLM decoder + CTC prefix scores (weight {results['joint']['ctc_weight']})"}
    if "aed" in results:
        titles["aed"] = f"AED decoder of {warm.run.out_dir} (greedy)"
    for label in [k for k in ("aed", "ctc", "llm", "joint") if k in results]:
        print(f"test split, {titles[label]}:")
        print(format_table(results[label]["breakdown"], results[label]))
        for sub, table in results[label]["per_subset"].items():
            print(f"  {sub} sentences: " + ", ".join(f"{k.split('/')[-1]} {100 * v['rate']:.2f}%"
                                                   for k, v in sorted(table.items()) if not k.startswith("subset/")))
    print("vocabulary coverage of the test split by the train transcripts (CJK characters + words): "
          + ", ".join(f"{sub} {100 * c['coverage']:.1f} % of {c['tokens']}" for sub, c in coverage.items()))
    print("time: " + ", ".join(f"{k} {v['wall_s'] / 60:.1f} min" + (f" ({v['steps_per_s']} steps/s)" if "steps_per_s" in v else "")
                               for k, v in timing.items()))

    def rate(label, group):
        return 100 * results[label]["breakdown"].get(group, {}).get("rate", float("nan"))

    noise = results["joint"]["noise_only"]
    print(f"quickstart: test error rate (CER zh / WER en / MER cs) on unseen sentences {rate('joint', 'subset/free'):.2f}% "
          f"(LLM + CTC prefix scores; LLM greedy {rate('llm', 'subset/free'):.2f}%, CTC greedy "
          f"{rate('ctc', 'subset/free'):.2f}%), template sentences {rate('joint', 'subset/template'):.2f}%, "
          f"noise-only clips with output {noise['nonempty']}/{noise['utterances']}; "
          f"{results['joint']['utterances']} utterances, {wall / 60:.1f} min; checkpoints in {out}")
    if rl is not None:
        print("test split before / after GRPO (" + rl["run_dir"] + "):")
        print(rl_table(results, rl["results"]))
        if rl["reward_first_last"]:
            print(f"mean reward per logged interval: first {rl['reward_first_last'][0]:+.3f}, last "
                  f"{rl['reward_first_last'][1]:+.3f}")
    if hot is not None:
        print(f"test split without / with hotwords ({hot['run_dir']}; each utterance's own hotwords among N "
              "distractors, retrieved from the CTC first pass; err / keyword accuracy / recall):")
        print(hotword_table(hot["figures"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
