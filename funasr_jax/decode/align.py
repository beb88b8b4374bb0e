"""CTC forced alignment (Viterbi) and token / word timestamps, in numpy.

Given a CTC head's log-posteriors [T, V] (one row per encoder frame: an LFR frame of 60 ms for
the SAN-M encoder) and a label sequence l_1..l_L, the best frame path that collapses to the labels
(merge repeats, drop blanks) is found over the 2L + 1 extended states (blank, l_1, blank, ...,
l_L, blank): from state s a frame may stay, move to s + 1, or skip to s + 2 when s + 2 is a label
different from the one at s (a repeated label needs a blank between). O(T * L) time, vectorised
over states. Ties: the predecessor with the largest score wins, and among equal scores the one
closest to the current state (stay, then s - 1, then s - 2); so, read back from the end, a state
keeps the earlier frames as long as it can (a tied frame goes to the later label). The path ends
in the last label or the final blank, whichever scores higher (the label on a tie).

Inputs: log_probs [T, V] float log-posteriors (blank included; float64 inside), labels L ints in
[0, V) other than blank. It raises AlignmentError when log_probs is not 2-D (or has NaN), a label
is the blank or out of range, the labels need more than T frames (L plus one blank between each
pair of equal neighbours), or every fitting path has log-probability -inf.

Each label's span is [first frame, last frame + 1) of the frames the path assigns to it, and its
peak the frame of the span where the label's log-probability is highest. `token_times` turns
frames into ms (x frame_ms, + an offset): a token ends at the end of its span's last frame and
starts at its peak frame (default) or its span's first frame. `word_timestamps` groups
sentencepiece pieces (and their times) into words.
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
    if np.isnan(lp).any():
        raise AlignmentError("ctc_forced_align: log_probs contain NaN")
    need = _min_frames(labels)
    if need > t_len:
        reps = need - len(labels)
        raise AlignmentError(f"cannot align {len(labels)} labels ({reps} repeats need blanks between) in {t_len} frames")
    if not labels:
        best = float(lp[:, blank].sum()) if t_len else 0.0
        if not np.isfinite(best):
            raise AlignmentError(f"cannot align 0 labels in {t_len} frames: the all-blank path has log-probability -inf")
        return Alignment((), (), np.full(t_len, -1, np.int64), best, ())
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
    if not np.isfinite(best):
        raise AlignmentError(f"cannot align {len(labels)} labels in {t_len} frames: every path has log-probability -inf")
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
    bad = [int(n) for n in lengths if not 0 <= int(n) <= lp.shape[1]]
    if bad:
        raise AlignmentError(f"ctc_forced_align_batch: lengths must be in [0, {lp.shape[1]}], got {bad[:5]}")
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
    """A CJK ideograph (Unified, extension A, compatibility); CJK punctuation is not one."""
    o = ord(ch)
    return 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF


def _piece_units(piece: str) -> tuple[list[tuple[str, bool, bool]], bool]:
    """A piece -> ([(text, is_cjk, after_mark)], ends_with_mark): each CJK ideograph is a unit, so
    is each maximal run of other characters not interrupted by a '▁' or an ideograph; after_mark
    says a '▁' came right before the unit."""
    units: list[list] = []
    mark = False
    for ch in piece:
        if ch == _WORD_START:
            mark = True
        elif _is_cjk(ch):
            units.append([ch, True, mark])
            mark = False
        elif units and not units[-1][1] and not mark:
            units[-1][0] += ch
        else:
            units.append([ch, False, mark])
            mark = False
    return [tuple(u) for u in units], mark


def word_timestamps(pieces: Sequence[str], times: Sequence[tuple[float, float]]) -> list[TimedToken]:
    """Sentencepiece pieces + their (start_ms, end_ms) -> words with times.

    A '▁' (U+2581, anywhere in a piece) starts a new word; every CJK ideograph is a word of its
    own; a run of other characters after an ideograph (in the same or the next piece) starts a new
    word; otherwise a piece continues the previous word. A piece made of several units (ideographs
    and runs of other characters) shares its time evenly among them. The '▁' is not part of the
    text; pieces empty without it are dropped (their time is not used, but a '▁' still ends the
    word before it). A word spans its first unit's start to its last unit's end."""
    if len(pieces) != len(times):
        raise ValueError(f"word_timestamps: {len(pieces)} pieces but {len(times)} times")
    words: list[list] = []  # [text, start, end]
    can_join = False  # the last word is a non-CJK word the next piece may continue
    for piece, (a, b) in zip(pieces, times):
        units, trailing_mark = _piece_units(piece)
        if units:
            step = (b - a) / len(units)
            for k, (text, cjk, after_mark) in enumerate(units):
                ra, rb = a + k * step, a + (k + 1) * step
                if k == 0 and can_join and not cjk and not after_mark:
                    words[-1][0] += text
                    words[-1][2] = rb
                else:
                    words.append([text, ra, rb])
                can_join = not cjk
        if trailing_mark:
            can_join = False
    return [TimedToken(w, float(s), float(e)) for w, s, e in words]
