"""Streaming-simulated training data: utterances cut at chunk boundaries, each paired with the
transcript prefix spoken before the cut.

    python -m funasr_jax.stream_data --checkpoint runs/sft_llm --data first_pass/train.jsonl \\
        --out-dir runs/stream_data --fraction 0.5 --chunk-ms 480 720 1440

The report trains on simulated streaming data so that chunked decoding loses little. For a
`fraction` of the utterances (drawn with `seed`), a chunk size is drawn from `chunk_ms` and a cut
k x chunk (k >= 1, at least `min_tail_ms` before the audio's end) uniformly among those that
fit. The reference transcript is aligned to the CTC head's posteriors of the whole utterance
(`decode.align.ctc_forced_align`, labels = the CTC vocabulary's encoding of the transcript);
the cut copy's target is the longest run of labels whose aligned frames all end at or before
the cut — only past context is exposed, a word cut in the middle is left out. The copy is a new
manifest line (key `<key>#cut<ms>`) with `audio_end_ms` set (the data pipeline reads only the
audio before it, `data.manifest.example_audio`), `speech_length` shortened, and — when the
input lines carry a `first_pass` — the CTC first pass recomputed on the cut audio, as a
streaming decoder sees it. Every input line is written too (the offline data the copies mix
with). Utterances that cannot be aligned (more labels than frames) get no copy; the summary
counts them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from funasr_jax.data.manifest import example_audio, read_manifests, require_jsonl
from funasr_jax.decode.align import AlignmentError, ctc_forced_align
from funasr_jax.infer.first_pass import relocate_audio
from funasr_jax.io.checkpoint import CheckpointError
from funasr_jax.infer.recognizer import Recognizer, ctc_log_probs, lfr_seconds

MIN_CHUNK_MS = 60.0  # one LFR frame


def spoken_prefix(spans: Sequence[tuple[int, int]], cut_frame: int) -> int:
    """How many labels (in order) have their aligned frames end at or before `cut_frame`."""
    n = 0
    for _, end in spans:
        if end > cut_frame:
            break
        n += 1
    return n


def draw_cut(rng: np.random.Generator, seconds: float, chunk_ms: Sequence[float], min_tail_ms: float) -> float | None:
    """A cut time in ms at a multiple of a drawn chunk size, at least `min_tail_ms` before the end
    of `seconds` of audio; None when no cut fits."""
    chunk = float(chunk_ms[int(rng.integers(len(chunk_ms)))])
    k_max = int(math.floor((seconds * 1000.0 - min_tail_ms) / chunk))
    if k_max < 1:
        return None
    return chunk * int(rng.integers(1, k_max + 1))


def write_stream_manifests(rec: Recognizer, files: Sequence[str], out_dir, *, fraction: float = 0.5,
                           chunk_ms: Sequence[float] = (480.0, 720.0, 1440.0), min_tail_ms: float = 240.0,
                           seed: int = 0, batch_size: int = 16) -> dict:
    """Write `out_dir/<name>` per input manifest: every line, plus a cut copy for the drawn
    fraction (module docstring). Returns a summary dict (counts, output paths)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"stream_data: fraction must lie in [0, 1], got {fraction}")
    if not chunk_ms or min(chunk_ms) < MIN_CHUNK_MS:
        raise ValueError(f"stream_data: chunk_ms must be >= {MIN_CHUNK_MS} ms each, got {list(chunk_ms)}")
    if not rec.has_ctc:
        raise ValueError("stream_data: the model needs a CTC head and vocabulary to align transcripts with")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {"utterances": 0, "cut": 0, "too_short": 0, "unaligned": 0, "empty_prefix": 0}
    outputs = []
    for f in files:
        require_jsonl([f], "stream_data")
        examples = read_manifests([f], on_error="skip")
        by_line = {ex.line: ex for ex in examples}
        plans = {}
        for ex in examples:
            if rng.random() >= fraction:
                continue
            wave = example_audio(ex)
            cut = draw_cut(rng, len(wave) / 16000.0, chunk_ms, min_tail_ms)
            if cut is None:
                counts["too_short"] += 1
                continue
            plans[ex.line] = (wave, cut)
        copies = _cut_copies(rec, [by_line[i] for i in sorted(plans)], [plans[i] for i in sorted(plans)],
                             counts, batch_size)
        dst = out_dir / Path(f).name
        with open(f, encoding="utf-8") as src, open(dst, "w", encoding="utf-8") as out:
            for lineno, text in enumerate(src, start=1):
                ex = by_line.get(lineno)
                if ex is None:
                    continue
                obj = _relocated(json.loads(text), ex, out_dir)
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                counts["utterances"] += 1
                if lineno in copies:
                    cut_ms, target, first = copies[lineno]
                    c = json.loads(json.dumps(obj))
                    c["key"] = f"{ex.key}#cut{int(cut_ms)}"
                    c["audio_end_ms"] = cut_ms
                    c["speech_length"] = int(cut_ms // 10)
                    for m in c["messages"]:
                        if m.get("role") == "assistant":
                            m["content"] = target
                    c.pop("text_length", None)
                    if first is not None:
                        c["first_pass"] = first
                    c["hotwords"] = [h for h in c.get("hotwords") or [] if h in target]
                    out.write(json.dumps(c, ensure_ascii=False) + "\n")
                    counts["cut"] += 1
        outputs.append(str(dst))
    return {"files": outputs, **counts}


def _relocated(obj: dict, ex, out_dir: Path) -> dict:
    for m in obj["messages"]:
        if m.get("role") == "user":
            m["content"] = relocate_audio(m["content"], ex.audio_path, out_dir.resolve())
    return obj


def _cut_copies(rec: Recognizer, examples, plans, counts: dict, batch_size: int) -> dict:
    """{line: (cut ms, prefix target, first pass of the cut audio or None)} for the planned cuts."""
    out = {}
    frame_ms = lfr_seconds(1, rec.frontend) * 1000.0  # CTC frames are LFR frames (60 ms by default)
    for a in range(0, len(examples), batch_size):
        exs, pl = examples[a: a + batch_size], plans[a: a + batch_size]
        feats = [rec.features(w) for w, _ in pl]
        x, lengths = rec.pad_feats(feats)
        logp = np.asarray(ctc_log_probs(rec.model, rec.params, x, lengths))
        cut_feats = [rec.features(w[: int(round(c * 16))]) for w, c in pl]
        firsts = rec.decode_ctc(cut_feats) if any(ex.first_pass is not None for ex in exs) else None
        for k, (ex, (_, cut)) in enumerate(zip(exs, pl)):
            labels = list(rec.ctc_vocab.encode(ex.target))
            try:
                al = ctc_forced_align(logp[k, : int(lengths[k])], labels, rec.cfg.ctc.blank)
            except AlignmentError:
                counts["unaligned"] += 1
                continue
            n = spoken_prefix(al.spans, int(cut // frame_ms))
            target = " ".join(rec.ctc_vocab.decode(labels[:n]).split())
            counts["empty_prefix"] += not target and bool(ex.target)
            out[ex.line] = (cut, target, None if firsts is None or ex.first_pass is None else firsts[k])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.stream_data", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model or training run with a CTC head (aligns the transcripts)")
    p.add_argument("--data", nargs="+", required=True, help="FunASR ChatML JSONL manifests")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--fraction", type=float, default=0.5, help="share of utterances that get a cut copy")
    p.add_argument("--chunk-ms", type=float, nargs="+", default=[480.0, 720.0, 1440.0])
    p.add_argument("--min-tail-ms", type=float, default=240.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        rec = Recognizer.from_checkpoint(args.checkpoint)
        res = write_stream_manifests(rec, args.data, args.out_dir, fraction=args.fraction, chunk_ms=args.chunk_ms,
                                     min_tail_ms=args.min_tail_ms, seed=args.seed)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in res.items() if k != "files"}))
    print(f"wrote {', '.join(os.fspath(f) for f in res['files'])}")
    return 0
