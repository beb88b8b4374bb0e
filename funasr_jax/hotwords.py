"""Hotword retrieval from the command line: try a list, or time it.

    python -m funasr_jax.hotwords --hotwords hot.txt "CTC hypothesis text"   # retrieved words
    python -m funasr_jax.hotwords --bench 10000 [--out hotwords_bench.json]  # time per utterance

The benchmark builds `--bench` random Chinese / English / mixed hotwords, retrieves against the
demo test split's transcripts (stand-ins for CTC hypotheses) and prints milliseconds per
utterance for our vectorised search next to rapidfuzz's `process.extract` with
`fuzz.partial_ratio` (a different, character-level score: a speed reference, not the same result).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from funasr_jax.text.hotwords import HotwordError, HotwordIndex, load_hotwords

DEMO_TEST = Path(__file__).resolve().parents[1] / "data" / "demo" / "test.jsonl"


def random_hotwords(n: int, seed: int = 0) -> list[str]:
    """n distinct random hotwords: 2-4 Han characters, 4-9 Latin letters, or Latin + Han."""
    rng = np.random.default_rng(seed)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    out: dict[str, None] = {}
    while len(out) < n:
        zh = "".join(rng.choice(han, rng.integers(2, 5)))
        en = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(4, 10)))
        out[[zh, en.capitalize(), en.upper()[:2] + zh[:2]][rng.integers(3)]] = None
    return list(out)


def bench(n: int, utts: int = 100) -> dict:
    words = random_hotwords(n)
    hyps = [json.loads(line)["messages"][2]["content"] for line in DEMO_TEST.read_text(encoding="utf-8").splitlines()]
    hyps = [h for h in hyps if h][:utts]
    t = time.perf_counter()
    index = HotwordIndex(words)
    build_s = time.perf_counter() - t
    index.retrieve(hyps[0])
    t = time.perf_counter()
    for h in hyps:
        index.retrieve(h, top_k=10)
    ours = (time.perf_counter() - t) / len(hyps)
    row = {"hotwords": n, "utterances": len(hyps), "build_s": round(build_s, 3), "ours_ms": round(1e3 * ours, 3)}
    try:
        from rapidfuzz import fuzz, process
    except ImportError:
        row["rapidfuzz_ms"] = None
    else:
        lowered = [w.lower() for w in words]
        t = time.perf_counter()
        for h in hyps:
            process.extract(h.lower(), lowered, scorer=fuzz.partial_ratio, limit=10)
        row["rapidfuzz_ms"] = round(1e3 * (time.perf_counter() - t) / len(hyps), 3)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.hotwords", description=__doc__.split("\n")[0])
    p.add_argument("hypothesis", nargs="?", help="a CTC hypothesis to retrieve against")
    p.add_argument("--hotwords", help="hotword file (one per line)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--bench", type=int, nargs="*", help="time retrieval at these list sizes (e.g. 1000 10000)")
    p.add_argument("--out", help="write the benchmark rows as JSON")
    args = p.parse_args(argv)
    if args.bench is not None:
        rows = [bench(n) for n in (args.bench or [10000])]
        print(f"{'hotwords':>9}{'build s':>9}{'ours ms/utt':>13}{'rapidfuzz ms/utt':>18}{'ratio':>7}")
        for r in rows:
            ratio = f"{r['rapidfuzz_ms'] / r['ours_ms']:.2f}" if r["rapidfuzz_ms"] else "-"
            print(f"{r['hotwords']:>9}{r['build_s']:>9.2f}{r['ours_ms']:>13.2f}{r['rapidfuzz_ms'] or '-':>18}{ratio:>7}")
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))
        return 0
    if not args.hotwords or args.hypothesis is None:
        p.error("give --hotwords FILE and a hypothesis, or --bench")
    try:
        index = HotwordIndex(load_hotwords(args.hotwords), threshold=args.threshold)
    except HotwordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for word, score in index.retrieve(args.hypothesis, top_k=args.top_k):
        print(f"{score:.3f}\t{word}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
