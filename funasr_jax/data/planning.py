"""Deterministic per-epoch batch plans: length buckets, shuffles, batches, augmentation choices.

Units: `speech_length` in manifests counts 10 ms fbank frames; bucket edges and feats count 60 ms
LFR frames (one LFR frame = FBANK_PER_LFR fbank frames); token counts are LLM tokens.

- Buckets come from the manifest `speech_length`: an example goes to the smallest LFR edge e with
  ceil((speech_length + FBANK_SLACK) / 6) <= e (2 frames of slack for rounding in the manifest).
  The bucket is fixed for all epochs, so every epoch has the same number of steps and a global
  step maps to (epoch, batch) without history.
- Augmentations that lengthen audio are limited to the room left in the example's bucket: a speed
  factor < 1 that would overflow falls back to 1.0, zero padding is scaled down to fit. Zero padding
  is applied only to utterances that get noise (funaudio-asr-recipe.md "Hallucination mitigation").
- Token length L of a batch = round_up(max over the *global* batch of text tokens +
  audio_token_count(bucket edge), token_multiple), so every process agrees on it without seeing
  the other processes' rows. CTC label length Lc likewise.
- The plan of an epoch draws from SeedSequence([seed, epoch, PLAN_TAG]) only: it is a pure function
  of (seed, epoch), so any process (or a restored iterator) recomputes it exactly.

An `EpochPlan` of S global batches of B rows::

    rows [S, B] i64 example indices (-1 = padding row)    bucket [S] i64 bucket id
    tokens [S] i64 L per batch    ctc_tokens [S] i64 Lc per batch (0 without a CTC vocabulary)
    factor / pad_before / pad_after (seconds) / noise [n_examples]: per-example augmentation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from funasr_jax.data.cache import SharedCache
from funasr_jax.data.config import DataConfig
from funasr_jax.models.config import audio_token_count

__all__ = ["FBANK_PER_LFR", "FBANK_SLACK", "EpochPlan", "Planner", "lfr_estimate", "round_up"]

FBANK_PER_LFR = 6  # 10 ms fbank frames per 60 ms LFR frame
FBANK_SLACK = 2  # fbank frames of slack when bucketing from the manifest speech_length
PLAN_TAG = 0  # SeedSequence tag of plan draws (row draws use ROW_TAG in `rows`)


def round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def lfr_estimate(fbank_frames) -> np.ndarray:
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


class Planner:
    """Deterministic batch plans for a fixed set of examples.

    fbank_frames [n]: manifest speech_length per example; kept: indices of the examples planned;
    edges: LFR bucket edges; text_tokens / ctc_tokens [n]: prompt + target tokens and CTC labels
    per example (`rows.count_tokens`; ctc_tokens None without a CTC vocabulary).
    """

    def __init__(self, cfg: DataConfig, kept: np.ndarray, fbank_frames: np.ndarray, edges: Sequence[int],
                 text_tokens: np.ndarray, ctc_tokens: np.ndarray | None, has_noise: bool):
        self.cfg = cfg
        self.fbank_frames = np.asarray(fbank_frames, np.float64)  # [n], indexed by example
        self.n = len(self.fbank_frames)
        self.kept = np.asarray(kept, np.int64)
        self.edges = np.asarray(edges, np.int64)
        self.text_tokens = text_tokens
        self.ctc_tokens = ctc_tokens
        self.has_noise = has_noise
        lfr = lfr_estimate(self.fbank_frames[self.kept])
        self.bucket_of = np.full(self.n, -1, np.int64)
        # text_only: no audio is read, so every example shares the first bucket
        self.bucket_of[self.kept] = 0 if cfg.text_only else np.searchsorted(self.edges, lfr, side="left")
        counts = np.bincount(self.bucket_of[self.kept], minlength=len(self.edges))
        b = cfg.batch_size
        per_bucket = counts // b if cfg.drop_remainder else -(-counts // b)
        self.steps_per_epoch = int(per_bucket.sum())
        self._plans = SharedCache(max_items=2)

    def plan(self, epoch: int) -> EpochPlan:
        return self._plans.get_or_make(epoch, lambda: self._make(epoch))

    def _augmentation(self, rng: np.random.Generator):
        cfg, n = self.cfg, self.n
        factor = np.ones(n)
        pb, pa = np.zeros(n), np.zeros(n)
        noise = np.zeros(n, bool)
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
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch, PLAN_TAG]))
        factor, pb, pa, noise = self._augmentation(rng)
        batches, buckets = [], []
        for k in range(len(self.edges)):
            idx = self.kept[self.bucket_of[self.kept] == k]
            if cfg.shuffle:
                idx = rng.permutation(idx)
            n_full = len(idx) // b
            for s in range(n_full):
                batches.append(idx[s * b:(s + 1) * b])
                buckets.append(k)
            rest = idx[n_full * b:]
            if len(rest) and not cfg.drop_remainder:
                batches.append(np.concatenate([rest, np.full(b - len(rest), -1, np.int64)]))
                buckets.append(k)
        rows = np.asarray(batches, np.int64).reshape(-1, b)
        bucket = np.asarray(buckets, np.int64)
        if cfg.shuffle and len(rows):
            order = rng.permutation(len(rows))
            rows, bucket = rows[order], bucket[order]
        real = rows >= 0
        safe = np.maximum(rows, 0)
        text_max = np.where(real, self.text_tokens[safe], 0).max(axis=1, initial=0)
        n_audio = np.asarray([0 if cfg.text_only else audio_token_count(int(e)) for e in self.edges], np.int64)[bucket]
        tokens = self._lengths(text_max + n_audio)
        if self.ctc_tokens is not None:
            ctc_tokens = self._lengths(np.where(real, self.ctc_tokens[safe], 0).max(axis=1, initial=0))
        else:
            ctc_tokens = np.zeros(len(rows), np.int64)
        return EpochPlan(rows=rows, bucket=bucket, tokens=tokens, ctc_tokens=ctc_tokens,
                         factor=factor, pad_before=pb, pad_after=pa, noise=noise)

    def _lengths(self, longest: np.ndarray) -> np.ndarray:
        """Per-batch padded length: the longest row rounded up to token_multiple (at least one)."""
        return np.asarray([round_up(max(t, 1), self.cfg.token_multiple) for t in longest], np.int64)
