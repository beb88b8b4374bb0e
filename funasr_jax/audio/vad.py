"""Voice-activity segmentation of long recordings with Google's WebRTC VAD (`webrtcvad`).

    segs = vad_segments(wave, 16000, VadConfig())    # -> [(start_sample, end_sample), ...]

The waveform ([S] float in [-1, 1]) is converted to 16-bit PCM and classified frame by frame
(`frame_ms` = 10 / 20 / 30 ms; a last partial frame is dropped). Voiced runs shorter than
`min_speech_ms` are dropped (clicks), unvoiced gaps shorter than `min_silence_ms` inside speech
are bridged, each segment is widened by `pad_ms` on both sides (clamped to the file; where two
padded segments would overlap they meet in the middle of their gap), and a segment longer than
`max_segment_s` is cut at its quietest frames (`audio.activity.plan_segments`). Units: samples
at `sample_rate` for the output, milliseconds for the settings.

Why WebRTC's VAD: a small, well-kept C library with binary wheels (`webrtcvad-wheels`), no model
download and no neural-network runtime (silero-vad needs torch or onnxruntime), and it classifies
an hour of 16 kHz audio in seconds on one CPU core. Its weakness is that it judges spectra, not
level: it fires on some non-speech noise, even a -60 dBFS noise floor (measured on the demo), so a
frame also has to exceed `min_level_dbfs` (-50 dBFS, the recognizer's energy gate) to count as
speech; the LLM's training on noise-only clips (which answer "") handles loud noise behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import webrtcvad

from funasr_jax.audio.activity import frame_grid, frame_levels_db, pause_scores, plan_segments

__all__ = ["VAD_SAMPLE_RATES", "VadConfig", "vad_segments", "voiced_frames"]

VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)
_BLOCK_FRAMES = 2000  # frames converted to PCM bytes at a time (bounds the temporaries)


@dataclass(frozen=True)
class VadConfig:
    """aggressiveness 0 (least) .. 3 (most eager to call a frame non-speech); the rest in ms / s
    (module docstring)."""

    aggressiveness: int = 2
    frame_ms: int = 30
    min_speech_ms: float = 150.0
    min_silence_ms: float = 300.0
    pad_ms: float = 150.0  # chosen on the demo dev split (150 / 300 / 500 ms: long-file MER 43.6 / 44.1 / 44.5 %)
    max_segment_s: float = 30.0
    min_level_dbfs: float | None = -50.0  # a speech frame must also be this loud (None: VAD alone)

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"VadConfig.{name}: {why}, got {getattr(self, name)!r}")

        if self.aggressiveness not in (0, 1, 2, 3):
            bad("aggressiveness", "must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            bad("frame_ms", "must be 10, 20 or 30 (webrtcvad's frame sizes)")
        for name in ("min_speech_ms", "min_silence_ms", "pad_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        if not (isinstance(self.max_segment_s, (int, float)) and self.max_segment_s >= 0.5):
            bad("max_segment_s", "must be >= 0.5 s")
        if self.min_level_dbfs is not None and not (isinstance(self.min_level_dbfs, (int, float))
                                                    and -200.0 <= self.min_level_dbfs <= 0.0):
            bad("min_level_dbfs", "must lie in [-200, 0] dBFS (or None)")


def _check(wave, sample_rate: int) -> np.ndarray:
    x = np.asarray(wave)
    if x.ndim != 1:
        raise ValueError(f"VAD: wave must be 1-D [S], got shape {x.shape}")
    if sample_rate not in VAD_SAMPLE_RATES:
        raise ValueError(f"VAD: webrtcvad takes {VAD_SAMPLE_RATES} Hz, got {sample_rate} Hz (resample first)")
    return x


def voiced_frames(wave, sample_rate: int = 16000, cfg: VadConfig = VadConfig()) -> np.ndarray:
    """[F] bool: webrtcvad's speech decision per `cfg.frame_ms` frame (F = S // frame samples),
    and the frame's RMS level above `cfg.min_level_dbfs`."""
    x = _check(wave, sample_rate)
    n = sample_rate * cfg.frame_ms // 1000
    f = len(x) // n
    vad = webrtcvad.Vad(cfg.aggressiveness)
    out = np.zeros(f, bool)
    for a in range(0, f, _BLOCK_FRAMES):
        b = min(f, a + _BLOCK_FRAMES)
        block = np.clip(x[a * n: b * n], -1.0, 1.0)
        pcm = (block * 32767.0).astype("<i2").tobytes()
        loud = np.ones(b - a, bool)
        if cfg.min_level_dbfs is not None:
            frames = block.reshape(b - a, n).astype(np.float64)
            loud = 10.0 * np.log10(np.maximum(frames.var(axis=1), 1e-20)) > cfg.min_level_dbfs
        step = 2 * n
        for k in range(b - a):
            out[a + k] = loud[k] and vad.is_speech(pcm[k * step: (k + 1) * step], sample_rate)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, end)) runs of True."""
    if not mask.size:
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def vad_segments(wave, sample_rate: int = 16000, cfg: VadConfig = VadConfig()) -> list[tuple[int, int]]:
    """Speech segments [(start, end)) in samples, ordered, non-overlapping, each at most
    `cfg.max_segment_s` long ([] for empty or silent input)."""
    x = _check(wave, sample_rate)
    if len(x) == 0:
        return []
    n = sample_rate * cfg.frame_ms // 1000
    runs = _runs(voiced_frames(x, sample_rate, cfg))
    bridge = cfg.min_silence_ms / cfg.frame_ms
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < bridge:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    keep = [(a * n, b * n) for a, b in merged if (b - a) * cfg.frame_ms >= cfg.min_speech_ms]
    pad = int(round(cfg.pad_ms * sample_rate / 1000))
    padded = []
    for k, (a, b) in enumerate(keep):
        lo = max(0, a - pad) if k == 0 else max(a - pad, (keep[k - 1][1] + a) // 2)
        hi = min(len(x), b + pad) if k == len(keep) - 1 else min(b + pad, (b + keep[k + 1][0]) // 2)
        padded.append((lo, hi))
    max_samples = int(cfg.max_segment_s * sample_rate)
    out = []
    grid = frame_grid(sample_rate)
    for a, b in padded:
        if b - a <= max_samples:
            out.append((a, b))
            continue
        piece = x[a:b]
        scores = pause_scores(frame_levels_db(piece, grid))
        out += [(a + s, a + e) for s, e in plan_segments(scores, grid.centres(len(piece)), len(piece), max_samples)]
    return out
