"""Data pipeline settings (`DataConfig`), what the training step reads (`StepNeeds`), and the
error the pipeline raises (`DataError`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


class DataError(ValueError):
    """A data problem that stops the pipeline (on_error='raise'); names manifest file:line."""


@dataclass(frozen=True)
class StepNeeds:
    """What the training step reads from a batch and how many batches one optimizer step takes:
    the trainer's side of the pipeline, passed in as a value (the library never imports train/).

    llm_labels: fill `labels` [B, L] (the LLM loss; GRPO's prompt lengths); False leaves them None.
    ctc_labels: fill `ctc_labels` [B, Lc] + `ctc_label_lengths` [B] (the CTC and AED losses) when
      there is a CTC vocabulary; False leaves them None and plans no Lc.
    micro_batches: k >= 1 consecutive global batches of a plan share one bucket: the micro-batches
      of one optimizer step, stacked [k, B, ...] by the trainer. An epoch is a whole number of
      such groups (a bucket's last group is filled with padding rows, or dropped with
      drop_remainder).
    """

    llm_labels: bool = True
    ctc_labels: bool = True
    micro_batches: int = 1

    def validate(self) -> StepNeeds:
        for f in ("llm_labels", "ctc_labels"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"StepNeeds.{f}: must be a bool, got {getattr(self, f)!r}")
        k = self.micro_batches
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"StepNeeds.micro_batches: must be a positive integer, got {k!r}")
        return self


@dataclass(frozen=True)
class DataConfig:
    """Data pipeline settings.

    train_files / dev_files / test_files: FunASR ChatML JSONL manifests and / or shard manifests
      (`shards.json` written by `python -m funasr_jax.data.pack`, or its folder), read in order.
    bucket_frames: LFR-frame (60 ms) bucket edges, ascending; a batch's feats are [B, edge, 560].
    batch_size: global batch size (rows over all processes).
    max_target_tokens: training skips targets with more LLM tokens ("{text}<|im_end|>").
    token_multiple: L and Lc are rounded up to a multiple of this.
    token_length / ctc_length: the padded prompt length L / CTC label length Lc of a bucket.
      0 = from the data at planning time: each bucket's longest planned row (text tokens +
      audio_token_count(edge) placeholders; CTC labels) rounded up to token_multiple. N > 0 =
      every bucket's L (Lc) is N (a multiple of token_multiple), so the step's shapes follow
      from bucket_frames alone (the same compiled steps for any corpus); a longer example is a
      DataError naming its manifest line. Either way a batch's shapes are a function of its bucket.
    noise_dir: folder searched (recursively) for noise audio; None -> no noise.
    noise_prob: probability an utterance gets noise; SNR ~ N(snr_mean, snr_std) dB.
    zero_pad_prob: probability a *noised* utterance is zero-padded before the noise is added;
      before/after each ~ U(0, zero_pad_max_s) s, scaled down to fit the bucket.
    speed_factors: () for none, else one factor drawn uniformly per utterance and epoch.
    on_error: 'skip' (bad manifest lines / audio become warnings) or 'raise'.
    max_unreadable_share: with on_error='skip', training stops (`datasets.UnreadableDataError`,
      counts by reason and the first file:line references) once more than this share of an
      epoch's rows could not be read (missing, undecodable, empty audio, ...): such rows become
      weight-0 padding, so a manifest whose audio is mostly gone would otherwise "train" on
      nothing. Missing files are looked for before anything compiles (up to 1,000 rows sampled
      evenly), the rest as batches are built. 1.0 = never stop.
    require_transcripts: False lets the training manifests hold unlabelled lines (no assistant
      message; `python -m funasr_jax.audio_list`), for a stage whose loss reads no transcript
      (Best-RQ); their LLM / CTC targets are then empty.
    num_workers: grain worker processes (0 = in-process); num_threads / prefetch_buffer:
      grain threads and prefetched batches per process.
    instruction_override: None -> each example's manifest instruction; a string -> used for all.
    first_pass_prompt: put each example's manifest `first_pass` hypothesis in front of its
      instruction (`prompt.with_first_pass`); every example must have one.
    first_pass_noise: with first_pass_prompt, the mean share of the hypothesis's units (CJK
      characters, words) given simulated recognition errors (`augment.corrupt_text`) in training
      rows; each utterance and epoch draws its own share uniformly in [0, 2 * first_pass_noise]
      (capped at 1), so the LLM sees clean and noisy hypotheses and learns to correct, not copy.
      0 = the manifest hypothesis as is. A corrupted line that would not fit the planned token
      length is left clean for that row.
    text_only: the LLM sees no audio (no audio is read: each row's feats are one zero frame with
      feat_lengths 0 and no audio rows in the prompt) — text pre-training of an untrained LLM on
      the transcripts, e.g. learning to correct a noisy first-pass line before it learns to listen.
    spec_time_masks / spec_freq_masks: SpecAugment-style masks per training utterance (0 = none),
      applied to the features after CMVN; each time mask zeroes up to spec_time_mask_frames whole
      LFR rows (60 ms each), each frequency mask up to spec_freq_mask_bins of the n_mels mel bins
      (the same bins in all lfr_m stacked frames). Widths are drawn uniformly in 0..max per mask.
    max_train_utts: 0 = every training example; N > 0 = only the first N of the train manifests
      (in file order), e.g. a small seed set a curriculum memorises before the whole corpus.
    audio_cache_mb / feature_cache_mb: memory (MiB) for decoded waveforms (float32, as decoded)
      and for the final features of rows without waveform augmentation in that epoch (before
      SpecAugment masks); least recently used entries go first; 0 = off. Per process: each grain
      worker process (num_workers > 0) holds its own. Caching never changes a batch.
    hotword_prompt: hotword SFT (`data.context`): each utterance's prompt lists hotwords from its
      own `hotwords` plus 0..hotword_distractors words of `hotword_pool_file` (default: every
      training utterance's hotwords; never its own); a hotword_none_share of utterances get no
      list, a hotword_own_drop_share get distractors only. With a manifest `first_pass`, the list
      is searched with it (`text.hotwords.HotwordIndex`, hotword_top_k, hotword_threshold) and
      only the retrieved words are listed — as at inference — except that with hotword_keep_own
      the utterance's own words stay listed even when the first pass misses them (a training
      first pass is better than a test one; the LLM must see lists that fix it); with
      hotword_mask_share, that share of those utterances have their listed hotwords garbled in
      the first pass (`data.context`). Drawn once per utterance (seeded).
    context_prompt: contextual SFT: utterances form conversations of context_chain consecutive
      utterances of one subset (manifest order); a context_previous_share of them get the
      previous one's transcript (`上文：…`), those with hotwords a passage containing them, and
      all context_irrelevant passages built for other utterances. Passages come from templates
      filled with the keywords, or from context_passages_file (JSONL {"key", "passages": [...]}:
      the hook for passages written by an LLM or any other tool; its first passage is the
      relevant one).
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
    token_length: int = 0
    ctc_length: int = 0
    noise_dir: str | None = None
    noise_prob: float = 0.3
    snr_mean: float = 10.0
    snr_std: float = 5.0
    zero_pad_prob: float = 0.0
    zero_pad_max_s: float = 1.0
    speed_factors: tuple[float, ...] = ()
    on_error: str = "skip"
    max_unreadable_share: float = 0.05
    require_transcripts: bool = True
    seed: int = 0
    shuffle: bool = True
    drop_remainder: bool = False
    num_workers: int = 0
    num_threads: int = 2
    prefetch_buffer: int = 4
    instruction_override: str | None = None
    first_pass_prompt: bool = False
    first_pass_noise: float = 0.0
    text_only: bool = False
    spec_time_masks: int = 0
    spec_time_mask_frames: int = 5
    spec_freq_masks: int = 0
    spec_freq_mask_bins: int = 30
    max_train_utts: int = 0
    audio_cache_mb: int = 2048
    feature_cache_mb: int = 1024
    hotword_prompt: bool = False
    hotword_distractors: int = 20
    hotword_none_share: float = 0.15
    hotword_own_drop_share: float = 0.15
    hotword_pool_file: str | None = None
    hotword_top_k: int = 10
    hotword_threshold: float = 0.5
    hotword_keep_own: bool = True
    hotword_mask_share: float = 0.0
    context_prompt: bool = False
    context_chain: int = 4
    context_previous_share: float = 0.5
    context_irrelevant: int = 5
    context_passages_file: str | None = None

    def validate(self) -> DataConfig:
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
        for f in ("token_length", "ctc_length"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % self.token_multiple:
                bad(f, f"must be 0 (from the data) or a positive multiple of token_multiple={self.token_multiple}")
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
        if not isinstance(self.max_train_utts, int) or self.max_train_utts < 0:
            bad("max_train_utts", "must be a non-negative integer (0 = all)")
        if self.on_error not in ("skip", "raise"):
            bad("on_error", "must be 'skip' or 'raise'")
        v = self.max_unreadable_share
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            bad("max_unreadable_share", "must be a share in [0, 1] (1 = never stop)")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "must be a non-negative integer")
        if not isinstance(self.first_pass_noise, (int, float)) or not 0.0 <= self.first_pass_noise <= 0.5:
            bad("first_pass_noise", "must be a share in [0, 0.5]")
        if self.first_pass_noise and not self.first_pass_prompt:
            bad("first_pass_noise", "needs data.first_pass_prompt (there is no first-pass line to corrupt)")
        for f in ("shuffle", "drop_remainder", "first_pass_prompt", "text_only"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be a bool")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            bad("num_workers", "must be a non-negative integer")
        if self.instruction_override is not None and not isinstance(self.instruction_override, str):
            bad("instruction_override", "must be a string or None")
        self._validate_masks_and_caches(bad)
        self._validate_context(bad)
        return self

    def _validate_context(self, bad) -> None:
        for f in ("hotword_prompt", "context_prompt", "hotword_keep_own"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be a bool")
        for f in ("hotword_distractors", "context_irrelevant"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f, "must be a non-negative integer")
        for f in ("hotword_top_k", "context_chain"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f, "must be a positive integer")
        for f in ("hotword_none_share", "hotword_own_drop_share", "hotword_threshold", "context_previous_share",
                  "hotword_mask_share"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                bad(f, "must be a share in [0, 1]")
        if self.hotword_none_share + self.hotword_own_drop_share > 1.0:
            bad("hotword_own_drop_share", "plus hotword_none_share must be <= 1")
        for f in ("hotword_pool_file", "context_passages_file"):
            v = getattr(self, f)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                bad(f, "must be a path or None")

    def _validate_masks_and_caches(self, bad) -> None:
        for f in ("spec_time_masks", "spec_time_mask_frames", "spec_freq_masks", "spec_freq_mask_bins",
                  "audio_cache_mb", "feature_cache_mb"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f, "must be a non-negative integer")
        if self.spec_time_masks and self.spec_time_mask_frames < 1:
            bad("spec_time_mask_frames", "must be >= 1 LFR frame when spec_time_masks > 0")
        if self.spec_freq_masks and self.spec_freq_mask_bins < 1:
            bad("spec_freq_mask_bins", "must be >= 1 mel bin when spec_freq_masks > 0")
