"""The demo's long-recording and timestamp figures.

    python -m train.long_demo --checkpoint runs/quickstart/sft_llm [--minutes 10] [--out DIR]

Builds one recording from the test split's speech utterances in order, separated by pauses of
0.4–2.0 s drawn from a seeded generator, until it is `--minutes` long (the pauses hold a -60 dBFS
noise floor, as a real recording does; digital zeros are a front-end condition the demo corpus's
Opus clips never show, and they cost the tiny model ~6 points of error on their own), and transcribes it with
`funasr_jax.infer.long_audio.transcribe_long` (WebRTC VAD segments, batched decoding, word
timestamps). Ground truth comes from the construction: each utterance's position in the file,
and inside it the speech onset / offset as tools/make_demo_corpus.py trimmed it (first / last
sample above 1 % of the clip's peak). Reported: segments found vs utterances (a segment belongs
to the utterance it overlaps most), the error of the long-file decoding (segment texts joined per
utterance) against decoding each utterance on its own, the timestamp error of each utterance's
first word start and last word end against its speech onset / offset, the wall time, RTF and the
process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from funasr_jax.data.manifest import example_audio, read_manifests
from funasr_jax.audio.vad import VadConfig
from funasr_jax.infer.evaluate import evaluate_examples
from funasr_jax.infer.long_audio import transcribe_long
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.text import metrics
from funasr_jax.text.join import join_texts

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "data" / "demo" / "test.jsonl"
SR = 16000
NOISE_FLOOR = 10 ** (-60 / 20)  # RMS of the pauses: -60 dBFS


def build_recording(examples, minutes: float, seed: int = 0):
    """(wave [S], [(example, start, end, onset, offset)] in samples of the file)."""
    rng = np.random.default_rng(seed)
    parts, placed, pos = [], [], 0
    for ex in examples:
        if pos >= minutes * 60 * SR:
            break
        gap = (NOISE_FLOOR * rng.standard_normal(int(rng.uniform(0.4, 2.0) * SR))).astype(np.float32)
        w = example_audio(ex)
        idx = np.flatnonzero(np.abs(w) > 0.01 * np.abs(w).max())
        parts += [gap, w]
        pos += len(gap)
        placed.append((ex, pos, pos + len(w), pos + int(idx[0]), pos + int(idx[-1]) + 1))
        pos += len(w)
    parts.append((NOISE_FLOOR * rng.standard_normal(SR // 2)).astype(np.float32))
    return np.concatenate(parts), placed


def long_figures(run_dir, examples, *, minutes: float = 10.0, vad: VadConfig = VadConfig(),
                 out: Path | None = None) -> dict:
    rec = Recognizer.from_checkpoint(run_dir)
    speech = [ex for ex in examples if metrics.tokens(ex.target)]
    wave, placed = build_recording(speech, minutes)
    t0 = time.time()
    segs = transcribe_long(rec, wave, vad=vad, batch_size=16, max_new_tokens=64)
    wall = time.time() - t0
    owner = []
    for s in segs:
        a, b = s.start_ms * SR / 1000, s.end_ms * SR / 1000
        ov = [max(0.0, min(b, e) - max(a, st)) for _, st, e, _, _ in placed]
        owner.append(int(np.argmax(ov)) if max(ov) > 0 else -1)
    per_utt = {k: [s for s, o in zip(segs, owner) if o == k] for k in range(len(placed))}
    rows, on_ts, off_ts = [], [], []
    for k, (ex, _, _, onset, offset) in enumerate(placed):
        mine = per_utt[k]
        hyp = join_texts([s.text for s in mine])
        c = metrics.score_pair(ex.target, hyp)
        rows.append({"key": ex.key, "ref": ex.target, "hyp": hyp, "language": ex.language, "subset": ex.subset,
                     "errors": c.errors, "ref_tokens": c.ref_tokens, "segments": len(mine)})
        words = [w for s in mine for w in s.words]
        if words:
            on_ts.append(words[0].start_ms - 1000.0 * onset / SR)
            off_ts.append(words[-1].end_ms - 1000.0 * offset / SR)
    alone_rows, alone_table, _ = evaluate_examples(rec, [p[0] for p in placed], batch_size=16, max_new_tokens=64)
    fig = {
        "audio_minutes": round(len(wave) / SR / 60, 2), "utterances": len(placed), "segments": len(segs),
        "utterances_with_one_segment": sum(len(v) == 1 for v in per_utt.values()),
        "utterances_missed": sum(len(v) == 0 for v in per_utt.values()),
        "segments_without_speech": sum(o == -1 for o in owner),
        "error_long_file": metrics.breakdown(rows), "error_per_utterance": alone_table,
        "onset_error_ms": _stats(on_ts), "offset_error_ms": _stats(off_ts),
        "wall_s": round(wall, 1), "rtf": round(wall / (len(wave) / SR), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }
    if out is not None:
        with open(Path(out) / "long_rows.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return fig


def _stats(xs) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, np.float64)
    return {"n": int(a.size), "mean": round(float(a.mean()), 1), "mean_abs": round(float(np.abs(a).mean()), 1),
            "median_abs": round(float(np.median(np.abs(a))), 1), "p90_abs": round(float(np.percentile(np.abs(a), 90)), 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.long_demo", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=str(TEST))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--pad-ms", type=float, default=VadConfig.pad_ms, help="VAD padding around speech")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    fig = long_figures(args.checkpoint, read_manifests([args.data]), minutes=args.minutes,
                      vad=VadConfig(pad_ms=args.pad_ms), out=out)
    print(json.dumps(fig, indent=1, ensure_ascii=False))
    if out:
        (out / "long_figures.json").write_text(json.dumps(fig, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
