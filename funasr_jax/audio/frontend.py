"""Speech front end of Fun-ASR-Nano: Kaldi fbank -> LFR stacking -> optional CMVN.

Numerically this is FunASR's `WavFrontend` with dither 0:

- waveform in [-1, 1] x 32768 (int16 scale);
- frames of 25 ms every 10 ms, `snip_edges` (T_fb = 1 + (S - 400) // 160 at 16 kHz);
  FunASR passes frame_length = min(25 ms, duration), so a clip shorter than one frame gives
  exactly one frame, windowed over the whole clip;
- per frame: subtract the mean, Kaldi pre-emphasis 0.97 (x[0] -= 0.97 x[0]), symmetric
  Hamming window, zero-pad to the next power of two (512), power spectrum;
- 80 triangular Kaldi mel filters between 20 Hz and Nyquist, mel = 1127 ln(1 + f/700);
- ln(max(E, float32 eps));
- LFR: T = ceil(T_fb / n) output frames of m stacked fbank frames (560 dims for 7 x 80),
  frame i = fbank frames 6i-3 .. 6i+3 with indices clamped into [0, T_fb-1] (FunASR's
  left padding with copies of frame 0 and right padding with the last frame);
- CMVN (only if an `am.mvn` is given): (x + shift) * scale per dim. Fun-ASR-Nano uses none.

Two implementations share the same tables (window, mel matrix, short-window sizes; built once
in numpy by `frontend_tables`):
- numpy, one utterance: `fbank_np`, `lfr_np`, `extract_features`;
- jnp, batched and jittable (cfg is a static Python object): `frontend_jnp.fbank`, `.lfr`,
  `.features`.

Clips shorter than 257 samples (16 ms; generally half the FFT size + 1) are rejected: with
such a short window the FFT shrinks to 256 points or less and some of the 80 mel filters
get no FFT bin, which kaldi-native-fbank (FunASR's fbank backend without torchaudio)
refuses as well. A 0-sample clip gives 0 frames (useful for padding rows of a batch).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FrontendConfig",
    "FrontendError",
    "FrontendTables",
    "frontend_tables",
    "num_fbank_frames",
    "num_lfr_frames",
    "fbank_np",
    "lfr_np",
    "load_cmvn",
    "apply_cmvn",
    "extract_features",
]

PREEMPH = 0.97
_LOW_FREQ_HZ = 20.0
LOG_FLOOR = float(np.finfo(np.float32).eps)  # 1.1920929e-07
INT16_SCALE = 32768.0


class FrontendError(ValueError):
    """Bad front-end input or configuration; the message names the field, tensor or file."""


@dataclass(frozen=True)
class FrontendConfig:
    """Front-end settings (FunASR `frontend_conf`). Times in milliseconds.

    dither must be 0: the reference adds Gaussian noise (non-deterministic); every port and
    this one leave it out. cmvn_file: path of a Kaldi-nnet `am.mvn`, or None (Fun-ASR-Nano).
    """

    sample_rate: int = 16000
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    lfr_m: int = 7
    lfr_n: int = 6
    dither: float = 0.0
    cmvn_file: str | None = None

    def __post_init__(self):
        for name in ("sample_rate", "n_mels", "lfr_m", "lfr_n"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise FrontendError(f"FrontendConfig.{name} must be a positive integer, got {v!r}")
        for name in ("frame_length_ms", "frame_shift_ms"):
            if not getattr(self, name) > 0:
                raise FrontendError(f"FrontendConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.dither != 0.0:
            raise FrontendError(
                f"FrontendConfig.dither must be 0.0 (deterministic features), got {self.dither!r}"
            )
        if self.sample_rate / 2 <= _LOW_FREQ_HZ:
            raise FrontendError(f"FrontendConfig.sample_rate {self.sample_rate} leaves no band above 20 Hz")

    @property
    def feature_dim(self) -> int:
        """Width of an LFR frame: lfr_m * n_mels (560)."""
        return self.lfr_m * self.n_mels


# --------------------------------------------------------------------------- shared tables


def _kaldi_size(sample_rate: int, ms: float) -> int:
    """Samples in `ms` milliseconds, computed as kaldi-native-fbank does (float32 products)."""
    per_ms = np.float32(np.float32(sample_rate) * np.float32(0.001))
    return int(per_ms * np.float32(ms))


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _hamming(n: int) -> np.ndarray:
    """Symmetric Hamming window 0.54 - 0.46 cos(2 pi i / (n - 1)), [n] float32."""
    if n == 1:
        return np.ones(1, np.float32)
    i = np.arange(n, dtype=np.float64)
    return (0.54 - 0.46 * np.cos(2.0 * np.pi * i / (n - 1))).astype(np.float32)


def _mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)


def _kaldi_mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Kaldi triangular mel filters, [n_fft // 2 + 1, n_mels] float32 (Nyquist row is 0)."""
    n_bins = n_fft // 2
    mel_lo, mel_hi = _mel(_LOW_FREQ_HZ), _mel(sample_rate / 2.0)
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    mel_f = _mel(np.arange(n_bins) * (sample_rate / n_fft))[:, None]  # [n_bins, 1]
    left = mel_lo + np.arange(n_mels)[None, :] * delta
    center, right = left + delta, left + 2 * delta
    up = (mel_f - left) / (center - left)
    down = (right - mel_f) / (right - center)
    w = np.where((mel_f > left) & (mel_f < right), np.where(mel_f <= center, up, down), 0.0)
    return np.concatenate([w, np.zeros((1, n_mels))], axis=0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class FrontendTables:
    """Constants of the fbank computation for one config (numpy, shared by both paths).

    window: [frame_len] float32; mel: [n_fft // 2 + 1, n_mels] float32;
    short_window_len: [frame_len] int32, window length FunASR uses for a clip of s < frame_len
    samples (min(25 ms, duration) converted to samples the kaldi-native-fbank way).
    """

    frame_len: int
    frame_shift: int
    n_fft: int
    min_samples: int
    window: np.ndarray
    mel: np.ndarray
    short_window_len: np.ndarray


@functools.lru_cache(maxsize=16)
def frontend_tables(cfg: FrontendConfig) -> FrontendTables:
    frame_len = _kaldi_size(cfg.sample_rate, cfg.frame_length_ms)
    frame_shift = _kaldi_size(cfg.sample_rate, cfg.frame_shift_ms)
    if frame_len < 2 or frame_shift < 1:
        raise FrontendError(f"FrontendConfig gives a frame of {frame_len} samples every {frame_shift}: too small")
    n_fft = _next_pow2(frame_len)
    short = np.array(
        [_kaldi_size(cfg.sample_rate, min(cfg.frame_length_ms, s / cfg.sample_rate * 1000)) for s in range(frame_len)],
        np.int32,
    )
    # The short window must keep the same FFT size (hence the same mel matrix).
    min_samples = n_fft // 2 + 1
    while min_samples < frame_len and short[min_samples] <= n_fft // 2:
        min_samples += 1
    mel = _kaldi_mel_matrix(cfg.sample_rate, n_fft, cfg.n_mels)
    if np.any(mel.sum(axis=0) == 0):
        raise FrontendError(f"FrontendConfig.n_mels={cfg.n_mels} is too many for a {n_fft}-point FFT (empty filters)")
    return FrontendTables(frame_len, frame_shift, n_fft, min_samples, _hamming(frame_len), mel, short)


def num_fbank_frames(num_samples: int, cfg: FrontendConfig = FrontendConfig()) -> int:
    """T_fb for a clip of `num_samples` (snip_edges; 1 for a clip shorter than one frame, 0 if empty)."""
    t = frontend_tables(cfg)
    if num_samples <= 0:
        return 0
    if num_samples < t.frame_len:
        return 1
    return 1 + (num_samples - t.frame_len) // t.frame_shift


def num_lfr_frames(num_fbank: int, cfg: FrontendConfig = FrontendConfig()) -> int:
    """T = ceil(T_fb / lfr_n)."""
    return -(-num_fbank // cfg.lfr_n)


# --------------------------------------------------------------------------- numpy path


def _check_wave_np(wave, cfg: FrontendConfig, name: str = "wave") -> np.ndarray:
    x = np.asarray(wave)
    if x.ndim != 1:
        raise FrontendError(f"{name} must be 1-D [S] mono samples, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise FrontendError(f"{name} must be float samples in [-1, 1], got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise FrontendError(f"{name} contains non-finite samples")
    t = frontend_tables(cfg)
    if 0 < x.shape[0] < t.min_samples:
        raise FrontendError(
            f"{name} has {x.shape[0]} samples; the fbank needs at least {t.min_samples} "
            f"({t.min_samples / cfg.sample_rate * 1000:.2f} ms at {cfg.sample_rate} Hz)"
        )
    return x


def fbank_np(wave: np.ndarray, cfg: FrontendConfig = FrontendConfig()) -> np.ndarray:
    """Kaldi log-mel fbank of one utterance.

    Args: wave [S] float samples in [-1, 1] at cfg.sample_rate.
    Returns: [T_fb, n_mels] float32, T_fb = num_fbank_frames(S).
    """
    x = _check_wave_np(wave, cfg).astype(np.float64) * INT16_SCALE
    t = frontend_tables(cfg)
    n = x.shape[0]
    num = num_fbank_frames(n, cfg)
    if num == 0:
        return np.zeros((0, cfg.n_mels), np.float32)
    if n < t.frame_len:
        win_len = int(t.short_window_len[n])
        window = _hamming(win_len)
    else:
        win_len, window = t.frame_len, t.window
    starts = np.arange(num)[:, None] * t.frame_shift
    frames = x[starts + np.arange(win_len)[None, :]]  # [T_fb, win_len]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1.0 - PREEMPH), frames[:, 1:] - PREEMPH * frames[:, :-1]], axis=1)
    frames = frames * window.astype(np.float64)
    power = np.abs(np.fft.rfft(frames, n=t.n_fft, axis=1)) ** 2  # [T_fb, n_fft/2+1]
    energies = power @ t.mel.astype(np.float64)
    return np.log(np.maximum(energies, LOG_FLOOR)).astype(np.float32)


def lfr_index(t_out: int, m: int, n: int) -> np.ndarray:
    """[t_out, m] unclamped source-frame indices: row i is 6i - 3 ... 6i + 3 (m=7, n=6)."""
    return np.arange(t_out)[:, None] * n + np.arange(m)[None, :] - (m - 1) // 2


def lfr_np(feats: np.ndarray, m: int = 7, n: int = 6) -> np.ndarray:
    """Low-frame-rate stacking of one utterance.

    Args: feats [T_fb, D]. Returns: [ceil(T_fb / n), m * D] float32 (frame-major stacking).
    """
    feats = np.asarray(feats)
    if feats.ndim != 2:
        raise FrontendError(f"feats must be [T_fb, D], got shape {feats.shape}")
    t_fb, d = feats.shape
    t_out = -(-t_fb // n)
    if t_out == 0:
        return np.zeros((0, m * d), np.float32)
    idx = np.clip(lfr_index(t_out, m, n), 0, t_fb - 1)
    return feats[idx].reshape(t_out, m * d).astype(np.float32)


def load_cmvn(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parses a FunASR/Kaldi-nnet `am.mvn` text file.

    Format: `<AddShift> D D` then `<LearnRateCoef> 0 [ v1 ... vD ]`, and the same for
    `<Rescale>`. Returns (shift [D], scale [D]) float32. Raises FrontendError naming the file.
    """
    name = os.fspath(path)
    try:
        with open(name, "r", encoding="utf-8") as f:
            tokens = f.read().split()
    except (OSError, UnicodeDecodeError) as e:
        raise FrontendError(f"{name}: cannot read CMVN file ({e})") from None

    def block(tag: str) -> np.ndarray:
        if tag not in tokens:
            raise FrontendError(f"{name}: malformed CMVN file: no {tag} block")
        i = tokens.index(tag)
        try:
            dim = int(tokens[i + 1])
            lb = tokens.index("[", i)
            rb = tokens.index("]", lb)
            values = np.array([float(v) for v in tokens[lb + 1 : rb]], np.float32)
        except (ValueError, IndexError):
            raise FrontendError(f"{name}: malformed CMVN file: cannot read the {tag} vector") from None
        if values.shape[0] != dim:
            raise FrontendError(f"{name}: malformed CMVN file: {tag} declares {dim} values, found {values.shape[0]}")
        if not np.all(np.isfinite(values)):
            raise FrontendError(f"{name}: malformed CMVN file: {tag} has non-finite values")
        return values

    shift, scale = block("<AddShift>"), block("<Rescale>")
    if shift.shape != scale.shape:
        raise FrontendError(f"{name}: malformed CMVN file: <AddShift> has {shift.shape[0]} dims, <Rescale> {scale.shape[0]}")
    return shift, scale


def write_cmvn(path: str | os.PathLike, shift, scale) -> None:
    """Writes (shift [D], scale [D]) as a FunASR/Kaldi-nnet `am.mvn` (the format `load_cmvn` reads)."""
    shift, scale = np.asarray(shift, np.float64), np.asarray(scale, np.float64)
    d = shift.shape[0]
    vec = lambda v: " ".join(f"{x:.8g}" for x in v)  # noqa: E731
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"<Nnet>\n<Splice> {d} {d}\n[ 0 ]\n<AddShift> {d} {d}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
                f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n")


def apply_cmvn(x, shift, scale):
    """(x + shift) * scale over the last axis; works on numpy and jnp arrays."""
    if x.shape[-1] != shift.shape[-1] or x.shape[-1] != scale.shape[-1]:
        raise FrontendError(
            f"CMVN has {shift.shape[-1]}/{scale.shape[-1]} dims but the features have {x.shape[-1]}"
        )
    return (x + shift) * scale


def resolve_cmvn(cfg: FrontendConfig, cmvn):
    if cmvn is None and cfg.cmvn_file is not None:
        return load_cmvn(cfg.cmvn_file)
    return cmvn


def extract_features(wave: np.ndarray, cfg: FrontendConfig = FrontendConfig(), cmvn=None) -> np.ndarray:
    """Encoder input of one utterance: fbank -> LFR -> CMVN (if `cmvn` or cfg.cmvn_file).

    Args: wave [S] float in [-1, 1]; cmvn: (shift [D], scale [D]) or None.
    Returns: [T, lfr_m * n_mels] float32, T = ceil(T_fb / lfr_n) frames of 60 ms.
    """
    x = lfr_np(fbank_np(wave, cfg), cfg.lfr_m, cfg.lfr_n)
    cmvn = resolve_cmvn(cfg, cmvn)
    if cmvn is not None:
        x = apply_cmvn(x, np.asarray(cmvn[0], np.float32), np.asarray(cmvn[1], np.float32)).astype(np.float32)
    return x
