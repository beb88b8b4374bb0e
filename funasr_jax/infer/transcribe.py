"""Transcribe audio files: `python -m funasr_jax.transcribe --checkpoint CKPT a.wav b.flac ...`.

Prints `path<TAB>text` per file (or one JSON object per file with --json). Any soundfile
format; other sample rates are resampled to 16 kHz and channels averaged. Silent files print an
empty text; long files are cut into segments and their texts joined (`Recognizer.recognize`).
A file that cannot be read is reported by name (exit status 2) without stopping the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.infer.recognizer import Context, Recognizer
from funasr_jax.io.checkpoint import CheckpointError
from funasr_jax.text.hotwords import HotwordIndex, load_hotwords
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
    args = p.parse_args(argv)
    try:
        words = (load_hotwords(args.hotwords) if args.hotwords else []) + list(args.hotword)
        index = HotwordIndex(words) if words else None
        rec = Recognizer.from_checkpoint(args.checkpoint, tokenizer_path=args.tokenizer, ctc_weight=args.ctc_weight,
                                         hotword_top_k=args.hotword_top_k)
    except (CheckpointError, ValueError) as e:  # HotwordError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    context = Context(args.context, tuple(args.passage)) if (args.context or args.passage) else None
    instruction = instruction_text(args.language, (), not args.no_itn)
    status = 0
    for i in range(0, len(args.audio), args.batch_size):  # read per batch: memory bounded by the batch
        chunk = []
        for path in args.audio[i: i + args.batch_size]:
            try:
                chunk.append((path, load_audio(path)))
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


if __name__ == "__main__":
    sys.exit(main())
