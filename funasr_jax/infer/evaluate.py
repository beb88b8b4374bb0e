"""Score a model on FunASR ChatML JSONL manifests: CER (zh), WER (en), MER (cs), per language/subset.

    python -m funasr_jax.evaluate --checkpoint runs/sft4 --data data/demo/test.jsonl [--out hyps.jsonl]

Audio paths are relative to each JSONL file. Hypotheses are written as JSONL (key, ref, hyp,
language, subset, errors, ref_tokens). Bad lines / unreadable audio are reported with
file:line; `--on-error skip` scores the rest and lists what it skipped (the first
`SHOWN_SKIPPED` with file:line and reason, the rest counted). Nothing to score — manifests
without a usable line, or every utterance skipped — is an error (exit 2, one line), never a table
of 0 utterances.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from funasr_jax.audio.io import AudioError
from funasr_jax.data.manifest import (
    EmptyManifestError,
    ManifestError,
    ManifestStats,
    empty_manifest_message,
    example_audio,
    read_manifests,
)
from funasr_jax.host_memory import tune_host_allocator
from funasr_jax.infer.hotword_eval import HotwordPlan, hotword_indexes, keyword_breakdown, load_categories
from funasr_jax.infer.recognizer import Context, Recognizer
from funasr_jax.text.hotwords import HotwordError, HotwordIndex
from funasr_jax.text import metrics
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT

SHOWN_SKIPPED = 10  # skipped utterances the summary names (file:line and reason); the rest are counted


def evaluate_examples(rec: Recognizer, examples: Sequence, *, mode: str = "llm", batch_size: int = 8,
                      max_new_tokens: int = 128, on_error: str = "raise", progress: bool = False,
                      hotwords: Sequence[HotwordIndex | None] | None = None,
                      contexts: Sequence[Context | None] | None = None, ctc_text: bool = False):
    """Decode `examples` (manifest `Example`s) with `rec.recognize` (energy gate, long files cut)
    and score them. hotwords / contexts: per example (aligned with `examples`), see
    `Recognizer.recognize`; ctc_text (mode "llm"): each row also gets "ctc", the CTC head's greedy
    hypothesis from the encoder pass the LLM decoded from.

    Returns (rows, breakdown, info): rows are per-utterance dicts in manifest order (every
    decoded example, noise-only ones included); breakdown is `metrics.breakdown` of the rows
    with a reference to score (overall, per language, per subset). Noise-only examples (no
    scoring tokens in the reference, e.g. target "") cannot be scored by error rate; info reports
    them as info["noise_only"] = {"utterances": n, "nonempty": k}, k of them with a non-empty
    hypothesis.
    """
    # Sort by length so batches pad little; restore manifest order in the output.
    order = sorted(range(len(examples)), key=lambda i: examples[i].speech_length or 0)
    rows: dict[int, dict] = {}
    skipped = []
    t0, audio_s = time.time(), 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        waves, ok = [], []
        for i in idx:
            ex = examples[i]
            try:
                wave = example_audio(ex)
            except AudioError as e:
                if on_error == "raise":
                    raise AudioError(f"{ex.source}:{ex.line}: {e}") from None
                skipped.append((i, f"{ex.source}:{ex.line}: {e}"))
                continue
            audio_s += len(wave) / 16000
            waves.append(wave)
            ok.append(i)
        if not waves:
            continue
        # ctc_text is passed only when asked for: a recognizer without the option serves the rest
        results = rec.recognize(waves, [examples[i].instruction for i in ok],
                                [examples[i].system or DEFAULT_SYSTEM_PROMPT for i in ok], mode=mode,
                                batch_size=batch_size, max_new_tokens=max_new_tokens,
                                hotwords=None if hotwords is None else [hotwords[i] for i in ok],
                                contexts=None if contexts is None else [contexts[i] for i in ok],
                                **({"ctc_text": True} if ctc_text else {}))
        for i, res in zip(ok, results):
            rows[i] = _row(examples[i], res)
        if progress:
            done = start + len(idx)
            el = time.time() - t0
            print(f"\rdecoded {done}/{len(order)} | {audio_s / max(el, 1e-9):.1f} audio-s/s", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    out_rows = [rows[i] for i in sorted(rows)]
    speech = [r for r in out_rows if not is_noise_only(r)]
    noise = [r for r in out_rows if is_noise_only(r)]
    skipped = [w for _, w in sorted(skipped)]  # manifest order
    info = {"utterances": len(out_rows), "skipped": len(skipped), "skipped_where": skipped[:20],
            "seconds": time.time() - t0, "audio_seconds": audio_s,
            "noise_only": {"utterances": len(noise), "nonempty": sum(bool(r["hyp"].strip()) for r in noise)}}
    return out_rows, metrics.breakdown(speech), info


def is_noise_only(row: dict) -> bool:
    """True for a row whose reference has nothing to score (a noise-only clip, target "")."""
    return not metrics.tokens(row["ref"])


def _row(ex, res) -> dict:
    """The output row of one example given its `Transcript`."""
    c = metrics.score_pair(ex.target, res.text)
    row = {"key": ex.key, "where": ex.where, "ref": ex.target, "hyp": res.text, "language": ex.language,
           "subset": ex.subset, "errors": c.errors, "ref_tokens": c.ref_tokens, "hotwords": list(ex.hotwords)}
    if res.first_pass is not None:
        row["first_pass"] = res.first_pass
    if res.ctc_text is not None:
        row["ctc"] = res.ctc_text
    return row


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m funasr_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="funasr-jax checkpoint / run dir / Fun-ASR dir")
    p.add_argument("--data", required=True, nargs="+", help="JSONL manifest(s)")
    p.add_argument("--out", help="write hypotheses as JSONL here")
    p.add_argument("--mode", choices=["llm", "ctc", "aed"], default="llm",
                   help="llm: the LLM decoder; ctc: CTC greedy; aed: the AED decoder of an AED pre-training run")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-utts", type=int, default=0)
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--tokenizer", help="override the tokenizer recorded in the checkpoint")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="LLM mode: decode jointly with the CTC head's prefix scores at this weight "
                        "(0 = plain greedy; default: the weight recorded in the checkpoint)")
    p.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="beam ranking: score / length ** this")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--hotwords", help="'manifest' (each utterance's own hotwords + --distractors) or a "
                                      "hotword file (one per line) for every utterance; scores with and without")
    p.add_argument("--distractors", type=int, default=0, help="with --hotwords manifest: distractors per utterance")
    p.add_argument("--distractor-pool", help="hotword file to draw distractors from (default: the manifests' hotwords)")
    p.add_argument("--hotword-categories", help="TSV word<TAB>category for per-category keyword figures")
    p.add_argument("--hotword-top-k", type=int, default=10, help="retrieved hotwords put into a prompt")
    p.add_argument("--context", help="JSONL of {key, previous, passages} put into each utterance's prompt")
    args = p.parse_args(argv)
    tune_host_allocator()
    try:
        stats = ManifestStats()
        examples = read_manifests(args.data, on_error=args.on_error, stats=stats)
        if not examples:
            raise EmptyManifestError(empty_manifest_message(args.data, stats, "--data"))
        if args.max_utts:
            examples = examples[: args.max_utts]
        rec = Recognizer.from_checkpoint(args.checkpoint, tokenizer_path=args.tokenizer, ctc_weight=args.ctc_weight,
                                         hotword_top_k=args.hotword_top_k, beam=args.beam,
                                         length_penalty=args.length_penalty)
        contexts = load_contexts(args.context, examples) if args.context else None
        indexes = None
        if args.hotwords:
            plan = HotwordPlan.make(args.hotwords, examples, args.distractors, args.distractor_pool)
            indexes = hotword_indexes(examples, plan)
        categories = load_categories(args.hotword_categories) if args.hotword_categories else None
        runs = {}
        for label, idx in (("without", None), ("with", indexes)) if indexes is not None else (("without", None),):
            rows, table, info = evaluate_examples(rec, examples, mode=args.mode, batch_size=args.batch_size,
                                                  max_new_tokens=args.max_new_tokens, on_error=args.on_error,
                                                  progress=True, hotwords=idx, contexts=contexts)
            if not info["utterances"]:
                raise EmptyManifestError(f"nothing scored: all {info['skipped']} utterances of {', '.join(args.data)} "
                                         f"were skipped (first: {(info['skipped_where'] or ['?'])[0]})")
            runs[label] = (rows, table, info, keyword_breakdown(rows, categories))
    except EmptyManifestError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except (ManifestError, AudioError, HotwordError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last_rows = runs["with" if "with" in runs else "without"][0]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in last_rows)
    if args.json:
        print(json.dumps({label: {"breakdown": t, "keywords": k, **i} for label, (_, t, i, k) in runs.items()},
                         ensure_ascii=False, indent=2) if indexes is not None else
              json.dumps({"breakdown": runs["without"][1], "keywords": runs["without"][3], **runs["without"][2]},
                         ensure_ascii=False, indent=2))
    else:
        print(format_table(runs["without"][1], runs["without"][2]))
        if indexes is not None:
            print(format_hotword_table(runs["without"], runs["with"]))
    return 0


def load_contexts(path: str | Path, examples: Sequence) -> list[Context | None]:
    """A context JSONL ({"key", "previous"?, "passages"?} per line) aligned with `examples`."""
    by_key = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            key, prev, passages = obj["key"], obj.get("previous", ""), obj.get("passages", [])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected {{\"key\", \"previous\", \"passages\"}} ({e})") from None
        if not isinstance(prev, str) or not isinstance(passages, list) or not all(isinstance(x, str) for x in passages):
            raise ValueError(f"{path}:{n}: 'previous' must be a string and 'passages' a list of strings")
        by_key[key] = Context(prev, tuple(passages))
    return [by_key.get(ex.key) for ex in examples]


def format_hotword_table(without, with_) -> str:
    """Side by side without / with hotwords: error rate per group (overall, subset/*) and keyword
    accuracy / recall per group (overall, subset/*, category/*)."""
    (_, t0, _, k0), (_, t1, _, k1) = without, with_
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    lines = [f"{'group':<22}{'err w/o':>9}{'acc w/o':>9}{'rec w/o':>9}{'err with':>10}{'acc with':>10}{'rec with':>10}"]
    for g in dict.fromkeys([*t0, *k0]):
        e0 = f"{100 * t0[g]['rate']:.2f}%" if g in t0 else "-"
        e1 = f"{100 * t1[g]['rate']:.2f}%" if g in t1 else "-"
        a0, r0 = (f(k0[g]["accuracy"]), f(k0[g]["recall"])) if g in k0 else ("-", "-")
        a1, r1 = (f(k1[g]["accuracy"]), f(k1[g]["recall"])) if g in k1 else ("-", "-")
        lines.append(f"{g:<22}{e0:>9}{a0:>9}{r0:>9}{e1:>10}{a1:>10}{r1:>10}")
    return "\n".join(lines)


def format_table(table: dict, info: dict) -> str:
    """The breakdown as a text table (overall, language/*, subset/* rows) and summary lines,
    with the noise-only line when `info` counted any."""
    lines = [f"{'group':<24}{'metric':>7}{'rate':>9}{'errors':>8}{'tokens':>8}{'utts':>6}"]
    for k, v in table.items():
        lines.append(f"{k:<24}{v['metric']:>7}{100 * v['rate']:>8.2f}%{v['errors']:>8}{v['ref_tokens']:>8}{v['utterances']:>6}")
    noise = info.get("noise_only") or {}
    if noise.get("utterances"):
        lines.append(f"noise-only (reference \"\"): {noise['utterances']} utterances, "
                     f"{noise['nonempty']} with a non-empty hypothesis (not in the error rates)")
    skipped = info.get("skipped_where") or []
    if info.get("skipped"):
        lines.append(f"skipped {info['skipped']} (could not be read):")
        lines += [f"  {w}" for w in skipped[:SHOWN_SKIPPED]]
        if info["skipped"] > min(len(skipped), SHOWN_SKIPPED):
            lines.append(f"  ... and {info['skipped'] - min(len(skipped), SHOWN_SKIPPED)} more")
    lines.append(f"{info['utterances']} utterances scored, {info['skipped']} skipped, "
                 f"{info['audio_seconds']:.1f} s of audio in {info['seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
