"""Deterministic per-epoch batch plans: length buckets, shuffles, batches, augmentation choices.

Units: `speech_length` in manifests counts 10 ms fbank frames; bucket edges and feats count 60 ms
LFR frames (one LFR frame = FBANK_PER_LFR fbank frames); token counts are LLM tokens.

- Buckets come from the manifest `speech_length`: an example goes to the smallest LFR edge e with
  ceil((speech_length + FBANK_SLACK) / 6) <= e (2 frames of slack for rounding in the manifest).
  The bucket is fixed for all epochs, so every epoch has the same number of steps and a global
  step maps to (epoch, batch) without history.
- Augmentations that lengthen audio are limited to the room left in the example's bucket: a speed
  factor < 1 that would overflow falls back to 1.0, zero padding is scaled down to fit. Zero padding
  is applied only to utterances that get noise (the FunAudio-ASR report, "Hallucination mitigation").
- Shapes are a function of the bucket: bucket k has a fixed prompt length L_k = round_up(max over
  its planned examples of text tokens + audio_token_count(edge_k), token_multiple) and CTC label
  length Lc_k (likewise), or the fixed DataConfig.token_length / ctc_length. They come from the
  manifest statistics alone, so every process agrees on them without seeing the others' rows,
  and a run compiles one train step per bucket (`Planner.bucket_shapes`).
- Groups: with StepNeeds.micro_batches = k, each bucket's shuffled examples are cut into groups
  of k batches (k x B rows; the last group padded with -1 rows dealt round-robin over its k
  batches, or dropped with drop_remainder), the groups are shuffled, and a plan is the groups'
  batches in order: the k micro-batches of one optimizer step share a bucket, and an epoch is a
  whole number of optimizer steps. k = 1 draws exactly what plain batching draws.
- The plan of an epoch draws from SeedSequence([seed, epoch, PLAN_TAG]) only: it is a pure function
  of (seed, epoch), so any process (or a restored iterator) recomputes it exactly.

An `EpochPlan` of S global batches of B rows::

    rows [S, B] i64 example indices (-1 = padding row)    bucket [S] i64 bucket id
    tokens [S] i64 L per batch    ctc_tokens [S] i64 Lc per batch (0 without CTC labels)
    (S a multiple of micro_batches; batches s*k .. s*k+k-1 share a bucket)
    factor / pad_before / pad_after (seconds) / noise [n_examples]: per-example augmentation
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from funasr_jax.data.cache import SharedCache
from funasr_jax.data.config import DataConfig
from funasr_jax.models.config import audio_token_count

__all__ = ["FBANK_PER_LFR", "FBANK_SLACK", "BucketShape", "EpochPlan", "Overflow", "Planner", "lfr_estimate",
           "round_up"]

FBANK_PER_LFR = 6  # 10 ms fbank frames per 60 ms LFR frame
FBANK_SLACK = 2  # fbank frames of slack when bucketing from the manifest speech_length
PLAN_TAG = 0  # SeedSequence tag of plan draws (row draws use ROW_TAG in `rows`)


def round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def lfr_estimate(fbank_frames) -> np.ndarray:
    """LFR frames expected for `fbank_frames` 10 ms frames, with slack (vectorised)."""
    return -(-(np.asarray(fbank_frames, np.float64) + FBANK_SLACK).astype(np.int64) // FBANK_PER_LFR)


@dataclass(frozen=True)
class BucketShape:
    """The padded shape of every batch of bucket `bucket`: feats [B, frames, 560] (LFR frames of
    60 ms; 1 for text_only), input_ids / labels [B, tokens], ctc_labels [B, ctc_tokens] (0 = no
    CTC labels)."""

    bucket: int
    frames: int
    tokens: int
    ctc_tokens: int


@dataclass(frozen=True)
class Overflow:
    """A planned example longer than its bucket's fixed length: which length, by how much, and
    the DataConfig option that sets the limit."""

    example: int
    what: str  # "prompt tokens" | "CTC labels"
    length: int
    limit: int
    option: str


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
    per example (`rows.count_tokens`; ctc_tokens None when the batches carry no CTC labels);
    micro_batches: batches per group (one optimizer step's micro-batches share a bucket).
    """

    def __init__(self, cfg: DataConfig, kept: np.ndarray, fbank_frames: np.ndarray, edges: Sequence[int],
                 text_tokens: np.ndarray, ctc_tokens: np.ndarray | None, has_noise: bool, micro_batches: int = 1):
        self.cfg = cfg
        self.fbank_frames = np.asarray(fbank_frames, np.float64)  # [n], indexed by example
        self.n = len(self.fbank_frames)
        self.kept = np.asarray(kept, np.int64)
        self.edges = np.asarray(edges, np.int64)
        self.text_tokens = text_tokens
        self.ctc_tokens = ctc_tokens
        self.has_noise = has_noise
        self.micro_batches = int(micro_batches)
        lfr = lfr_estimate(self.fbank_frames[self.kept])
        self.bucket_of = np.full(self.n, -1, np.int64)
        # text_only: no audio is read, so every example shares the first bucket
        self.bucket_of[self.kept] = 0 if cfg.text_only else np.searchsorted(self.edges, lfr, side="left")
        counts = np.bincount(self.bucket_of[self.kept], minlength=len(self.edges))
        rows_per_group = cfg.batch_size * self.micro_batches
        groups = counts // rows_per_group if cfg.drop_remainder else -(-counts // rows_per_group)
        self.groups_per_bucket = groups
        self.steps_per_epoch = int(groups.sum()) * self.micro_batches
        self.n_audio = np.asarray([0 if cfg.text_only else audio_token_count(int(e)) for e in self.edges], np.int64)
        self.bucket_tokens, self.bucket_ctc_tokens = self._bucket_lengths()
        self._plans = SharedCache(max_items=2)

    def _bucket_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(L [K], Lc [K]): per bucket, the fixed DataConfig length or the longest planned row
        rounded up to token_multiple (at least one multiple); Lc = 0 without CTC labels."""
        cfg, k = self.cfg, len(self.edges)
        b = self.bucket_of[self.kept]
        need = np.zeros(k, np.int64)
        np.maximum.at(need, b, self.text_tokens[self.kept] + self.n_audio[b])
        tokens = np.full(k, cfg.token_length) if cfg.token_length else self._lengths(need)
        if self.ctc_tokens is None:
            return tokens, np.zeros(k, np.int64)
        need_ctc = np.zeros(k, np.int64)
        np.maximum.at(need_ctc, b, self.ctc_tokens[self.kept])
        ctc = np.full(k, cfg.ctc_length) if cfg.ctc_length else self._lengths(need_ctc)
        return tokens.astype(np.int64), ctc.astype(np.int64)

    def overflows(self) -> list[Overflow]:
        """Planned examples longer than their bucket's fixed L / Lc (only possible with
        DataConfig.token_length / ctc_length set), in example order."""
        b = self.bucket_of[self.kept]
        out = []
        tok = self.text_tokens[self.kept] + self.n_audio[b]
        for i, n, lim in zip(self.kept, tok, self.bucket_tokens[b]):
            if n > lim:
                out.append(Overflow(int(i), "prompt tokens", int(n), int(lim), "data.token_length"))
        if self.ctc_tokens is not None:
            for i, n, lim in zip(self.kept, self.ctc_tokens[self.kept], self.bucket_ctc_tokens[b]):
                if n > lim:
                    out.append(Overflow(int(i), "CTC labels", int(n), int(lim), "data.ctc_length"))
        return sorted(out, key=lambda o: o.example)

    def bucket_shapes(self) -> list[BucketShape]:
        """The shape of every bucket that has batches (the same in every epoch), by bucket id."""
        frames = np.ones_like(self.edges) if self.cfg.text_only else self.edges
        return [BucketShape(k, int(frames[k]), int(self.bucket_tokens[k]), int(self.bucket_ctc_tokens[k]))
                for k in range(len(self.edges)) if self.groups_per_bucket[k] > 0]

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
        cfg, b, k = self.cfg, self.cfg.batch_size, self.micro_batches
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, epoch, PLAN_TAG]))
        factor, pb, pa, noise = self._augmentation(rng)
        groups, group_bucket = [], []  # groups [G] of [k, B] example indices
        for e in range(len(self.edges)):
            idx = self.kept[self.bucket_of[self.kept] == e]
            if cfg.shuffle:
                idx = rng.permutation(idx)
            n_full = len(idx) // (k * b)
            groups.extend(idx[:n_full * k * b].reshape(n_full, k, b))
            group_bucket.extend([e] * n_full)
            rest = idx[n_full * k * b:]
            if len(rest) and not cfg.drop_remainder:
                # padding dealt round-robin: each of the k batches gets real rows while there are any
                filled = np.concatenate([rest, np.full(k * b - len(rest), -1, np.int64)])
                groups.append(filled.reshape(b, k).T)
                group_bucket.append(e)
        order = rng.permutation(len(groups)) if cfg.shuffle and groups else np.arange(len(groups))
        rows = np.asarray(groups, np.int64).reshape(-1, k, b)[order].reshape(-1, b)
        bucket = np.repeat(np.asarray(group_bucket, np.int64)[order], k)
        return EpochPlan(rows=rows, bucket=bucket, tokens=self.bucket_tokens[bucket],
                         ctc_tokens=self.bucket_ctc_tokens[bucket], factor=factor, pad_before=pb, pad_after=pa,
                         noise=noise)

    def _lengths(self, longest: np.ndarray) -> np.ndarray:
        """Padded length per entry: the longest row rounded up to token_multiple (at least one)."""
        return np.asarray([round_up(max(t, 1), self.cfg.token_multiple) for t in longest], np.int64)
