"""Audio decoding for the front end: file or bytes -> float32 mono waveform at 16 kHz.

`load_audio` / `load_audio_bytes` return a 1-D float32 array in the nominal range [-1, 1]
(integer PCM is scaled by 1/32768, as soundfile and torchaudio do), which is what
`funasr_jax.audio.frontend` expects (it multiplies by 32768 itself).

Two conversions happen silently, because they are normal for ASR input, not errors:
- multi-channel audio is averaged to mono (FunASR's `extract_fbank` does the same);
- audio at another sample rate is resampled to `target_sr` with soxr ("HQ" quality).
  Resampling can overshoot [-1, 1] by a little on full-scale input; it is left unclipped.

Everything else that is wrong with the input raises `AudioError`, naming the file: missing
file, undecodable or truncated file, zero samples, NaN/Inf samples.
"""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np
import soundfile as sf
import soxr

__all__ = ["AudioError", "load_audio", "load_audio_bytes"]

RESAMPLE_QUALITY = "HQ"


class AudioError(ValueError):
    """An audio file or byte string cannot be used; the message names it and says why."""


def load_audio(path: str | os.PathLike, target_sr: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decodes an audio file (wav/flac/ogg, whatever libsndfile reads).

    max_seconds: refuse (AudioError, before decoding when the header tells the length) a file
    longer than this, rather than filling memory with hours of samples.
    Returns: [S] float32 mono samples at `target_sr` Hz, nominally in [-1, 1].
    Raises: AudioError (missing / unreadable / truncated / empty / non-finite / too long).
    """
    name = os.fspath(path)
    if max_seconds is not None:
        try:
            info = sf.info(name)
            seconds = info.frames / info.samplerate if info.samplerate else None
        except (RuntimeError, sf.LibsndfileError, OSError):
            seconds = None  # the full decode below reports what is wrong
        if seconds is not None and seconds > max_seconds:
            raise AudioError(f"{name}: {seconds / 3600:.2f} h of audio exceeds the limit of {max_seconds:.0f} s "
                             "(raise --max-audio-s, or split the file)")
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise AudioError(f"{name}: audio file not found") from None
    except OSError as e:
        raise AudioError(f"{name}: cannot read audio file ({e.strerror or e})") from None
    wave = load_audio_bytes(data, name, target_sr)
    if max_seconds is not None and len(wave) > max_seconds * target_sr:
        raise AudioError(f"{name}: {len(wave) / target_sr:.0f} s of audio exceeds the limit of {max_seconds:.0f} s")
    return wave


def load_audio_bytes(data: bytes, name: str, target_sr: int = 16000) -> np.ndarray:
    """Decodes an in-memory audio file (the bytes of a wav/flac/ogg file).

    Args:
      data: the encoded file contents.
      name: where the bytes came from (a path, a dataset key); used only in error messages.
      target_sr: output sample rate in Hz.

    Returns: [S] float32 mono samples at `target_sr` Hz, nominally in [-1, 1].
    Raises: AudioError.
    """
    if not isinstance(target_sr, (int, np.integer)) or target_sr <= 0:
        raise AudioError(f"{name}: target_sr must be a positive integer, got {target_sr!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"{name}: expected the encoded file as bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise AudioError(f"{name}: audio file is empty (0 bytes)")
    _check_riff_complete(data, name)

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = f.samplerate
            declared = f.frames
            samples = f.read(dtype="float32", always_2d=True)  # [S, C]
    except (sf.SoundFileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{name}: cannot decode audio (corrupt, truncated or unsupported: {_decode_error(e)})") from None

    if declared > 0 and samples.shape[0] < declared:
        raise AudioError(
            f"{name}: truncated audio: header declares {declared} samples, only {samples.shape[0]} decoded"
        )
    if samples.shape[0] == 0:
        raise AudioError(f"{name}: audio has 0 samples")
    if not np.all(np.isfinite(samples)):
        bad = int(np.sum(~np.isfinite(samples)))
        raise AudioError(f"{name}: audio contains {bad} non-finite (NaN/Inf) samples")

    wave = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if sr != target_sr:
        wave = soxr.resample(wave, sr, int(target_sr), quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(wave, dtype=np.float32)


_BUFFER_REPR = re.compile(r"Error opening <_io\.BytesIO object at 0x[0-9a-fA-F]+>: ?|<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _decode_error(e: Exception) -> str:
    """libsndfile's reason without the in-memory buffer it was handed (`<_io.BytesIO object at
    0x...>` says nothing; the caller names the file): e.g. "Format not recognised."."""
    text = getattr(e, "error_string", None) or str(e)
    return _BUFFER_REPR.sub("", str(text)).strip() or type(e).__name__


def _check_riff_complete(data: bytes, name: str) -> None:
    """Raises AudioError when a RIFF/WAVE file is shorter than its `data` chunk says.

    libsndfile silently decodes the part that is present, so a cut-off WAV would otherwise
    load as a shorter clip. Placeholder sizes (0 or 0xFFFFFFFF, written by streaming
    encoders) are accepted.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if chunk_id == b"data":
            available = len(data) - (pos + 8)
            if size not in (0, 0xFFFFFFFF) and size > available:
                raise AudioError(
                    f"{name}: truncated WAV file: data chunk declares {size} bytes, "
                    f"only {available} present"
                )
            return
        pos += 8 + size + (size & 1)
    # No data chunk in the bytes present: let libsndfile report it.
