"""Speech activity in numpy: frame levels in dBFS, an energy gate, and cut points for long audio.

All functions take a 16 kHz (any `sample_rate`) float waveform in [-1, 1] or its frame levels
and are pure. Frames are 25 ms long every 10 ms (`frame_len` / `hop` samples), laid out like
Kaldi's snip-edges fbank frames: F = 1 + (S - frame_len) // hop for S >= frame_len, one frame
over the whole clip for 0 < S < frame_len, none for S = 0.

Level: 10 log10 of the frame's variance (mean removed, so a DC offset is not "sound"), i.e. its
RMS in dB relative to full scale 1.0 (a full-scale square wave is 0 dBFS, a full-scale sine
-3 dBFS); digital silence reads `FLOOR_DB`. The gate is energy only: loud stationary noise
passes it (what the model is trained to answer with "" — and what the recognizer's
audio-length bound on the output limits).

Loud steady tones are a second guard (`periodicity`, `is_steady_tone`): a segment at least
`TONE_MIN_DBFS` loud (-10 dBFS: a full-scale square wave is 0, a full-scale sine -3, speech
normalised to a full-scale peak about -20 to -12) that repeats itself over its whole length — a
test tone, a square wave, a dial tone — is not speech, whose waveform changes with every phone
and whose pitch drifts. The measure is the largest normalised autocorrelation of the whole segment
at a lag after it first decorrelates (so low-pass noise, highly correlated at short lags, reads
low); a periodic signal reads ~1 at its period. Quieter tones (hum under a recording, the
synthetic tones the tests use as stand-in speech) are left to the model, which is trained on
noise-only clips with hum. Speech over a loud steady tone reads the tone's share of the energy, so
speech more than ~13 dB below such a tone is dropped at the default 0.95.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FLOOR_DB",
    "FrameGrid",
    "active_frames",
    "frame_grid",
    "frame_levels_db",
    "is_silent",
    "is_steady_tone",
    "pause_scores",
    "periodicity",
    "plan_segments",
    "speech_segments",
]

TONE_MIN_DBFS = -10.0  # a steady tone must be at least this loud (RMS, dBFS) to be dropped (`is_steady_tone`)
FLOOR_DB = -200.0  # level of an all-zero frame (10 log10 of the variance floor 1e-20)
_VAR_FLOOR = 1e-20
_BLOCK_FRAMES = 4096  # frames per numpy block: bounds temporaries to ~13 MB for any file length


@dataclass(frozen=True)
class FrameGrid:
    """Frame layout of a waveform in samples: frame_len (25 ms), hop (10 ms), sample_rate (Hz)."""

    frame_len: int
    hop: int
    sample_rate: int

    def count(self, num_samples: int) -> int:
        """Frames F in `num_samples` samples (snip edges; one short frame if 0 < S < frame_len)."""
        if num_samples <= 0:
            return 0
        return 1 if num_samples < self.frame_len else 1 + (num_samples - self.frame_len) // self.hop

    def centres(self, num_samples: int) -> np.ndarray:
        """[F] int64: each frame's centre sample (start + len // 2, the short frame's len = S)."""
        f = self.count(num_samples)
        starts = np.arange(f, dtype=np.int64) * self.hop
        ends = np.minimum(starts + self.frame_len, num_samples)
        return (starts + ends) // 2


def frame_grid(sample_rate: int = 16000, frame_ms: float = 25.0, hop_ms: float = 10.0) -> FrameGrid:
    """The frame layout for `sample_rate` Hz with `frame_ms` frames every `hop_ms`."""
    if sample_rate <= 0 or frame_ms <= 0 or hop_ms <= 0:
        raise ValueError(f"frame_grid: sample_rate, frame_ms and hop_ms must be > 0, got "
                         f"{sample_rate}, {frame_ms}, {hop_ms}")
    return FrameGrid(max(1, round(sample_rate * frame_ms / 1000)), max(1, round(sample_rate * hop_ms / 1000)),
                     int(sample_rate))


def frame_levels_db(wave: np.ndarray, grid: FrameGrid | None = None) -> np.ndarray:
    """Per-frame level [F] float64 in dBFS (module docstring), >= FLOOR_DB.

    wave: [S] float waveform in [-1, 1]. Computed in blocks, so memory is O(block), not O(F x
    frame_len), for any length.
    """
    grid = grid or frame_grid()
    x = np.asarray(wave)
    if x.ndim != 1:
        raise ValueError(f"frame_levels_db: wave must be 1-D [S], got shape {x.shape}")
    f = grid.count(len(x))
    if f == 0:
        return np.zeros(0, np.float64)
    if len(x) < grid.frame_len:
        return np.array([_level_db(np.var(x.astype(np.float64)))])
    out = np.empty(f, np.float64)
    for a in range(0, f, _BLOCK_FRAMES):
        b = min(f, a + _BLOCK_FRAMES)
        seg = x[a * grid.hop: (b - 1) * grid.hop + grid.frame_len].astype(np.float64)
        win = np.lib.stride_tricks.sliding_window_view(seg, grid.frame_len)[:: grid.hop]
        sq = np.lib.stride_tricks.sliding_window_view(seg * seg, grid.frame_len)[:: grid.hop]
        out[a:b] = _level_db(sq.mean(axis=1) - win.mean(axis=1) ** 2)
    return out


def _level_db(var):
    return 10.0 * np.log10(np.maximum(var, _VAR_FLOOR))


def active_frames(levels_db: np.ndarray, gate_dbfs: float) -> np.ndarray:
    """[F] bool: frames whose level exceeds `gate_dbfs` (dBFS)."""
    return np.asarray(levels_db) > gate_dbfs


def is_silent(levels_db: np.ndarray, gate_dbfs: float, min_active_frames: int = 5) -> bool:
    """True when fewer than `min_active_frames` frames (default 5: 50 ms of 10 ms hops) are above
    `gate_dbfs`: digital silence, near-silence, or a lone click."""
    return int(active_frames(levels_db, gate_dbfs).sum()) < min_active_frames


def periodicity(wave: np.ndarray, sample_rate: int = 16000, max_period_ms: float = 40.0,
                decorrelated: float = 0.5) -> float:
    """How exactly `wave` [S] repeats itself, in [0, 1]: the largest normalised autocorrelation
    r(L) = sum x[n] x[n+L] / sqrt(E[0, S-L) E[L, S)) of the whole waveform (mean removed) over lags
    L up to `max_period_ms`, counted only after r first drops below `decorrelated` (low-pass noise
    never comes back up; a periodic signal returns to ~1 at its period). 0 for silence, for fewer
    than two periods' worth of samples, or when r never drops. One FFT of the whole waveform."""
    x = np.asarray(wave, np.float64)
    if x.ndim != 1:
        raise ValueError(f"periodicity: wave must be 1-D [S], got shape {x.shape}")
    max_lag = int(round(sample_rate * max_period_ms / 1000.0))
    n = len(x)
    if n < 2 * max_lag + 2:
        return 0.0
    x = x - x.mean()
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    acf = np.fft.irfft(spec.real ** 2 + spec.imag ** 2, size)[: max_lag + 1]
    sq = np.concatenate([[0.0], np.cumsum(x * x)])
    lags = np.arange(max_lag + 1)
    head = sq[n - lags]  # energy of x[0, n - L)
    tail = sq[n] - sq[lags]  # energy of x[L, n)
    denom = np.sqrt(np.maximum(head * tail, 0.0))
    if denom[0] <= 1e-12 * max(n, 1):
        return 0.0
    r = np.where(denom > 0, acf / np.maximum(denom, 1e-300), 0.0)
    below = np.flatnonzero(r < decorrelated)
    if not len(below):
        return 0.0
    return float(max(0.0, r[below[0]:].max()))


def is_steady_tone(wave: np.ndarray, max_periodicity: float | None, sample_rate: int = 16000,
                   min_level_dbfs: float = TONE_MIN_DBFS) -> bool:
    """True when `wave` is a loud steady tone rather than speech: its level (RMS, mean removed) is
    at least `min_level_dbfs` and its `periodicity` at least `max_periodicity` (None: never)."""
    if max_periodicity is None or len(wave) == 0:
        return False
    if _level_db(np.var(np.asarray(wave, np.float64))) < min_level_dbfs:
        return False
    return periodicity(wave, sample_rate) >= max_periodicity


def pause_scores(levels_db: np.ndarray, radius: int = 5) -> np.ndarray:
    """[F] float64: each frame's loudest level within +-`radius` frames (edges clamped).

    A frame scores low only when its whole neighbourhood (110 ms for radius 5) is quiet, so a
    pause between words beats a short dip inside one (a stop closure)."""
    lv = np.asarray(levels_db, np.float64)
    if radius <= 0 or len(lv) == 0:
        return lv.copy()
    padded = np.pad(lv, radius, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1).max(axis=1)


def plan_segments(scores: np.ndarray, centres: np.ndarray, num_samples: int, max_samples: int, *,
                  search_frac: float = 0.3, min_tail: int = 400) -> list[tuple[int, int]]:
    """Cut [0, num_samples) into consecutive segments of at most `max_samples` samples.

    Each cut, from a segment start s while more than `max_samples` samples remain, falls on the
    centre of the lowest-scoring frame (`pause_scores`) whose centre c lies in the last
    `search_frac` of the window: s + ceil((1 - search_frac) max_samples) <= c <= s + max_samples,
    with c <= num_samples - min_tail (so no sliver is left at the end) and c > s. Among equal
    lowest scores the middle one (by frame index) wins, so a gap of digital silence is cut in its
    middle. With no such frame the cut is at s + max_samples (earlier if that left a tail shorter than
    `min_tail`).

    scores, centres: [F] per-frame scores and centre samples (ascending).
    Returns [(start, end)] sample ranges covering [0, num_samples) in order, each end - start
    <= max_samples (>= 1).
    """
    if max_samples < 1:
        raise ValueError(f"plan_segments: max_samples must be >= 1, got {max_samples}")
    if not 0.0 < search_frac <= 1.0:
        raise ValueError(f"plan_segments: search_frac must lie in (0, 1], got {search_frac}")
    scores, centres = np.asarray(scores), np.asarray(centres)
    out, s = [], 0
    while num_samples - s > max_samples:
        lo = s + math.ceil((1.0 - search_frac) * max_samples)
        hi = min(s + max_samples, num_samples - min_tail)
        i = int(np.searchsorted(centres, max(lo, s + 1), side="left"))
        j = int(np.searchsorted(centres, hi, side="right"))
        cut = s + max_samples if num_samples - (s + max_samples) >= min_tail else max(s + 1, num_samples - min_tail)
        if j > i:
            window = scores[i:j]
            best = np.flatnonzero(window == window.min())
            cut = int(centres[i + best[len(best) // 2]])
        out.append((s, cut))
        s = cut
    if num_samples > s:
        out.append((s, num_samples))
    return out


def speech_segments(wave: np.ndarray, *, max_samples: int | None, gate_dbfs: float | None,
                    grid: FrameGrid | None = None, min_active_frames: int = 5,
                    search_frac: float = 0.3, pause_radius: int = 5,
                    max_periodicity: float | None = None) -> list[tuple[int, int]]:
    """Sample ranges [(start, end)] of `wave` worth decoding, in order.

    The waveform is cut (`plan_segments`, max_samples None: never) and each segment whose frames
    (those with their centre inside it) are silent (`is_silent` at `gate_dbfs`; None: no gate)
    is dropped, as is each segment that is a steady tone (`is_steady_tone` at `max_periodicity`;
    None: no check). A silent file gives []. Costs one pass over the samples (and one FFT per
    segment for the tone check); no features.
    """
    grid = grid or frame_grid()
    n = len(wave)
    if n == 0:
        return []
    if max_periodicity is not None:
        segs = speech_segments(wave, max_samples=max_samples, gate_dbfs=gate_dbfs, grid=grid,
                               min_active_frames=min_active_frames, search_frac=search_frac, pause_radius=pause_radius)
        return [(a, b) for a, b in segs if not is_steady_tone(wave[a:b], max_periodicity, grid.sample_rate)]
    need_levels = gate_dbfs is not None or (max_samples is not None and n > max_samples)
    levels = frame_levels_db(wave, grid) if need_levels else None
    centres = grid.centres(n) if need_levels else None
    if max_samples is None or n <= max_samples:
        segs = [(0, n)]
    else:
        segs = plan_segments(pause_scores(levels, pause_radius), centres, n, max_samples,
                             search_frac=search_frac, min_tail=min(grid.frame_len, max_samples // 4))
    if gate_dbfs is None:
        return segs
    first = np.searchsorted(centres, [a for a, _ in segs], side="left")
    last = np.searchsorted(centres, [b for _, b in segs], side="left")
    return [seg for seg, i, j in zip(segs, first, last)
            if not is_silent(levels[i:j], gate_dbfs, min_active_frames)]
