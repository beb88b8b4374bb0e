"""Waveform and feature augmentation (pure numpy; randomness only through an explicit Generator or seed key).

Recipe (the FunAudio-ASR report, "Noise robustness", "Hallucination mitigation"): noise is mixed
into ~30% of utterances at SNR ~ N(10 dB, 5 dB) (the caller draws the SNR); zero padding is
applied *before* the noise so the model sees noise-only stretches it must transcribe as nothing.
All signals are [S] float32 samples at 16 kHz in [-1, 1].

`corrupt_text` simulates first-pass (CTC) recognition errors in a transcript, so that an LLM trained
with the hypothesis in its prompt learns to correct it rather than copy it.

SpecAugment-style masking (`draw_spec_masks` + `apply_spec_masks`) works on the encoder input
after CMVN: LFR features [T, lfr_m * n_mels] (60 ms rows of lfr_m stacked n_mels-bin frames). A time
mask zeroes whole LFR rows; a frequency mask zeroes the same mel bins in every stacked frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import re

import numpy as np
import soxr

from funasr_jax.text.join import CJK_CHARS, join_texts

__all__ = ["SpecMasks", "TextUnits", "apply_spec_masks", "corrupt_text", "draw_spec_masks", "mix_noise",
           "noise_segment", "speed_perturb", "zero_pad"]

SAMPLE_RATE = 16000


def noise_segment(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """[length] samples of `noise` from a random offset, tiled (wrapping) if it is too short."""
    noise = np.asarray(noise, dtype=np.float32)
    if noise.ndim != 1 or noise.size == 0:
        raise ValueError(f"noise must be a non-empty 1-D array, got shape {noise.shape}")
    offset = int(rng.integers(noise.size))
    return noise[(offset + np.arange(length)) % noise.size]


def mix_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator,
              speech_power: float | None = None) -> np.ndarray:
    """speech + g * noise_segment, with g chosen so 10*log10(Ps / Pn) == snr_db.

    Args:
      speech: [S] float32.
      noise: [S_n] float32, any length (cropped at a random offset or tiled).
      snr_db: target SNR in dB (drawn by the caller, e.g. N(10, 5)).
      rng: source of the crop offset.
      speech_power: Ps (mean square) to use instead of mean(speech**2); pass the power of the
        un-padded utterance when `speech` was zero-padded, so padding does not lower the SNR.
    Returns: [S] float32. Unchanged when speech or noise is all zeros (SNR undefined).
    """
    speech = np.asarray(speech, dtype=np.float32)
    seg = noise_segment(noise, speech.size, rng).astype(np.float64)
    ps = float(np.mean(np.square(speech, dtype=np.float64))) if speech_power is None else float(speech_power)
    pn = float(np.mean(np.square(seg)))
    if ps <= 0.0 or pn <= 0.0:
        return speech.copy()
    gain = np.sqrt(ps / (pn * 10.0 ** (snr_db / 10.0)))
    return (speech.astype(np.float64) + gain * seg).astype(np.float32)


def zero_pad(speech: np.ndarray, before_s: float, after_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Prepends round(before_s*sr) and appends round(after_s*sr) zero samples. [S] -> [S']."""
    if before_s < 0 or after_s < 0:
        raise ValueError(f"padding must be >= 0 s, got before={before_s}, after={after_s}")
    b, a = round(before_s * sr), round(after_s * sr)
    return np.pad(np.asarray(speech, dtype=np.float32), (b, a))


def speed_perturb(speech: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Kaldi-style speed perturbation: play `factor` times faster (pitch shifts too).

    Implemented as resampling from sr*factor to sr with soxr, so [S] -> [~S / factor].
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    speech = np.asarray(speech, dtype=np.float32)
    if factor == 1.0:
        return speech.copy()
    return np.ascontiguousarray(soxr.resample(speech, sr * factor, sr, quality="HQ"), dtype=np.float32)


@dataclass(frozen=True)
class SpecMasks:
    """Masks of one utterance: `time` = ((start, width), ...) in LFR rows, `freq` = ((start, width), ...)
    in mel bins (0 <= start, start + width <= T or n_mels). A width may be 0 (no-op)."""

    time: tuple[tuple[int, int], ...] = ()
    freq: tuple[tuple[int, int], ...] = ()


def _spans(rng: np.random.Generator, count: int, max_width: int, size: int) -> tuple[tuple[int, int], ...]:
    """`count` spans in [0, size): width ~ U{0..min(max_width, size)}, start ~ U{0..size - width}."""
    out = []
    for _ in range(count):
        w = int(rng.integers(min(max_width, size) + 1))
        out.append((int(rng.integers(size - w + 1)), w))
    return tuple(out)


def draw_spec_masks(key: Sequence[int], num_frames: int, n_mels: int, *, time_masks: int, time_width: int,
                    freq_masks: int, freq_width: int) -> SpecMasks:
    """Draws the masks of an utterance of `num_frames` LFR rows over `n_mels` mel bins (a pure
    function of its arguments).

    key: the entropy of the draws (e.g. (seed, epoch, example_index, tag)); time masks draw from
    SeedSequence([*key, 0]) and frequency masks from SeedSequence([*key, 1]), so changing one
    kind's settings never changes the other kind's draws. Widths are maxima: each mask's width is
    uniform in 0..max (capped at the axis size), its start uniform over the positions that fit.
    """
    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([*key, k]))

    return SpecMasks(time=_spans(rng(0), time_masks, time_width, num_frames),
                     freq=_spans(rng(1), freq_masks, freq_width, n_mels))


def apply_spec_masks(feats: np.ndarray, masks: SpecMasks, n_mels: int) -> np.ndarray:
    """feats [T, k * n_mels] (k stacked frames) -> a masked copy: rows of the time masks and, in
    each of the k frames, the mel bins of the frequency masks set to 0. `feats` is not modified."""
    t, d = feats.shape
    if d % n_mels:
        raise ValueError(f"feature width {d} is not a multiple of n_mels={n_mels}")
    out = np.array(feats, dtype=np.float32, copy=True)
    view = out.reshape(t, d // n_mels, n_mels)
    for start, width in masks.time:
        view[start:start + width] = 0.0
    for start, width in masks.freq:
        view[:, :, start:start + width] = 0.0
    return out


# --------------------------------------------------------------------------- first-pass errors

_UNIT = re.compile(f"[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+")


@dataclass(frozen=True)
class TextUnits:
    """Substitution pools of `corrupt_text`: the distinct CJK characters and the distinct
    non-CJK words of some texts (e.g. the training transcripts), each sorted."""

    cjk: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def of(cls, texts) -> TextUnits:
        units = {u for t in texts for u in _UNIT.findall(t)}
        return cls(cjk=tuple(sorted(u for u in units if re.fullmatch(f"[{CJK_CHARS}]", u))),
                   words=tuple(sorted(u for u in units if not re.fullmatch(f"[{CJK_CHARS}]", u))))


def corrupt_text(text: str, rate: float, rng: np.random.Generator, pool: TextUnits) -> str:
    """`text` with simulated recognition errors, about `rate` of its units touched.

    Units are CJK characters and whitespace-separated words. Each unit independently, with
    probability `rate`: half the time it is substituted by a unit of the same kind drawn from
    `pool` (uniformly), a quarter of the time deleted, a quarter of the time kept and followed by
    an inserted pool unit of its kind. The result is re-joined with `text.join.join_texts` (no space
    between two CJK characters, one space otherwise). rate 0 returns `text` unchanged.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"corrupt_text: rate must be in [0, 1], got {rate}")
    units = _UNIT.findall(text)
    if rate == 0.0 or not units:
        return text
    touched = rng.random(len(units)) < rate
    kind = rng.random(len(units))
    picks = rng.random(len(units))
    out: list[str] = []
    for u, hit, k, pick in zip(units, touched, kind, picks):
        same = pool.cjk if re.fullmatch(f"[{CJK_CHARS}]", u) else pool.words
        drawn = same[int(pick * len(same))] if same else u
        if not hit:
            out.append(u)
        elif k < 0.5:
            out.append(drawn)
        elif k < 0.75:
            continue
        else:
            out += [u, drawn]
    return join_texts(out)
