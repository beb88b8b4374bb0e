"""Audio lists -> unlabelled manifest lines, for Best-RQ pre-training on audio without transcripts.

    python -m funasr_jax.audio_list LIST [LIST ...] --out unlabelled.jsonl

A list has one utterance per line: `path` or `key path` (a Kaldi `wav.scp` without pipes);
blank lines and lines starting with `#` are skipped; relative paths are resolved against the
list's folder. Each file is decoded once (`audio.io.load_audio`: missing, corrupt, empty or
non-finite audio raises naming `list:line`), and written as a ChatML line without an assistant
message, its `speech_length` (10 ms fbank frames, for bucketing) from the decoded length. The
trainer reads such lines only with `data.require_transcripts=false` (configs/bestrq.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from funasr_jax.audio.frontend import num_fbank_frames
from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.data.manifest import SPEECH_BEGIN, SPEECH_END, ManifestError
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT

DEFAULT_INSTRUCTION = "语音转写："


def read_audio_list(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """[(key, absolute audio path, 'list:line')] of one list file; ManifestError names list:line."""
    src = os.fspath(path)
    try:
        lines = Path(src).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ManifestError(f"{src}: cannot open audio list ({e.strerror or e})") from None
    out, seen = [], {}
    for n, text in enumerate(lines, start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(maxsplit=1)
        key, audio = (Path(parts[0]).stem, parts[0]) if len(parts) == 1 else (parts[0], parts[1].strip())
        if audio.endswith("|"):
            raise ManifestError(f"{src}:{n}: piped wav.scp commands are not supported ({audio!r})")
        if key in seen:
            raise ManifestError(f"{src}:{n}: key {key!r} repeats line {seen[key]} (give each line its own key)")
        seen[key] = n
        if not os.path.isabs(audio):
            audio = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(src)), audio))
        out.append((key, audio, f"{src}:{n}"))
    return out


def unlabelled_line(key: str, audio: str, speech_length: int, instruction: str = DEFAULT_INSTRUCTION) -> dict:
    """The manifest object of one unlabelled utterance (no assistant message)."""
    return {"key": key, "speech_length": int(speech_length),
            "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                         {"role": "user", "content": f"{instruction}{SPEECH_BEGIN}!{audio}{SPEECH_END}"}]}


def write_unlabelled_manifest(lists: Iterable[str | os.PathLike], out: str | os.PathLike,
                              max_seconds: float | None = None) -> dict:
    """Decode every listed file and write one unlabelled line per file to `out`.
    Returns {"utterances", "seconds", "out"}; AudioError / ManifestError name list:line."""
    items = [it for lst in lists for it in read_audio_list(lst)]
    rows, seconds = [], 0.0
    for key, audio, where in items:
        try:
            wave = load_audio(audio, max_seconds=max_seconds)
        except AudioError as e:
            raise AudioError(f"{where}: {e}") from None
        seconds += len(wave) / 16000
        rows.append(unlabelled_line(key, audio, num_fbank_frames(len(wave))))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {"utterances": len(rows), "seconds": seconds, "out": str(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.audio_list", description=__doc__.split("\n")[0])
    p.add_argument("lists", nargs="+", help="audio lists: 'path' or 'key path' per line")
    p.add_argument("--out", required=True, help="the unlabelled JSONL manifest to write")
    p.add_argument("--max-seconds", type=float, default=None, help="refuse files longer than this")
    args = p.parse_args(argv)
    try:
        info = write_unlabelled_manifest(args.lists, args.out, args.max_seconds)
    except (AudioError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {info['utterances']} unlabelled utterances ({info['seconds'] / 3600:.2f} h) to {info['out']}; "
          "train Best-RQ on it with --set data.train_files=" + info["out"])
    return 0
