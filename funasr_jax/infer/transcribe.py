"""Transcribe audio files: `python -m funasr_jax.transcribe --checkpoint CKPT a.wav b.flac ...`.

Prints `path<TAB>text` per file (or one JSON object per file with --json). Any soundfile
format; other sample rates are resampled to 16 kHz and channels averaged. Silent files print an
empty text; long files are cut into segments and their texts joined (`Recognizer.recognize`).
A file that cannot be read is reported by name (exit status 2) without stopping the others.

  --vad / --timestamps / --srt DIR: long-recording mode (`infer.long_audio`): WebRTC VAD
      segments of at most 30 s decoded in batches, each printed with its start / end (and, with
      --timestamps, word times from CTC forced alignment; --json gives them as JSON); --srt
      writes DIR/<file stem>.srt.
  --stream: feed each file in --chunk-ms chunks to the streaming decoder (`infer.streaming`),
      printing each partial when it changes and the final text.
  --beam N: beam search (with --length-penalty).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.host_memory import tune_host_allocator
from funasr_jax.infer.long_audio import transcribe_long
from funasr_jax.infer.recognizer import Context, Recognizer
from funasr_jax.infer.streaming import StreamConfig, stream_chunks, stream_transcribe
from funasr_jax.io.checkpoint import CheckpointError
from funasr_jax.text.hotwords import HotwordIndex, load_hotwords
from funasr_jax.text.join import join_texts
from funasr_jax.text.subtitles import to_json_records, to_srt
from funasr_jax.text.prompt import instruction_text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.transcribe", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="funasr-jax checkpoint / run dir / Fun-ASR dir")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--mode", choices=["llm", "ctc"], default="llm", help="LLM greedy (default) or CTC greedy")
    p.add_argument("--language", default=None, help="zh | en | ja | a Chinese language name (prompt hint)")
    p.add_argument("--hotwords", help="hotword file (UTF-8, one per line, # comments): retrieved per segment "
                                      "against its CTC hypothesis into the prompt")
    p.add_argument("--hotword", action="append", default=[], help="one hotword (repeatable; with --hotwords too)")
    p.add_argument("--hotword-top-k", type=int, default=10, help="retrieved hotwords put into a prompt")
    p.add_argument("--context", default="", help="previous segment's transcript put into the prompt (上文)")
    p.add_argument("--passage", action="append", default=[], help="a context passage for the prompt (repeatable)")
    p.add_argument("--no-itn", action="store_true", help="ask for text without normalisation")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--tokenizer", help="override the tokenizer recorded in the checkpoint")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="LLM mode: decode jointly with the CTC head's prefix scores at this weight "
                        "(0 = plain greedy; default: the weight recorded in the checkpoint)")
    p.add_argument("--beam", type=int, default=1, help="beam width (1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="beam ranking: score / length ** this")
    p.add_argument("--vad", action="store_true", help="long-recording mode: segment with WebRTC VAD, print segments")
    p.add_argument("--timestamps", action="store_true", help="segments with word start/end times (implies --vad)")
    p.add_argument("--srt", metavar="DIR", help="write DIR/<stem>.srt subtitles (implies --vad)")
    p.add_argument("--context-previous", action="store_true",
                   help="--vad: each segment's prompt carries the previous segment's transcript (contextual SFT models)")
    p.add_argument("--stream", action="store_true", help="streaming decoding: print partials as they change")
    p.add_argument("--chunk-ms", type=float, default=720.0, help="--stream: audio per decoding step")
    p.add_argument("--rollback", type=int, default=5, help="--stream: tokens of a partial the next chunk may rewrite")
    p.add_argument("--max-audio-s", type=float, default=4 * 3600.0,
                   help="refuse files longer than this many seconds (default 4 h)")
    args = p.parse_args(argv)
    tune_host_allocator()
    if args.stream and (args.vad or args.timestamps or args.srt):
        p.error("--stream cannot be combined with --vad / --timestamps / --srt")
    try:
        words = (load_hotwords(args.hotwords) if args.hotwords else []) + list(args.hotword)
        index = HotwordIndex(words) if words else None
        rec = Recognizer.from_checkpoint(args.checkpoint, tokenizer_path=args.tokenizer, ctc_weight=args.ctc_weight,
                                         hotword_top_k=args.hotword_top_k, beam=args.beam,
                                         length_penalty=args.length_penalty)
        if args.stream:
            cfg = StreamConfig(chunk_ms=args.chunk_ms, rollback_tokens=args.rollback,
                               max_new_tokens=args.max_new_tokens)
    except (CheckpointError, ValueError) as e:  # HotwordError, StreamError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    context = Context(args.context, tuple(args.passage)) if (args.context or args.passage) else None
    instruction = instruction_text(args.language, (), not args.no_itn)
    if args.stream:
        return _stream_files(rec, cfg, args, index, context, instruction)
    if args.vad or args.timestamps or args.srt:
        return _long_files(rec, args, index, context)
    status = 0
    for i in range(0, len(args.audio), args.batch_size):  # read per batch: memory bounded by the batch
        chunk = []
        for path in args.audio[i: i + args.batch_size]:
            try:
                chunk.append((path, load_audio(path, max_seconds=args.max_audio_s)))
            except AudioError as e:
                print(f"error: {e}", file=sys.stderr)
                status = 2
        if not chunk:
            continue
        t0 = time.time()
        try:
            texts = [t.text for t in rec.recognize([w for _, w in chunk], [instruction] * len(chunk), mode=args.mode,
                                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                                   hotwords=[index] * len(chunk), contexts=[context] * len(chunk))]
        except ValueError as e:  # e.g. more hotwords than a model without a CTC branch can take
            print(f"error: {e}", file=sys.stderr)
            return 2
        dt = time.time() - t0
        for (path, w), text in zip(chunk, texts):
            if args.json:
                print(json.dumps({"path": path, "text": text, "seconds": round(len(w) / 16000, 3),
                                  "rtf": round(dt / max(sum(len(x) for _, x in chunk) / 16000, 1e-9), 4)},
                                 ensure_ascii=False))
            else:
                print(f"{path}\t{text}")
    return status


def _stream_files(rec, cfg, args, index, context, instruction) -> int:
    status = 0
    for path in args.audio:
        try:
            wave = load_audio(path, max_seconds=args.max_audio_s)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        last = None
        for part in stream_transcribe(rec, stream_chunks(wave, int(round(args.chunk_ms * 16))), cfg,
                                      instruction=instruction, hotwords=index, context=context):
            if part.text == last and not part.final:
                continue
            last = part.text
            if args.json:
                print(json.dumps({"path": path, "text": part.text, "final": part.final, "audio_s": round(part.audio_s, 3),
                                  "compute_ms": round(1000 * part.compute_s, 1)}, ensure_ascii=False), flush=True)
            else:
                print(f"{path}\t{part.audio_s:7.2f}s\t{'final' if part.final else 'partial'}\t{part.text}", flush=True)
    return status


def _long_files(rec, args, index, context) -> int:
    status = 0
    for path in args.audio:
        try:
            wave = load_audio(path, max_seconds=args.max_audio_s)
            segs = transcribe_long(rec, wave, language=args.language, itn=not args.no_itn, hotwords=index,
                                   context=context, context_previous=args.context_previous,
                                   timestamps=args.timestamps or bool(args.srt), batch_size=args.batch_size,
                                   max_new_tokens=args.max_new_tokens)
        except (AudioError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        if args.srt:
            out = Path(args.srt)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{Path(path).stem}.srt").write_text(to_srt(segs), encoding="utf-8")
        if args.json:
            print(json.dumps({"path": path, "text": join_texts([s.text for s in segs]),
                              "segments": to_json_records(segs) if args.timestamps else
                              [{"start_ms": round(s.start_ms, 1), "end_ms": round(s.end_ms, 1), "text": s.text}
                               for s in segs]}, ensure_ascii=False))
        else:
            for s in segs:
                print(f"{path}\t{s.start_ms / 1000:8.2f}\t{s.end_ms / 1000:8.2f}\t{s.text}")
                if args.timestamps:
                    print("\t\t\t" + " ".join(f"{w.text}[{w.start_ms / 1000:.2f}-{w.end_ms / 1000:.2f}]" for w in s.words))
    return status


if __name__ == "__main__":
    sys.exit(main())
