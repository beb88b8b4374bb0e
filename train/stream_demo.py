"""The demo's streaming figures: on the test split, the error of streaming
decoding at several chunk sizes against offline decoding, the latency from a word's end to its
appearance in a partial, compute per chunk and the real-time factor.

    python -m train.stream_demo --checkpoint runs/quickstart/sft_llm [--chunks 480 720 1440] [--max-utts N]

Each utterance is fed to `funasr_jax.infer.streaming.StreamingDecoder` in pieces of one chunk.
Latency: the final streaming text is force-aligned to the CTC head's posteriors of the whole
utterance (`decode.align`), giving each token's end time; a word's end is its last token's. A
word appears when the partial, from then on in every later partial, holds the final text's
tokens up to that word's last one; its latency = (audio time of that chunk + that chunk's compute
time) - the word's end. Needs a CTC head sharing the LLM's vocabulary (the tiny preset); without
one latency is left out. Writes `stream_figures.json` (and per-chunk hypotheses) under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from funasr_jax.data.manifest import example_audio, read_manifests
from funasr_jax.decode.align import AlignmentError, ctc_forced_align
from funasr_jax.infer.evaluate import evaluate_examples, is_noise_only
from funasr_jax.infer.recognizer import Recognizer, ctc_log_probs, lfr_seconds, shares_vocabulary
from funasr_jax.infer.streaming import StreamConfig, StreamingDecoder, stream_chunks
from funasr_jax.text import metrics
from funasr_jax.text.join import is_wide

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "data" / "demo" / "test.jsonl"
CHUNKS = (480.0, 720.0, 1440.0)


def word_last_tokens(pieces: list[str]) -> list[int]:
    """Indices of the tokens that end a word: before a piece starting with '▁', around a CJK
    character (each is a word), and the last token."""
    ends = []
    for j, p in enumerate(pieces):
        nxt = pieces[j + 1] if j + 1 < len(pieces) else None
        if (nxt is None or nxt.startswith("\u2581") or (nxt.lstrip("\u2581")[:1] and is_wide(nxt.lstrip("\u2581")[0]))
                or (p[-1:] and is_wide(p[-1]))):
            if p.strip("\u2581"):
                ends.append(j)
    return ends


def appearance_times(partials, final_ids) -> list[float]:
    """[len(final_ids)]: for token j, the audio seconds + compute seconds of the first partial
    from which every later partial starts with final_ids[:j + 1]."""
    out = []
    for j in range(len(final_ids)):
        want = tuple(final_ids[: j + 1])
        t = None
        for p in reversed(partials):
            if tuple(p.token_ids[: j + 1]) != want:
                break
            t = p.audio_s + p.compute_s
        out.append(t if t is not None else partials[-1].audio_s + partials[-1].compute_s)
    return out


def stream_one(rec: Recognizer, wave: np.ndarray, ex, chunk_ms: float, rollback: int):
    dec = StreamingDecoder(rec, StreamConfig(chunk_ms=chunk_ms, rollback_tokens=rollback),
                           instruction=ex.instruction, system=ex.system)
    parts = []
    for piece in stream_chunks(wave, int(round(chunk_ms * 16))):
        parts += dec.feed(piece)
    parts.append(dec.finish())
    return parts


def latencies(rec: Recognizer, wave: np.ndarray, parts) -> list[float]:
    """Word latencies (s) of one streamed utterance (module docstring); [] if it cannot be aligned."""
    final_ids = list(parts[-1].token_ids)
    if not final_ids:
        return []
    feats = rec.features(wave)
    x, lengths = rec.pad_feats([feats])
    logp = np.asarray(ctc_log_probs(rec.model, rec.params, x, lengths))[0, : int(lengths[0])]
    try:
        al = ctc_forced_align(logp, final_ids, rec.cfg.ctc.blank)
    except AlignmentError:
        return []
    frame_s = lfr_seconds(1, rec.frontend)
    shown = appearance_times(parts, final_ids)
    pieces = [rec.tokenizer.id_to_token(i) for i in final_ids]
    return [shown[j] - al.spans[j][1] * frame_s for j in word_last_tokens(pieces)]


def stream_figures(run_dir, examples, *, chunks=CHUNKS, rollback: int = 5, out: Path | None = None,
                   **recognizer_options) -> dict:
    rec = Recognizer.from_checkpoint(run_dir, **recognizer_options)
    with_latency = rec.has_ctc and shares_vocabulary(rec.tokenizer, rec.ctc_vocab)
    rows, table, info = evaluate_examples(rec, examples, batch_size=16, max_new_tokens=64)
    figures = {"offline": {"error": table, "noise_only": info["noise_only"],
                           "rtf": info["seconds"] / max(info["audio_seconds"], 1e-9)}}
    offline_hyp = {r["key"]: r["hyp"] for r in rows}
    waves = [example_audio(ex) for ex in examples]
    for chunk in chunks:
        t0, srows, lat, per_chunk, n_chunks = time.time(), [], [], [], 0
        for ex, w in zip(examples, waves):
            parts = stream_one(rec, w, ex, chunk, rollback)
            text = parts[-1].text
            c = metrics.score_pair(ex.target, text)
            srows.append({"key": ex.key, "ref": ex.target, "hyp": text, "offline": offline_hyp.get(ex.key),
                          "language": ex.language, "subset": ex.subset, "errors": c.errors,
                          "ref_tokens": c.ref_tokens, "partials": len(parts)})
            per_chunk += [p.compute_s for p in parts if p.compute_s > 0]
            n_chunks += len(parts)
            if with_latency and not is_noise_only(srows[-1]):
                lat += latencies(rec, w, parts)
        wall = time.time() - t0
        speech = [r for r in srows if not is_noise_only(r)]
        noise = [r for r in srows if is_noise_only(r)]
        audio_s = sum(len(w) for w in waves) / 16000.0
        figures[f"chunk_{int(chunk)}"] = {
            "error": metrics.breakdown(speech),
            "noise_only": {"utterances": len(noise), "nonempty": sum(bool(r["hyp"].strip()) for r in noise)},
            "same_as_offline": sum(r["hyp"] == r["offline"] for r in srows) / max(len(srows), 1),
            "latency_s": _stats(lat), "compute_per_chunk_s": _stats(per_chunk), "chunks": n_chunks,
            "rtf": sum(per_chunk) / max(audio_s, 1e-9), "wall_s": round(wall, 1)}
        if out is not None:
            with open(Path(out) / f"stream_hyps_{int(chunk)}.jsonl", "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in srows)
        print(f"chunk {int(chunk)} ms: error {figures[f'chunk_{int(chunk)}']['error']['overall']['rate']:.2%} "
              f"(offline {table['overall']['rate']:.2%}), {wall:.0f} s", file=sys.stderr)
    return figures


def _stats(xs) -> dict:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, np.float64)
    return {"n": int(a.size), "mean": round(float(a.mean()), 4), "p50": round(float(np.percentile(a, 50)), 4),
            "p90": round(float(np.percentile(a, 90)), 4)}


def stream_table(figures: dict) -> str:
    """Markdown: one row per decoding (offline, each chunk size)."""
    head = "| decoding | error | vs offline | noise-only with output | word latency mean / p90 (s) | compute per chunk (ms) | RTF |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    off = figures["offline"]["error"]["overall"]["rate"]
    for label, fig in figures.items():
        rate = fig["error"]["overall"]["rate"]
        lat, comp = fig.get("latency_s", {}), fig.get("compute_per_chunk_s", {})
        lat_s = f"{lat['mean']:.2f} / {lat['p90']:.2f}" if lat.get("n") else "–"
        comp_s = f"{1000 * comp['mean']:.0f}" if comp.get("n") else "–"
        no = fig["noise_only"]
        lines.append(f"| {label} | {rate:.2%} | {rate / max(off, 1e-9):.3f}x | {no['nonempty']}/{no['utterances']} | "
                     f"{lat_s} | {comp_s} | {fig['rtf']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.stream_demo", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=str(TEST))
    p.add_argument("--chunks", type=float, nargs="+", default=list(CHUNKS))
    p.add_argument("--rollback", type=int, default=5)
    p.add_argument("--max-utts", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    examples = read_manifests([args.data])
    if args.max_utts:
        examples = examples[: args.max_utts]
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    figures = stream_figures(args.checkpoint, examples, chunks=args.chunks, rollback=args.rollback, out=out)
    print(stream_table(figures))
    if out:
        (out / "stream_figures.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
