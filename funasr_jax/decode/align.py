"""CTC forced alignment (Viterbi) and token / word timestamps, in numpy.

Given a CTC head's log-posteriors [T, V] (one row per encoder frame: an LFR frame of 60 ms for
the SAN-M encoder) and a label sequence l_1..l_L, the best frame path that collapses to the labels
(merge repeats, drop blanks) is found over the 2L + 1 extended states (blank, l_1, blank, ...,
l_L, blank): from state s a frame may stay, move to s + 1, or skip to s + 2 when s + 2 is a label
different from the one at s (a repeated label needs a blank between). O(T * L) time, vectorised
over states. Ties: the predecessor with the largest score wins, and among equal scores the one
closest to the current state (stay, then s - 1, then s - 2), so a label keeps its frames as long
as it can; the path ends in the last label or the final blank, whichever scores higher (the
label on a tie).

Each label's span is [first frame, last frame + 1) of the frames the path assigns to it; its time
in ms is span x frame_ms (+ an offset), so a token "ends" at the end of its last frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


__all__ = ["Alignment", "AlignmentError", "TimedToken", "ctc_forced_align", "ctc_forced_align_batch",
           "token_times", "word_timestamps"]

_NEG = -np.inf
_WORD_START = "\u2581"  # sentencepiece's word-boundary mark


class AlignmentError(ValueError):
    """A label sequence cannot be aligned (names the reason)."""


@dataclass(frozen=True)
class Alignment:
    """labels: the aligned ids; spans: per label [start_frame, end_frame); frame_labels [T]: the
    label index each frame belongs to (-1: blank); score: log-probability of the path; peaks: per
    label, the frame of its span where the label's log-probability is highest (its CTC spike; the
    first such frame on a tie)."""

    labels: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    frame_labels: np.ndarray
    score: float
    peaks: tuple[int, ...] = ()


@dataclass(frozen=True)
class TimedToken:
    """A token or word with its start / end in milliseconds."""

    text: str
    start_ms: float
    end_ms: float


def _min_frames(labels: Sequence[int]) -> int:
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)


def ctc_forced_align(log_probs, labels: Sequence[int], blank: int) -> Alignment:
    """The Viterbi alignment of `labels` to log_probs [T, V] (module docstring)."""
    lp = np.asarray(log_probs, np.float64)
    if lp.ndim != 2:
        raise AlignmentError(f"ctc_forced_align: log_probs must be [T, V], got shape {lp.shape}")
    t_len, v = lp.shape
    labels = tuple(int(x) for x in labels)
    bad = [x for x in labels if x == blank or not 0 <= x < v]
    if bad:
        raise AlignmentError(f"ctc_forced_align: labels must be non-blank ids in [0, {v}) (blank {blank}), got {bad[:5]}")
    if not 0 <= blank < v:
        raise AlignmentError(f"ctc_forced_align: blank {blank} outside the {v} labels")
    need = _min_frames(labels)
    if need > t_len:
        reps = need - len(labels)
        raise AlignmentError(f"cannot align {len(labels)} labels ({reps} repeats need blanks between) in {t_len} frames")
    if not labels:
        return Alignment((), (), np.full(t_len, -1, np.int64), float(lp[:, blank].sum()) if t_len else 0.0, ())
    ext = np.full(2 * len(labels) + 1, blank, np.int64)
    ext[1::2] = labels
    s_len = len(ext)
    skip_ok = np.zeros(s_len, bool)
    skip_ok[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    emit = lp[:, ext]  # [T, S]
    score = np.full(s_len, _NEG)
    score[0], score[1] = emit[0, 0], emit[0, 1]
    back = np.zeros((t_len, s_len), np.int8)  # 0 stay, 1 from s - 1, 2 from s - 2
    for t in range(1, t_len):
        stay = score
        one = np.concatenate([[_NEG], score[:-1]])
        two = np.where(skip_ok, np.concatenate([[_NEG, _NEG], score[:-2]]), _NEG)
        cand = np.stack([stay, one, two])  # argmax takes the first maximum: stay, then s-1, then s-2
        choice = np.argmax(cand, axis=0)
        score = cand[choice, np.arange(s_len)] + emit[t]
        back[t] = choice
    end = s_len - 2 if score[s_len - 2] >= score[s_len - 1] else s_len - 1
    best = float(score[end])
    states = np.empty(t_len, np.int64)
    s = end
    for t in range(t_len - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    frame_labels = np.where(states % 2 == 1, (states - 1) // 2, -1)
    spans = []
    for k in range(len(labels)):
        idx = np.flatnonzero(frame_labels == k)
        spans.append((int(idx[0]), int(idx[-1]) + 1))
    peaks = tuple(a + int(np.argmax(lp[a:b, lab])) for (a, b), lab in zip(spans, labels))
    return Alignment(labels, tuple(spans), frame_labels, best, peaks)


def ctc_forced_align_batch(log_probs, lengths, labels_list: Sequence[Sequence[int]], blank: int) -> list[Alignment]:
    """`ctc_forced_align` per row of log_probs [B, T, V], over each row's first lengths[b] frames."""
    lp = np.asarray(log_probs)
    if lp.ndim != 3 or len(lengths) != lp.shape[0] or len(labels_list) != lp.shape[0]:
        raise AlignmentError(f"ctc_forced_align_batch: log_probs [B, T, V] with B lengths and label lists, got "
                             f"{lp.shape}, {len(lengths)} lengths, {len(labels_list)} label lists")
    return [ctc_forced_align(lp[b, : int(n)], labels_list[b], blank) for b, n in enumerate(lengths)]


def token_times(alignment: Alignment, frame_ms: float = 60.0, offset_ms: float = 0.0,
                start: str = "peak") -> list[tuple[float, float]]:
    """[(start_ms, end_ms)] per aligned label, x frame_ms + offset_ms: from its peak frame
    (start="peak", default) or its span's first frame (start="span") to its span's end. The path
    may hand a label the low-evidence frames before its spike (leading silence, on a CTC head that
    is not sure there), so the spike is the better onset."""
    if start not in ("peak", "span"):
        raise ValueError(f"token_times: start must be 'peak' or 'span', got {start!r}")
    firsts = alignment.peaks if start == "peak" else [a for a, _ in alignment.spans]
    return [(a * frame_ms + offset_ms, b * frame_ms + offset_ms) for a, (_, b) in zip(firsts, alignment.spans)]


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF


def word_timestamps(pieces: Sequence[str], times: Sequence[tuple[float, float]]) -> list[TimedToken]:
    """Sentencepiece pieces + their (start_ms, end_ms) -> words with times.

    A piece starting with '▁' starts a word; every CJK ideograph is a word of its own (a piece of
    several shares its time evenly among them); Latin text after CJK characters in one piece starts
    a new word. Pieces empty after removing '▁' are dropped. A word spans its first piece's start
    to its last piece's end."""
    if len(pieces) != len(times):
        raise ValueError(f"word_timestamps: {len(pieces)} pieces but {len(times)} times")
    words: list[list] = []  # [text, start, end]
    open_word = False
    for piece, (a, b) in zip(pieces, times):
        starts = piece.startswith(_WORD_START)
        text = piece.replace(_WORD_START, "")
        if not text:
            open_word = False if starts else open_word
            continue
        runs, cur = [], ""
        for ch in text:  # split into CJK characters and non-CJK runs
            if _is_cjk(ch):
                if cur:
                    runs.append(cur)
                    cur = ""
                runs.append(ch)
            else:
                cur += ch
        if cur:
            runs.append(cur)
        step = (b - a) / len(runs)
        for k, run in enumerate(runs):
            ra, rb = a + k * step, a + (k + 1) * step
            cjk = len(run) == 1 and _is_cjk(run)
            joins = open_word and not cjk and not (k == 0 and starts) and not (k > 0)
            if joins and words and not _is_cjk(words[-1][0][-1]):
                words[-1][0] += run
                words[-1][2] = rb
            else:
                words.append([run, ra, rb])
            open_word = not cjk
    return [TimedToken(w, float(s), float(e)) for w, s, e in words]
