"""Training batches on grain, with static shapes and exact resumption.

Flow (ARCHITECTURE.md, "A training step"): manifest examples -> per-epoch plan (`planning.Planner`: pure function
of (seed, epoch): length buckets, shuffles, batches, augmentation choices) -> grain
`MapDataset.range(steps).map(rows.BatchLoader)` (load + augment + fbank/LFR + tokenize + pad) ->
grain iterator. Dev / test evaluation decodes with `infer.recognizer` (`infer.evaluate`).

- Training skips (with a warning) utterances longer than the largest bucket and targets longer
  than `max_target_tokens`; with a fixed data.token_length / ctc_length, a longer example is a
  DataError (manifest file:line, its length, the limit, the option).
- Nothing to learn from is an error, never a silent run: manifests without a usable line raise
  `EmptyManifestError`; rows whose audio cannot be read (weight-0 padding rows, `rows.BatchLoader`)
  are counted per epoch by `UnreadableGuard`, which raises `UnreadableDataError` (counts by reason,
  the first file:line references) once they pass `data.max_unreadable_share` of the epoch's rows;
  `check_audio_present` looks for missing files before anything compiles.
- What the step reads and its micro-batches per optimizer step come in as `StepNeeds` (default:
  every target, one batch per step): fields it does not read are None, and with k micro-batches
  every k consecutive batches share a bucket (`planning`).
- Sharding: process p of P gets rows [p*B/P, (p+1)*B/P) of every global batch.
- Nothing depends on the order batches are produced in, so an iterator restored with
  `set_state` continues exactly.

Each element is a `funasr_jax.models.batch.Batch` of numpy arrays, B = batch_size // process_count
rows, T = the bucket's edge in LFR frames (60 ms), L / Lc the bucket's token / CTC label lengths
(`TrainData.bucket_shapes`: one shape per bucket)::

    feats [B, T, 560] f32        feat_lengths [B] i32 (LFR frames)
    input_ids [B, L] i32 (pad_id)  labels [B, L] i32 (-100; with StepNeeds.llm_labels)  token_lengths [B] i32
    audio_start [B] i32          audio_tokens [B] i32 (N = audio_token_count(feat_length))
    ctc_labels [B, Lc] i32 (0-padded) + ctc_label_lengths [B] i32   (with a CTC vocabulary and
                                                                     StepNeeds.ctc_labels)
    example_index [B] i32 (-1 on padding rows)  weight [B] f32 (0 on padding rows)
    audio_seconds [B] f32 (duration of the waveform after augmentation)

Padding rows have all lengths 0 (feat_lengths, token_lengths, audio_tokens, ctc_label_lengths).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np
from absl import flags

from funasr_jax.data.config import DataConfig, DataError, StepNeeds
from funasr_jax.data.manifest import (EmptyManifestError, Example, ManifestStats, audio_error_reason, audio_present,
                                      empty_manifest_message, read_manifests)
from funasr_jax.data.planning import BucketShape, EpochPlan, Planner, lfr_estimate
from funasr_jax.data.context import PromptContexts
from funasr_jax.data.rows import BatchLoader, count_tokens
from funasr_jax.models.batch import Batch
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

__all__ = ["NOISE_EXTENSIONS", "EmptyManifestError", "TrainData", "UnreadableDataError", "UnreadableGuard",
           "check_audio_present", "load_text_tools", "make_train_data", "make_train_iterator", "read_train_examples"]

log = logging.getLogger(__name__)

NOISE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def load_text_tools(cfg: DataConfig):
    """(LLM tokenizer, CTC vocabulary or None) from cfg.tokenizer / cfg.ctc_tokenizer."""
    tok = load_tokenizer(cfg.tokenizer)
    return tok, (CTCVocabulary(cfg.ctc_tokenizer) if cfg.ctc_tokenizer else None)


class UnreadableDataError(DataError):
    """More than data.max_unreadable_share of an epoch's training rows could not be read."""


def read_train_examples(cfg: DataConfig) -> list[Example]:
    """The examples of cfg.train_files (bad lines per cfg.on_error); the first cfg.max_train_utts if > 0.
    Raises EmptyManifestError when there is none."""
    if not cfg.train_files:
        raise EmptyManifestError("data.train_files: no training manifests given")
    stats = ManifestStats()
    examples = read_manifests(cfg.train_files, on_error=cfg.on_error, labelled=cfg.require_transcripts, stats=stats)
    if not examples:
        raise EmptyManifestError(empty_manifest_message(cfg.train_files, stats, "data.train_files"))
    return examples[: cfg.max_train_utts] if cfg.max_train_utts else examples


SHOWN_UNREADABLE = 5  # file:line references an UnreadableDataError lists
PROBED_UNREADABLE = 1000  # rows whose reason an UnreadableDataError establishes (the rest are counted)


def unreadable_reason(ex: Example, err: Exception | None) -> str:
    """A short reason class for a row that could not be read (`err`: what loading it raised)."""
    if not audio_present(ex):
        return "audio file not found"
    if err is None:
        return "failed when loaded, readable when checked again"
    return audio_error_reason(str(err), type(err).__name__)


def unreadable_message(rows: Sequence[tuple[Example, str]], total: int, limit: float, what: str,
                       count: int | None = None) -> str:
    """The UnreadableDataError text: `count` (default: len(rows)) unreadable of `total`, counts by
    reason (of `rows`), the first references, the way out."""
    by_reason: dict[str, int] = {}
    for _, r in rows:
        by_reason[r] = by_reason.get(r, 0) + 1
    counts = ", ".join(f"{r}: {n}" for r, n in sorted(by_reason.items(), key=lambda kv: -kv[1]))
    first = "; ".join(f"{ex.where} ({ex.audio_path}: {r})" for ex, r in rows[:SHOWN_UNREADABLE])
    count = len(rows) if count is None else count
    more = f"; reasons of the first {len(rows)}" if count > len(rows) else ""
    return (f"{count} of {total} {what} could not be read, above data.max_unreadable_share={limit:g} "
            f"({counts}{more}); first: {first}. Fix or drop those manifest lines, or raise data.max_unreadable_share "
            "(1 = never stop)")


def check_audio_present(cfg: DataConfig, examples: Sequence[Example], kept: Sequence[int] | None = None,
                        sample: int = PROBED_UNREADABLE) -> None:
    """Before anything compiles: look for the audio files of up to `sample` of the `kept`
    examples (evenly spaced; all of them when fewer) and raise UnreadableDataError when the share
    missing exceeds cfg.max_unreadable_share. A stat per file, nothing decoded; nothing to do for
    text_only data or on_error='raise' (the first missing file raises as its batch is built)."""
    if cfg.text_only or cfg.on_error == "raise" or cfg.max_unreadable_share >= 1.0:
        return
    idx = np.arange(len(examples)) if kept is None else np.asarray(kept, np.int64)
    if len(idx) > sample:
        idx = idx[np.linspace(0, len(idx) - 1, sample).round().astype(np.int64)]
    missing = [examples[int(i)] for i in idx if not audio_present(examples[int(i)])]
    if missing and len(missing) > cfg.max_unreadable_share * len(idx):
        what = "training rows" if len(idx) == (len(examples) if kept is None else len(kept)) else \
            f"training rows checked (sampled evenly from {len(examples) if kept is None else len(kept)})"
        raise UnreadableDataError(unreadable_message([(ex, "audio file not found") for ex in missing], len(idx),
                                                     cfg.max_unreadable_share, what))


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


def _warn_skipped(reason: str, bad: list[Example]) -> None:
    for ex in bad[:20]:
        log.warning("skipping %s (key %r): %s", ex.where, ex.key, reason)
    if len(bad) > 20:
        log.warning("... and %d more utterances skipped: %s", len(bad) - 20, reason)


def _check_sharding(cfg: DataConfig, process_index: int, process_count: int) -> None:
    if not (isinstance(process_count, int) and process_count >= 1):
        raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
    if not (isinstance(process_index, int) and 0 <= process_index < process_count):
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if cfg.batch_size % process_count:
        raise ValueError(f"DataConfig.batch_size {cfg.batch_size} is not divisible by process_count {process_count}")


def _iterate(ds, cfg: DataConfig):
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                                 prefetch_buffer_size=cfg.prefetch_buffer))
    if cfg.num_workers > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS(sys.argv[:1])
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch_buffer))
    return iter(it_ds)


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
    loader: BatchLoader

    def plan(self, epoch: int) -> EpochPlan:
        return self.loader.planner.plan(epoch)

    def bucket_shapes(self) -> list[BucketShape]:
        """Every shape a batch of this dataset can have, one per bucket with batches."""
        return self.loader.planner.bucket_shapes()

    def templates(self) -> list[tuple[BucketShape, Batch]]:
        """(shape, padding-only batch of that shape: this process's rows) per bucket with batches."""
        return [(sh, self.loader.template(sh)) for sh in self.bucket_shapes()]

    def iterator(self):
        """A grain DatasetIterator (get_state()/set_state(), JSON-serialisable state)."""
        return _iterate(self.dataset, self.loader.cfg)


def make_train_data(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab=None,
                    frontend_cfg=None, process_index: int = 0, process_count: int = 1,
                    num_epochs: int | None = None, needs: StepNeeds | None = None) -> TrainData:
    """Builds the training grain dataset (see module docstring for batch contents).

    needs: what the step reads and its micro-batches per optimizer step (default: everything, 1).
    """
    cfg.validate()
    needs = (needs if needs is not None else StepNeeds()).validate()
    _check_sharding(cfg, process_index, process_count)
    examples = list(examples)
    if not examples:
        raise EmptyManifestError("make_train_data: no training examples")
    contexts = PromptContexts(cfg, examples)  # drawn once: the planner and the loader see the same prompts
    ctc_vocab = ctc_vocab if needs.ctc_labels else None  # no CTC labels, no Lc, where no loss reads them
    text, target, ctc = count_tokens(cfg, examples, tokenizer, ctc_vocab, contexts)
    frames = np.asarray([ex.speech_length for ex in examples], np.int64)
    too_long = (lfr_estimate(frames) > cfg.bucket_frames[-1]) & (not cfg.text_only)
    too_many = target > cfg.max_target_tokens
    _warn_skipped(f"longer than the largest bucket ({cfg.bucket_frames[-1]} LFR frames)",
                  [examples[i] for i in np.flatnonzero(too_long)])
    _warn_skipped(f"target longer than max_target_tokens={cfg.max_target_tokens}",
                  [examples[i] for i in np.flatnonzero(too_many & ~too_long)])
    kept = np.flatnonzero(~too_long & ~too_many)
    if not len(kept):
        raise EmptyManifestError(f"make_train_data: every one of the {len(examples)} training examples was skipped "
                                 "(too long for the largest bucket or max_target_tokens; see warnings)")
    noise_files = _noise_files(cfg.noise_dir)
    planner = Planner(cfg, kept, frames, cfg.bucket_frames, text, ctc, has_noise=bool(noise_files),
                      micro_batches=needs.micro_batches)
    _check_fixed_lengths(planner, examples)
    if planner.steps_per_epoch == 0:
        raise ValueError(f"make_train_data: {len(kept)} examples give no full group of {needs.micro_batches} "
                         f"batch(es) of {cfg.batch_size} (drop_remainder=True)")
    loader = BatchLoader(cfg, examples, planner, tokenizer, ctc_vocab, frontend_cfg, noise_files,
                         process_index, process_count, contexts, needs)
    total = sys.maxsize if num_epochs is None else num_epochs * planner.steps_per_epoch
    ds = grain.MapDataset.range(total).map(loader)
    return TrainData(dataset=ds, steps_per_epoch=planner.steps_per_epoch, kept=kept,
                     examples=examples, loader=loader)


def _check_fixed_lengths(planner: Planner, examples: Sequence[Example]) -> None:
    """DataError naming the first example longer than its bucket's fixed L / Lc (and how many)."""
    over = planner.overflows()
    if over:
        o, ex = over[0], examples[over[0].example]
        more = f" ({len(over) - 1} more examples too long)" if len(over) > 1 else ""
        raise DataError(f"{ex.where} (key {ex.key!r}): {o.length} {o.what} exceed {o.option}={o.limit}{more}; "
                        f"raise {o.option} (a multiple of data.token_multiple) or set it to 0 to plan each bucket's "
                        "length from the data")


def make_train_iterator(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab=None,
                        frontend_cfg=None, process_index: int = 0, process_count: int = 1,
                        num_epochs: int | None = None, needs: StepNeeds | None = None):
    """grain DatasetIterator over training batches (this process's rows of each global batch).

    `it.get_state()` is a small JSON-serialisable dict; `it.set_state(state)` on a fresh
    iterator built from the same config and examples continues with exactly the batches an
    uninterrupted run would produce.
    """
    return make_train_data(cfg, examples, tokenizer, ctc_vocab, frontend_cfg, process_index,
                           process_count, num_epochs, needs).iterator()


class UnreadableGuard:
    """Counts, per epoch, the planned rows of this process that came back as padding because their
    audio could not be read (`rows.BatchLoader` with on_error='skip': weight 0, example_index -1),
    and raises `UnreadableDataError` as soon as they exceed `data.max_unreadable_share` of the
    epoch's rows of this process — at that point the epoch's share is certain to, so a manifest
    whose audio is all unreadable stops at its first batch. Reasons are established once, when it
    raises (each failed row loaded again, up to PROBED_UNREADABLE). Rows seen before this object
    was built (a resumed run) are not counted."""

    def __init__(self, data: TrainData):
        self.data = data
        self.limit = float(data.loader.cfg.max_unreadable_share)
        self.epoch: int | None = None
        self.failed: list[int] = []

    def observe(self, step: int, batch: Batch) -> None:
        """Check the batch the iterator produced for global step `step` (its position in the iterator)."""
        loader = self.data.loader
        if self.limit >= 1.0 or loader.cfg.text_only or batch.example_index is None:
            return
        epoch, s = divmod(int(step), loader.steps_per_epoch)
        plan = loader.planner.plan(epoch)
        mine = slice(loader.row0, loader.row0 + loader.local_b)
        if epoch != self.epoch:
            self.epoch, self.failed = epoch, []
        got = np.asarray(batch.example_index)
        self.failed += [int(i) for i, g in zip(plan.rows[s, mine], got) if i >= 0 and g < 0]
        if not self.failed:
            return
        total = int((plan.rows[:, mine] >= 0).sum())
        if len(self.failed) > self.limit * total:
            probed = [(loader.examples[i], unreadable_reason(loader.examples[i], loader.row_failure(i, epoch)))
                      for i in self.failed[:PROBED_UNREADABLE]]
            raise UnreadableDataError(unreadable_message(probed, total, self.limit, f"training rows of epoch {epoch}",
                                                         count=len(self.failed)))
