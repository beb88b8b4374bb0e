"""Score a model on FunASR ChatML JSONL manifests: CER (zh), WER (en), MER (cs), per language/subset.

    python -m funasr_jax.evaluate --checkpoint runs/sft4 --data data/demo/test.jsonl [--out hyps.jsonl]

Audio paths are relative to each JSONL file. Hypotheses are written as JSONL (key, ref, hyp,
language, subset, errors, ref_tokens). Bad lines / unreadable audio are reported with
file:line; `--on-error skip` scores the rest (and says how many were skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.data.manifest import ManifestError, read_manifests
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.text import metrics
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT


def evaluate_examples(rec: Recognizer, examples: Sequence, *, mode: str = "llm", batch_size: int = 8,
                      max_new_tokens: int = 128, on_error: str = "raise", progress: bool = False):
    """Decode `examples` (manifest `Example`s) with `rec.recognize` (energy gate, long files cut)
    and score them.

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
                wave = load_audio(ex.audio_path)
            except AudioError as e:
                if on_error == "raise":
                    raise AudioError(f"{ex.source}:{ex.line}: {e}") from None
                skipped.append(f"{ex.source}:{ex.line}: {e}")
                continue
            audio_s += len(wave) / 16000
            waves.append(wave)
            ok.append(i)
        if not waves:
            continue
        results = rec.recognize(waves, [examples[i].instruction for i in ok],
                                [examples[i].system or DEFAULT_SYSTEM_PROMPT for i in ok], mode=mode,
                                batch_size=batch_size, max_new_tokens=max_new_tokens)
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
           "subset": ex.subset, "errors": c.errors, "ref_tokens": c.ref_tokens}
    if res.first_pass is not None:
        row["first_pass"] = res.first_pass
    return row


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m funasr_jax.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="funasr-jax checkpoint / run dir / Fun-ASR dir")
    p.add_argument("--data", required=True, nargs="+", help="JSONL manifest(s)")
    p.add_argument("--out", help="write hypotheses as JSONL here")
    p.add_argument("--mode", choices=["llm", "ctc"], default="llm")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-utts", type=int, default=0)
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--tokenizer", help="override the tokenizer recorded in the checkpoint")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="LLM mode: decode jointly with the CTC head's prefix scores at this weight "
                        "(0 = plain greedy; default: the weight recorded in the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    try:
        examples = read_manifests(args.data, on_error=args.on_error)
        if args.max_utts:
            examples = examples[: args.max_utts]
        rec = Recognizer.from_checkpoint(args.checkpoint, tokenizer_path=args.tokenizer, ctc_weight=args.ctc_weight)
        rows, table, info = evaluate_examples(rec, examples, mode=args.mode, batch_size=args.batch_size,
                                              max_new_tokens=args.max_new_tokens, on_error=args.on_error,
                                              progress=True)
    except (ManifestError, AudioError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.json:
        print(json.dumps({"breakdown": table, **info}, ensure_ascii=False, indent=2))
    else:
        print(format_table(table, info))
    return 0


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
    lines.append(f"{info['utterances']} utterances scored, {info['skipped']} skipped, "
                 f"{info['audio_seconds']:.1f} s of audio in {info['seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
