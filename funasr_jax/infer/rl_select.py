"""RL data selection as the report builds it: five subsets of a labelled corpus for GRPO.

    python -m funasr_jax.rl_select --checkpoint runs/quickstart/sft_llm --data train.jsonl \\
        --out-dir runs/rl_data [--per-subset 200] [--max-utts 0]

Every utterance is decoded with the LLM (its recorded decoding: first-pass prompt, joint CTC
weight) and the CTC head (greedy), both from one encoder pass. Then, in this order of precedence:

  hallucination  the reference is empty (a noise-only clip) and the LLM wrote something, or the LLM
                 output has hallucinated units against the reference (`rewards.hallucinated_span`:
                 repeated n-grams, far too long); noise-only clips are kept here even when silent,
                 as the report keeps genuine hallucination triggers;
  hard           the LLM's error rate > `hard_error` (10 %) while the CTC head's is <= `agree_error`
                 (5 %): the CTC head stands in for the report's three external systems that agree
                 with the reference where ours does not;
  keyword        the utterance carries hotwords;
  regular        everything else.
  long           built, not found: consecutive utterances of one language (manifest order within
                 the language, noise clips left out) concatenated with 0.3 s of silence between them until they pass
                 `long_seconds` (20 s); the audio is written as WAV next to the manifest, the
                 transcripts joined (`text.join`), hotwords merged, first passes joined.

Each subset is cut to `per_subset` lines (a seeded draw; 0 = all). The output `rl.jsonl` keeps every
field of each input line and adds `rl_subset`; the counts are printed and returned. The long
utterances need a bucket that holds them (`data.bucket_frames`, LFR frames of 60 ms: 20 s = 334).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from funasr_jax.data.manifest import (SPEECH_BEGIN, SPEECH_END, ManifestError, example_audio, read_manifests,
                                      require_jsonl)
from funasr_jax.infer.evaluate import evaluate_examples
from funasr_jax.infer.first_pass import relocate_audio
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.io.checkpoint import CheckpointError
from funasr_jax.rewards import hallucinated_span
from funasr_jax.text.join import join_texts
from funasr_jax.text.metrics import score_pair

SUBSETS = ("hard", "long", "hallucination", "keyword", "regular")
GAP_S = 0.3


def error_rate(ref: str, hyp: str) -> float:
    c = score_pair(ref, hyp)
    return c.errors / c.ref_tokens if c.ref_tokens else float(c.errors > 0)


def classify(ref: str, llm_hyp: str, ctc_hyp: str, hotwords: Sequence[str], *, hard_error: float = 0.10,
             agree_error: float = 0.05) -> str:
    """The subset of one decoded utterance (module docstring; `long` is built separately)."""
    if not ref.strip() or hallucinated_span(llm_hyp, ref) > 0:
        return "hallucination"
    if error_rate(ref, llm_hyp) > hard_error and error_rate(ref, ctc_hyp) <= agree_error:
        return "hard"
    if hotwords:
        return "keyword"
    return "regular"


def long_groups(examples, long_seconds: float = 20.0) -> list[list[int]]:
    """Indices of consecutive non-empty examples of one language (manifest order within each
    language) whose audio passes `long_seconds` (manifest `speech_length`, 10 ms frames, plus the
    gaps); a language's trailing short group is dropped."""
    groups, cur, secs = [], {}, {}
    for i, ex in enumerate(examples):
        if not ex.target.strip():
            continue
        g = cur.setdefault(ex.language, [])
        secs[ex.language] = secs.get(ex.language, 0.0) + ex.speech_length / 100.0 + (GAP_S if g else 0.0)
        g.append(i)
        if secs[ex.language] > long_seconds:
            groups.append(g)
            cur[ex.language], secs[ex.language] = [], 0.0
    return sorted(groups)


def _line(ex) -> dict:
    with open(ex.source, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if n == ex.line:
                return json.loads(text)
    raise ManifestError(f"{ex.where}: line vanished while selecting RL data")


def write_long(examples, group: list[int], out_dir: Path, name: str) -> dict:
    """One concatenated utterance (WAV in out_dir/long/) as a manifest object."""
    parts = [examples[i] for i in group]
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    waves = []
    for k, ex in enumerate(parts):
        if k:
            waves.append(gap)
        waves.append(example_audio(ex))
    wav = np.concatenate(waves)
    (out_dir / "long").mkdir(parents=True, exist_ok=True)
    path = out_dir / "long" / f"{name}.wav"
    sf.write(path, wav, 16000)
    obj = _line(parts[0])
    target = join_texts(ex.target for ex in parts)
    for m in obj["messages"]:
        if m.get("role") == "user":
            head = m["content"].split(SPEECH_BEGIN)[0]
            m["content"] = f"{head}{SPEECH_BEGIN}!long/{name}.wav{SPEECH_END}"
        if m.get("role") == "assistant":
            m["content"] = target
    obj.update(key=name, speech_length=int(len(wav) / 160), text_length=0,
               hotwords=list(dict.fromkeys(w for ex in parts for w in ex.hotwords)), rl_subset="long")
    if all(ex.first_pass is not None for ex in parts):
        obj["first_pass"] = join_texts(ex.first_pass for ex in parts)
    return obj


def select_rl_data(rec: Recognizer, files: Sequence[str], out_dir, *, per_subset: int = 0, max_utts: int = 0,
                   long_seconds: float = 20.0, seed: int = 0, batch_size: int = 32) -> dict:
    """Decode, classify, build the long set, cut, write out_dir/rl.jsonl. Returns counts and paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    require_jsonl(files, "rl_select")
    examples = read_manifests(files, on_error="skip")
    if max_utts:
        examples = examples[:max_utts]
    rows, _, _ = evaluate_examples(rec, examples, mode="llm", batch_size=batch_size, on_error="skip", ctc_text=True)
    llm, ctc = {r["where"]: r["hyp"] for r in rows}, {r["where"]: r["ctc"] for r in rows}
    chosen: dict[str, list[dict]] = {s: [] for s in SUBSETS}
    for ex in examples:
        if ex.where not in llm:
            continue
        sub = classify(ex.target, llm[ex.where], ctc[ex.where], ex.hotwords)
        obj = _line(ex)
        for m in obj["messages"]:
            if m.get("role") == "user":
                m["content"] = relocate_audio(m["content"], ex.audio_path, out_dir.resolve())
        obj["rl_subset"] = sub
        chosen[sub].append(obj)
    for k, group in enumerate(long_groups(examples, long_seconds)):
        chosen["long"].append(write_long(examples, group, out_dir, f"long_{k:05d}"))
    rng = np.random.default_rng(seed)
    found = {s: len(v) for s, v in chosen.items()}
    if per_subset:
        for s, v in chosen.items():
            if len(v) > per_subset:
                keep = sorted(rng.choice(len(v), per_subset, replace=False))
                chosen[s] = [v[i] for i in keep]
    path = out_dir / "rl.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for s in SUBSETS:
            f.writelines(json.dumps(o, ensure_ascii=False) + "\n" for o in chosen[s])
    return {"manifest": str(path), "found": found, "written": dict(Counter(o["rl_subset"] for v in chosen.values()
                                                                            for o in v)), "decoded": len(llm)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.rl_select", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="the SFT model GRPO will start from")
    p.add_argument("--data", nargs="+", required=True, help="labelled FunASR ChatML JSONL manifests")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--per-subset", type=int, default=0, help="lines kept per subset (0 = all)")
    p.add_argument("--max-utts", type=int, default=0, help="decode only the first N utterances (0 = all)")
    p.add_argument("--long-seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        rec = Recognizer.from_checkpoint(args.checkpoint)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rec.ctc_vocab is None or not rec.cfg.ctc.enabled:
        print(f"error: {args.checkpoint}: no CTC head to judge hard cases with", file=sys.stderr)
        return 2
    try:
        res = select_rl_data(rec, args.data, args.out_dir, per_subset=args.per_subset, max_utts=args.max_utts,
                             long_seconds=args.long_seconds, seed=args.seed)
    except (ManifestError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("subset          found  written")
    for s in SUBSETS:
        print(f"{s:<14} {res['found'][s]:>6} {res['written'].get(s, 0):>8}")
    print(f"wrote {sum(res['written'].values())} lines to {res['manifest']} ({res['decoded']} utterances decoded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
