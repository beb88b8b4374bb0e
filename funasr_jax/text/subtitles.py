"""Timed transcript segments and their SRT / JSON forms.

Times are milliseconds from the start of the recording. SRT cues are numbered from 1, written
`HH:MM:SS,mmm --> HH:MM:SS,mmm`, one blank line between cues; segments with empty text are not
written (numbering stays consecutive).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TimedSegment", "parse_srt", "srt_timestamp", "to_json_records", "to_srt"]


@dataclass(frozen=True)
class TimedSegment:
    """A stretch of speech: start_ms, end_ms, its text, and optionally words (objects with
    text / start_ms / end_ms, e.g. `decode.align.TimedToken`)."""

    start_ms: float
    end_ms: float
    text: str
    words: tuple = ()


def srt_timestamp(ms: float) -> str:
    """Milliseconds -> 'HH:MM:SS,mmm' (rounded to the nearest ms, halves up); hours may pass 99."""
    if not math.isfinite(ms):
        raise ValueError(f"srt_timestamp: time must be finite, got {ms} ms")
    if ms < 0:
        raise ValueError(f"srt_timestamp: negative time {ms} ms")
    total = int(math.floor(ms + 0.5))
    h, rest = divmod(total, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{milli:03d}"


def to_srt(segments: Sequence[TimedSegment]) -> str:
    """The segments as an SRT document (module docstring). Raises ValueError naming the cue when
    a segment ends before it starts or starts before the previous one."""
    cues, prev_start = [], None
    for i, seg in enumerate(segments):
        if seg.end_ms < seg.start_ms:
            raise ValueError(f"to_srt: segment {i} ends ({seg.end_ms} ms) before it starts ({seg.start_ms} ms)")
        if prev_start is not None and seg.start_ms < prev_start:
            raise ValueError(f"to_srt: segment {i} starts at {seg.start_ms} ms, before segment {i - 1} ({prev_start} ms)")
        prev_start = seg.start_ms
        text = " ".join(seg.text.split())
        if not text:
            continue
        cues.append(f"{len(cues) + 1}\n{srt_timestamp(seg.start_ms)} --> {srt_timestamp(seg.end_ms)}\n{text}\n")
    return "\n".join(cues)


def to_json_records(segments: Sequence[TimedSegment]) -> list[dict]:
    """[{start_ms, end_ms, text, words: [{text, start_ms, end_ms}]}], times rounded to 0.1 ms."""
    return [{"start_ms": round(float(s.start_ms), 1), "end_ms": round(float(s.end_ms), 1), "text": s.text,
             "words": [{"text": w.text, "start_ms": round(float(w.start_ms), 1), "end_ms": round(float(w.end_ms), 1)}
                       for w in s.words]} for s in segments]


_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
_CUE_TIMES = re.compile(rf"^{_TIME} --> {_TIME}$")


def _ms(h, m, s, milli) -> float:
    return float(((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli))


def parse_srt(text: str) -> list[TimedSegment]:
    """A strict SRT parser (cue number, times line, one or more text lines, blank line)."""
    out = []
    blocks = [b for b in re.split(r"\n\s*\n", text.strip("\n")) if b.strip()]
    for k, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if len(lines) < 3 or lines[0].strip() != str(k):
            raise ValueError(f"parse_srt: cue {k}: expected its number, a times line and text, got {lines[:3]!r}")
        m = _CUE_TIMES.match(lines[1].strip())
        if not m:
            raise ValueError(f"parse_srt: cue {k}: malformed times line {lines[1]!r}")
        start, end = _ms(*m.groups()[:4]), _ms(*m.groups()[4:])
        if end < start:
            raise ValueError(f"parse_srt: cue {k} ends before it starts")
        out.append(TimedSegment(start, end, "\n".join(lines[2:])))
    return out
