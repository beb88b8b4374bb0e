"""Training / evaluation batches on grain, with static shapes and exact resumption.

Flow (DESIGN.md "Data flow"): manifest examples -> per-epoch *plan* (pure function of
(seed, epoch): length buckets, shuffles, batches, augmentation choices) -> grain
`MapDataset.range(steps).map(load + augment + fbank/LFR + tokenize + pad)` -> grain iterator.

Design decisions
- Buckets come from the manifest `speech_length` (10 ms frames): an example goes to the smallest
  LFR edge e with ceil((speech_length + 2) / 6) <= e (2 frames of slack for rounding in the
  manifest). The bucket is fixed for all epochs, so every epoch has the same number of steps
  and a global step maps to (epoch, batch) without history.
- Augmentations that lengthen audio are limited to the room left in the example's bucket: a
  speed factor < 1 that would overflow falls back to 1.0, zero padding is scaled down to fit.
  Zero padding is applied only to utterances that get noise (it exists to create noise-only
  stretches, funaudio-asr-recipe.md "Hallucination mitigation").
- Training skips (with a warning) utterances longer than the largest bucket and targets longer
  than `max_target_tokens`; evaluation never skips (it adds bucket edges, multiples of the
  largest edge, as needed) so it covers every example exactly once.
- If the decoded audio turns out longer than its bucket by <= 2 LFR frames it is truncated
  (manifest rounding); by more, the row becomes a weight-0 row with a warning.
- A row whose audio cannot be loaded (AudioError / FrontendError) is, with on_error='skip', a
  weight-0 padding row plus a warning naming the manifest file:line; with 'raise' a `DataError`.
- Token length L of a batch = round_up(max over the *global* batch of text tokens +
  audio_token_count(bucket edge), token_multiple), computed from the plan, so every process
  agrees on it without seeing the other processes' rows. CTC label length likewise.
- Sharding: process p of P gets rows [p*B/P, (p+1)*B/P) of every global batch.
- Randomness: plan draws from SeedSequence([seed, epoch, 0]); per-row draws (noise file, crop
  offset, SNR) from SeedSequence([seed, epoch, example_index, 1]). Nothing depends on the
  order batches are produced in, so an iterator restored with `set_state` continues exactly.

Batch dict (numpy), B = batch_size // process_count rows::

    feats [B, T, 560] f32        feat_lengths [B] i32        T = the bucket's LFR edge
    input_ids [B, L] i32 (pad_id)  labels [B, L] i32 (-100)  token_lengths [B] i32
    audio_start [B] i32          audio_tokens [B] i32 (N = audio_token_count(feat_length))
    ctc_labels [B, Lc] i32 (0-padded) + ctc_label_lengths [B] i32   (only with a CTC vocabulary)
    example_index [B] i32 (-1 on padding rows)  weight [B] f32 (0 on padding rows)
    audio_seconds [B] f32 (duration of the waveform after augmentation)

Padding rows have all lengths 0 (feat_lengths, token_lengths, audio_tokens, ctc_label_lengths).
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import grain
import numpy as np

from funasr_jax.audio import AudioError, load_audio
from funasr_jax.data.augment import mix_noise, speed_perturb, zero_pad
from funasr_jax.data.manifest import Example, read_manifests
from funasr_jax.models.config import audio_token_count
from funasr_jax.prompt import IGNORE_INDEX, build_prompt, prompt_pieces, with_first_pass

__all__ = [
    "DataConfig",
    "DataError",
    "EvalBatches",
    "TrainData",
    "load_text_tools",
    "make_eval_batches",
    "make_train_data",
    "make_train_iterator",
    "read_train_examples",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FBANK_PER_LFR = 6  # 10 ms fbank frames per 60 ms LFR frame
FBANK_SLACK = 2  # fbank frames of slack when bucketing from the manifest speech_length
TRUNCATE_TOLERANCE = 2  # LFR frames an utterance may exceed its bucket by and be truncated
NOISE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_PLAN_TAG, _ROW_TAG = 0, 1


class DataError(ValueError):
    """A data problem that stops the pipeline (on_error='raise'); names manifest file:line."""


@dataclass(frozen=True)
class DataConfig:
    """Data pipeline settings.

    bucket_frames: LFR-frame (60 ms) bucket edges, ascending; a batch's feats are [B, edge, 560].
    batch_size: global batch size (rows over all processes).
    max_target_tokens: training skips targets with more LLM tokens ("{text}<|im_end|>").
    token_multiple: L and Lc are rounded up to a multiple of this.
    noise_dir: folder searched (recursively) for noise audio; None -> no noise.
    noise_prob: probability an utterance gets noise; SNR ~ N(snr_mean, snr_std) dB.
    zero_pad_prob: probability a *noised* utterance is zero-padded before the noise is added;
      before/after each ~ U(0, zero_pad_max_s) s, scaled down to fit the bucket.
    speed_factors: () for none, else one factor drawn uniformly per utterance and epoch.
    on_error: 'skip' (bad manifest lines / audio become warnings) or 'raise'.
    num_workers: grain worker processes (0 = in-process); num_threads / prefetch_buffer:
      grain threads and prefetched batches per process.
    instruction_override: None -> each example's manifest instruction; a string -> used for all.
    first_pass_prompt: put each example's manifest `first_pass` hypothesis in front of its
      instruction (`prompt.with_first_pass`); every example must have one.
    """

    train_files: tuple[str, ...] = ()
    dev_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    tokenizer: str = ""
    ctc_tokenizer: str | None = None
    batch_size: int = 8
    bucket_frames: tuple[int, ...] = (64, 128, 256, 512)
    max_target_tokens: int = 256
    token_multiple: int = 32
    noise_dir: str | None = None
    noise_prob: float = 0.3
    snr_mean: float = 10.0
    snr_std: float = 5.0
    zero_pad_prob: float = 0.0
    zero_pad_max_s: float = 1.0
    speed_factors: tuple[float, ...] = ()
    on_error: str = "skip"
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = False
    num_workers: int = 0
    num_threads: int = 2
    prefetch_buffer: int = 4
    instruction_override: str | None = None
    first_pass_prompt: bool = False

    def validate(self) -> "DataConfig":
        """Raises ValueError naming the first bad field; returns self."""

        def bad(field: str, why: str):
            raise ValueError(f"DataConfig.{field}: {why}, got {getattr(self, field)!r}")

        for f in ("train_files", "dev_files", "test_files", "bucket_frames", "speed_factors"):
            if not isinstance(getattr(self, f), tuple):
                bad(f, "must be a tuple")
        for f in ("train_files", "dev_files", "test_files"):
            if not all(isinstance(p, (str, os.PathLike)) for p in getattr(self, f)):
                bad(f, "must hold paths")
        if not isinstance(self.tokenizer, (str, os.PathLike)):
            bad("tokenizer", "must be a path")
        if self.ctc_tokenizer is not None and not isinstance(self.ctc_tokenizer, (str, os.PathLike)):
            bad("ctc_tokenizer", "must be a path or None")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad("batch_size", "must be a positive integer")
        edges = self.bucket_frames
        if not edges or not all(isinstance(e, int) and e > 0 for e in edges) or list(edges) != sorted(set(edges)):
            bad("bucket_frames", "must be strictly increasing positive integers")
        for f in ("max_target_tokens", "token_multiple", "num_threads", "prefetch_buffer"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                bad(f, "must be a positive integer")
        if self.noise_dir is not None and not isinstance(self.noise_dir, (str, os.PathLike)):
            bad("noise_dir", "must be a path or None")
        for f in ("noise_prob", "zero_pad_prob"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                bad(f, "must be a probability in [0, 1]")
        if not isinstance(self.snr_mean, (int, float)) or not math.isfinite(self.snr_mean):
            bad("snr_mean", "must be a finite number (dB)")
        if not isinstance(self.snr_std, (int, float)) or not self.snr_std >= 0:
            bad("snr_std", "must be >= 0 (dB)")
        if not isinstance(self.zero_pad_max_s, (int, float)) or not self.zero_pad_max_s >= 0:
            bad("zero_pad_max_s", "must be >= 0 seconds")
        if not all(isinstance(f, (int, float)) and 0.5 <= f <= 2.0 for f in self.speed_factors):
            bad("speed_factors", "must be factors in [0.5, 2.0]")
        if self.on_error not in ("skip", "raise"):
            bad("on_error", "must be 'skip' or 'raise'")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "must be a non-negative integer")
        for f in ("shuffle", "drop_remainder", "first_pass_prompt"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be a bool")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            bad("num_workers", "must be a non-negative integer")
        if self.instruction_override is not None and not isinstance(self.instruction_override, str):
            bad("instruction_override", "must be a string or None")
        return self


# --------------------------------------------------------------------------- planning


def _round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def _lfr_estimate(fbank_frames) -> np.ndarray:
    """LFR frames expected for `fbank_frames` 10 ms frames, with slack (vectorised)."""
    return -(-(np.asarray(fbank_frames, np.float64) + FBANK_SLACK).astype(np.int64) // FBANK_PER_LFR)


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one epoch, as arrays (all processes compute the same plan).

    rows [S, B]: example indices (-1 = padding); bucket [S]: bucket id; tokens / ctc_tokens [S]:
    L / Lc of each batch. factor / pad_before / pad_after / noise: per-example augmentation
    choices indexed by example index (seconds for the pads).
    """

    rows: np.ndarray
    bucket: np.ndarray
    tokens: np.ndarray
    ctc_tokens: np.ndarray
    factor: np.ndarray
    pad_before: np.ndarray
    pad_after: np.ndarray
    noise: np.ndarray


class _Planner:
    """Deterministic batch plans for a fixed set of examples."""

    def __init__(self, cfg: DataConfig, n_examples: int, kept: np.ndarray, fbank_frames: np.ndarray,
                 edges: Sequence[int], text_tokens: np.ndarray, ctc_tokens: np.ndarray | None,
                 augment: bool, shuffle: bool, drop_remainder: bool, has_noise: bool):
        self.cfg = cfg
        self.n = n_examples
        self.kept = np.asarray(kept, np.int64)
        self.fbank_frames = np.asarray(fbank_frames, np.float64)  # [n], indexed by example
        self.edges = np.asarray(edges, np.int64)
        self.text_tokens = text_tokens
        self.ctc_tokens = ctc_tokens
        self.augment, self.shuffle, self.drop_remainder = augment, shuffle, drop_remainder
        self.has_noise = has_noise
        lfr = _lfr_estimate(self.fbank_frames[self.kept])
        self.bucket_of = np.full(self.n, -1, np.int64)
        self.bucket_of[self.kept] = np.searchsorted(self.edges, lfr, side="left")
        counts = np.bincount(self.bucket_of[self.kept], minlength=len(self.edges))
        b = cfg.batch_size
        per_bucket = counts // b if drop_remainder else -(-counts // b)
        self.steps_per_epoch = int(per_bucket.sum())
        self._lock = threading.Lock()
        self._cache: dict[int, EpochPlan] = {}

    def __getstate__(self):  # picklable for grain worker processes
        d = self.__dict__.copy()
        d.pop("_lock")
        d["_cache"] = {}
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def plan(self, epoch: int) -> EpochPlan:
        with self._lock:
            p = self._cache.get(epoch)
            if p is None:
                p = self._make(epoch)
                if len(self._cache) >= 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = p
            return p

    def _augmentation(self, rng: np.random.Generator):
        cfg, n = self.cfg, self.n
        factor = np.ones(n)
        pb, pa = np.zeros(n), np.zeros(n)
        noise = np.zeros(n, bool)
        if not self.augment:
            return factor, pb, pa, noise
        # Draw every array in full, whatever the probabilities, so one setting never shifts
        # another's random stream.
        fidx = rng.integers(max(len(cfg.speed_factors), 1), size=n)
        u_noise, u_pad = rng.random(n), rng.random(n)
        pb_raw, pa_raw = rng.uniform(0, 1, n) * cfg.zero_pad_max_s, rng.uniform(0, 1, n) * cfg.zero_pad_max_s
        if cfg.speed_factors:
            factor = np.asarray(cfg.speed_factors, np.float64)[fidx]
        edge = np.where(self.bucket_of >= 0, self.edges[np.maximum(self.bucket_of, 0)], 0)
        cap = edge * FBANK_PER_LFR - FBANK_SLACK
        over = self.fbank_frames / factor > cap
        factor = np.where(over, 1.0, factor)
        room = np.maximum(cap - np.ceil(self.fbank_frames / factor) - 1, 0)  # fbank frames left
        if self.has_noise:
            noise = u_noise < cfg.noise_prob
            pad = noise & (u_pad < cfg.zero_pad_prob)
            pb, pa = np.where(pad, pb_raw, 0.0), np.where(pad, pa_raw, 0.0)
            total_frames = (pb + pa) * 100.0
            scale = np.where(total_frames > room, room / np.maximum(total_frames, 1e-9), 1.0)
            pb, pa = pb * scale, pa * scale
        return factor, pb, pa, noise

    def _make(self, epoch: int) -> EpochPlan:
        cfg, b = self.cfg, self.cfg.batch_size
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch, _PLAN_TAG]))
        factor, pb, pa, noise = self._augmentation(rng)
        batches, buckets = [], []
        for k in range(len(self.edges)):
            idx = self.kept[self.bucket_of[self.kept] == k]
            if self.shuffle:
                idx = rng.permutation(idx)
            n_full = len(idx) // b
            for s in range(n_full):
                batches.append(idx[s * b:(s + 1) * b])
                buckets.append(k)
            rest = idx[n_full * b:]
            if len(rest) and not self.drop_remainder:
                batches.append(np.concatenate([rest, np.full(b - len(rest), -1, np.int64)]))
                buckets.append(k)
        rows = np.asarray(batches, np.int64).reshape(-1, b)
        bucket = np.asarray(buckets, np.int64)
        if self.shuffle and len(rows):
            order = rng.permutation(len(rows))
            rows, bucket = rows[order], bucket[order]
        m = cfg.token_multiple
        real = rows >= 0
        safe = np.maximum(rows, 0)
        text_max = np.where(real, self.text_tokens[safe], 0).max(axis=1, initial=0)
        n_audio = np.asarray([audio_token_count(int(e)) for e in self.edges], np.int64)[bucket]
        tokens = np.asarray([_round_up(max(t, 1), m) for t in text_max + n_audio], np.int64)
        if self.ctc_tokens is not None:
            ctc_max = np.where(real, self.ctc_tokens[safe], 0).max(axis=1, initial=0)
            ctc_tokens = np.asarray([_round_up(max(t, 1), m) for t in ctc_max], np.int64)
        else:
            ctc_tokens = np.zeros(len(rows), np.int64)
        return EpochPlan(rows=rows, bucket=bucket, tokens=tokens, ctc_tokens=ctc_tokens,
                         factor=factor, pad_before=pb, pad_after=pa, noise=noise)


# --------------------------------------------------------------------------- loading


class _BatchLoader:
    """grain map function: global step -> this process's slice of the planned global batch."""

    def __init__(self, cfg: DataConfig, examples: Sequence[Example], planner: _Planner, tokenizer,
                 ctc_vocab, frontend_cfg, noise_files: Sequence[str], process_index: int,
                 process_count: int, augment: bool):
        from funasr_jax.frontend import FrontendConfig, load_cmvn

        self.cfg = cfg
        self.examples = list(examples)
        self.planner = planner
        self.tokenizer = tokenizer
        self.ctc_vocab = ctc_vocab
        self.frontend_cfg = frontend_cfg if frontend_cfg is not None else FrontendConfig()
        self.cmvn = load_cmvn(self.frontend_cfg.cmvn_file) if self.frontend_cfg.cmvn_file else None
        self.noise_files = list(noise_files)
        self.local_b = cfg.batch_size // process_count
        self.row0 = process_index * self.local_b
        self.augment = augment
        self._noise_cache: dict[str, np.ndarray] = {}
        self._noise_lock = threading.Lock()

    def __getstate__(self):
        d = self.__dict__.copy()
        d.pop("_noise_lock")
        d["_noise_cache"] = {}
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._noise_lock = threading.Lock()

    @property
    def steps_per_epoch(self) -> int:
        return self.planner.steps_per_epoch

    def _noise(self, path: str) -> np.ndarray | None:
        with self._noise_lock:
            wav = self._noise_cache.get(path)
        if wav is None:
            try:
                wav = load_audio(path, SAMPLE_RATE)
            except AudioError as e:
                log.warning("noise file unusable, utterance left clean: %s", e)
                return None
            with self._noise_lock:
                if len(self._noise_cache) >= 64:
                    self._noise_cache.pop(next(iter(self._noise_cache)))
                self._noise_cache[path] = wav
        return wav

    def _wave(self, i: int, epoch: int, plan: EpochPlan) -> np.ndarray:
        ex = self.examples[i]
        wave = load_audio(ex.audio_path, SAMPLE_RATE)
        if not self.augment:
            return wave
        if plan.factor[i] != 1.0:
            wave = speed_perturb(wave, float(plan.factor[i]), SAMPLE_RATE)
        if plan.noise[i] and self.noise_files:
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, epoch, i, _ROW_TAG]))
            path = self.noise_files[int(rng.integers(len(self.noise_files)))]
            snr = float(rng.normal(self.cfg.snr_mean, self.cfg.snr_std))
            noise = self._noise(path)
            if noise is not None:
                ps = float(np.mean(np.square(wave, dtype=np.float64)))
                wave = zero_pad(wave, float(plan.pad_before[i]), float(plan.pad_after[i]), SAMPLE_RATE)
                wave = mix_noise(wave, noise, snr, rng, speech_power=ps)
        return wave

    def _row_failed(self, ex: Example, err: Exception) -> None:
        msg = f"{ex.where} (key {ex.key!r}, audio {ex.audio_path}): {err}"
        if self.cfg.on_error == "raise":
            raise DataError(msg) from err
        log.warning("unusable utterance replaced by a weight-0 padding row: %s", msg)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        from funasr_jax.frontend import FrontendError, extract_features

        spe = self.planner.steps_per_epoch
        epoch, s = divmod(int(step), spe)
        plan = self.planner.plan(epoch)
        edge = int(self.planner.edges[plan.bucket[s]])
        rows = plan.rows[s, self.row0:self.row0 + self.local_b]
        b, lt, lc = self.local_b, int(plan.tokens[s]), int(plan.ctc_tokens[s])
        dim = self.frontend_cfg.feature_dim
        out = {
            "feats": np.zeros((b, edge, dim), np.float32),
            "feat_lengths": np.zeros((b,), np.int32),
            "input_ids": np.full((b, lt), self.tokenizer.pad_id, np.int32),
            "labels": np.full((b, lt), IGNORE_INDEX, np.int32),
            "token_lengths": np.zeros((b,), np.int32),
            "audio_start": np.zeros((b,), np.int32),
            "audio_tokens": np.zeros((b,), np.int32),
            "example_index": np.full((b,), -1, np.int32),
            "weight": np.zeros((b,), np.float32),
            "audio_seconds": np.zeros((b,), np.float32),
        }
        if self.ctc_vocab is not None:
            out["ctc_labels"] = np.zeros((b, lc), np.int32)
            out["ctc_label_lengths"] = np.zeros((b,), np.int32)
        for r, i in enumerate(rows):
            i = int(i)
            if i < 0:
                continue
            ex = self.examples[i]
            try:
                wave = self._wave(i, epoch, plan)
                feats = extract_features(wave, self.frontend_cfg, self.cmvn)
                if feats.shape[0] == 0:
                    raise AudioError(f"{ex.audio_path}: no feature frames")
                if feats.shape[0] > edge:
                    if feats.shape[0] > edge + TRUNCATE_TOLERANCE:
                        raise AudioError(
                            f"{ex.audio_path}: {feats.shape[0]} LFR frames but the manifest "
                            f"speech_length {ex.speech_length} put it in the {edge}-frame bucket")
                    feats = feats[:edge]
            except (AudioError, FrontendError) as e:
                self._row_failed(ex, e)
                continue
            t = feats.shape[0]
            n_audio = int(audio_token_count(t))
            p = build_prompt(self.tokenizer, system=ex.system,
                             instruction=_instruction(self.cfg, ex), n_audio=n_audio, target=ex.target)
            if len(p.input_ids) > lt:  # the plan's token count is an upper bound by construction
                raise DataError(f"{ex.where}: {len(p.input_ids)} tokens exceed the planned {lt}")
            out["feats"][r, :t] = feats
            out["feat_lengths"][r] = t
            out["input_ids"][r, :len(p.input_ids)] = p.input_ids
            out["labels"][r, :len(p.labels)] = p.labels
            out["token_lengths"][r] = len(p.input_ids)
            out["audio_start"][r] = p.audio_start
            out["audio_tokens"][r] = n_audio
            out["example_index"][r] = i
            out["weight"][r] = 1.0
            out["audio_seconds"][r] = wave.shape[0] / SAMPLE_RATE
            if self.ctc_vocab is not None:
                c = list(self.ctc_vocab.encode(ex.target))
                out["ctc_labels"][r, :len(c)] = c
                out["ctc_label_lengths"][r] = len(c)
        return out


def _instruction(cfg: DataConfig, ex: Example) -> str:
    base = cfg.instruction_override if cfg.instruction_override is not None else ex.instruction
    if not cfg.first_pass_prompt:
        return base
    if ex.first_pass is None:
        raise DataError(f"{ex.where} (key {ex.key!r}): no 'first_pass' field, but data.first_pass_prompt is set; "
                        "write it with `python -m funasr_jax.first_pass --checkpoint CKPT --data FILE`")
    return with_first_pass(base, ex.first_pass)


# --------------------------------------------------------------------------- setup


def load_text_tools(cfg: DataConfig):
    """(LLM tokenizer, CTC vocabulary or None) from cfg.tokenizer / cfg.ctc_tokenizer."""
    from funasr_jax.tokenizer import CTCVocabulary, load_tokenizer

    tok = load_tokenizer(cfg.tokenizer)
    return tok, (CTCVocabulary(cfg.ctc_tokenizer) if cfg.ctc_tokenizer else None)


def read_train_examples(cfg: DataConfig) -> list[Example]:
    """The examples of cfg.train_files (bad lines per cfg.on_error)."""
    if not cfg.train_files:
        raise ValueError("DataConfig.train_files: no training manifests given")
    return read_manifests(cfg.train_files, on_error=cfg.on_error)


def _noise_files(noise_dir: str | None) -> list[str]:
    if noise_dir is None:
        return []
    if not os.path.isdir(noise_dir):
        raise ValueError(f"DataConfig.noise_dir: {noise_dir} is not a directory")
    files = sorted(p for p in glob.glob(os.path.join(os.fspath(noise_dir), "**", "*"), recursive=True)
                   if p.lower().endswith(NOISE_EXTENSIONS))
    if not files:
        raise ValueError(f"DataConfig.noise_dir: no audio files ({', '.join(NOISE_EXTENSIONS)}) in {noise_dir}")
    return files


def _count_tokens(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab):
    """Text tokens per example (prompt pieces + target + <|im_end|>) and CTC label lengths."""
    piece_cache: dict[tuple[str, str], int] = {}
    text, target, ctc = [], [], []
    for ex in examples:
        key = (ex.system, _instruction(cfg, ex))
        if key not in piece_cache:
            before, after = prompt_pieces(*key)
            piece_cache[key] = len(tokenizer.encode(before)) + len(tokenizer.encode(after))
        n_tgt = len(tokenizer.encode(f"{ex.target}<|im_end|>"))
        target.append(n_tgt)
        text.append(piece_cache[key] + n_tgt)
        if ctc_vocab is not None:
            ctc.append(len(ctc_vocab.encode(ex.target)))
    ctc_arr = np.asarray(ctc, np.int64) if ctc_vocab is not None else None
    return np.asarray(text, np.int64), np.asarray(target, np.int64), ctc_arr


def _warn_skipped(reason: str, bad: list[Example]) -> None:
    for ex in bad[:20]:
        log.warning("skipping %s (key %r): %s", ex.where, ex.key, reason)
    if len(bad) > 20:
        log.warning("... and %d more utterances skipped: %s", len(bad) - 20, reason)


@dataclass
class TrainData:
    """The grain training dataset (one element = this process's slice of a global batch).

    dataset: grain MapDataset of batches over `num_epochs` epochs (sys.maxsize steps if None).
    steps_per_epoch: global batches per epoch (constant across epochs).
    kept: indices of the examples that take part (others were skipped with a warning).
    """

    dataset: Any
    steps_per_epoch: int
    kept: np.ndarray
    examples: list[Example]
    loader: _BatchLoader

    def plan(self, epoch: int) -> EpochPlan:
        return self.loader.planner.plan(epoch)

    def iterator(self):
        """A grain DatasetIterator (get_state()/set_state(), JSON-serialisable state)."""
        return _iterate(self.dataset, self.loader.cfg)


def _check_sharding(cfg: DataConfig, process_index: int, process_count: int) -> None:
    if not (isinstance(process_count, int) and process_count >= 1):
        raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
    if not (isinstance(process_index, int) and 0 <= process_index < process_count):
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if cfg.batch_size % process_count:
        raise ValueError(f"DataConfig.batch_size {cfg.batch_size} is not divisible by process_count {process_count}")


def make_train_data(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab=None,
                    frontend_cfg=None, process_index: int = 0, process_count: int = 1,
                    num_epochs: int | None = None) -> TrainData:
    """Builds the training grain dataset (see module docstring for batch contents)."""
    cfg.validate()
    _check_sharding(cfg, process_index, process_count)
    examples = list(examples)
    if not examples:
        raise ValueError("make_train_data: no training examples")
    text, target, ctc = _count_tokens(cfg, examples, tokenizer, ctc_vocab)
    frames = np.asarray([ex.speech_length for ex in examples], np.int64)
    too_long = _lfr_estimate(frames) > cfg.bucket_frames[-1]
    too_many = target > cfg.max_target_tokens
    _warn_skipped(f"longer than the largest bucket ({cfg.bucket_frames[-1]} LFR frames)",
                  [examples[i] for i in np.flatnonzero(too_long)])
    _warn_skipped(f"target longer than max_target_tokens={cfg.max_target_tokens}",
                  [examples[i] for i in np.flatnonzero(too_many & ~too_long)])
    kept = np.flatnonzero(~too_long & ~too_many)
    if not len(kept):
        raise ValueError("make_train_data: every training example was skipped (see warnings)")
    noise_files = _noise_files(cfg.noise_dir)
    planner = _Planner(cfg, len(examples), kept, frames, cfg.bucket_frames, text, ctc,
                       augment=True, shuffle=cfg.shuffle, drop_remainder=cfg.drop_remainder,
                       has_noise=bool(noise_files))
    if planner.steps_per_epoch == 0:
        raise ValueError(f"make_train_data: {len(kept)} examples give no full batch of {cfg.batch_size} "
                         "(drop_remainder=True)")
    loader = _BatchLoader(cfg, examples, planner, tokenizer, ctc_vocab, frontend_cfg, noise_files,
                          process_index, process_count, augment=True)
    total = sys.maxsize if num_epochs is None else num_epochs * planner.steps_per_epoch
    ds = grain.MapDataset.range(total).map(loader)
    return TrainData(dataset=ds, steps_per_epoch=planner.steps_per_epoch, kept=kept,
                     examples=examples, loader=loader)


def _iterate(ds, cfg: DataConfig):
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                                 prefetch_buffer_size=cfg.prefetch_buffer))
    if cfg.num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS(sys.argv[:1])
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch_buffer))
    return iter(it_ds)


def make_train_iterator(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab=None,
                        frontend_cfg=None, process_index: int = 0, process_count: int = 1,
                        num_epochs: int | None = None):
    """grain DatasetIterator over training batches (this process's rows of each global batch).

    `it.get_state()` is a small JSON-serialisable dict; `it.set_state(state)` on a fresh
    iterator built from the same config and examples continues with exactly the batches an
    uninterrupted run would produce.
    """
    return make_train_data(cfg, examples, tokenizer, ctc_vocab, frontend_cfg, process_index,
                           process_count, num_epochs).iterator()


@dataclass
class EvalBatches:
    """Evaluation batches: every example exactly once, no augmentation, fixed order.

    Iterate it (or index `dataset[i]`); len() = number of batches.
    """

    dataset: Any
    examples: list[Example]
    bucket_frames: tuple[int, ...]
    cfg: DataConfig

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        return _iterate(self.dataset, self.cfg)


def make_eval_batches(cfg: DataConfig, files: Sequence[str] | str, tokenizer, ctc_vocab=None,
                      frontend_cfg=None, process_index: int = 0, process_count: int = 1,
                      examples: Sequence[Example] | None = None) -> EvalBatches:
    """Evaluation batches over `files` (or the given `examples`).

    Examples longer than the largest bucket get extra edges (multiples of the largest edge), so
    nothing is dropped; batches are ordered by bucket, then manifest order.
    """
    cfg.validate()
    _check_sharding(cfg, process_index, process_count)
    if examples is None:
        files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        examples = read_manifests(files, on_error=cfg.on_error)
    examples = list(examples)
    edges = list(cfg.bucket_frames)
    frames = np.asarray([ex.speech_length for ex in examples], np.int64)
    need = int(_lfr_estimate(frames).max(initial=0))
    while need > edges[-1]:
        edges.append(edges[-1] + cfg.bucket_frames[-1])
    text, _, ctc = _count_tokens(cfg, examples, tokenizer, ctc_vocab)
    planner = _Planner(cfg, len(examples), np.arange(len(examples)), frames, edges, text, ctc,
                       augment=False, shuffle=False, drop_remainder=False, has_noise=False)
    loader = _BatchLoader(cfg, examples, planner, tokenizer, ctc_vocab, frontend_cfg, [],
                          process_index, process_count, augment=False)
    ds = grain.MapDataset.range(planner.steps_per_epoch).map(loader)
    return EvalBatches(dataset=ds, examples=examples, bucket_frames=tuple(edges), cfg=cfg)
