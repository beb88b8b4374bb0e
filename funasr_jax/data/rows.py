"""Padded prompt / feature / label rows: the one `Batch` builder, and the training row loader.

`pad_batch` serves every path that hands the model a batch: training (`BatchLoader`, right
padding to the planned bucket edge and token length), the scripting API (`infer.api.make_batch`,
right padding to the longest row) and the recognizer (left-padded prompts for generation, no
targets). Shapes and units (B rows, T LFR frames of 60 ms, L LLM tokens, Lc CTC labels)::

    feats [B, T, 560] f32 (0 past feat_lengths)      feat_lengths [B] i32 (LFR frames)
    input_ids [B, L] i32 (pad_id outside the row)    token_lengths [B] i32
    audio_start [B] i32 (first placeholder, in the padded row)   audio_tokens [B] i32 (N)
    labels [B, L] i32 (IGNORE_INDEX outside targets) weight [B] f32 (1 real row, 0 padding row)
    ctc_labels [B, Lc] i32 (0-padded) + ctc_label_lengths [B] i32   (when CTC labels are given)
    (labels only where the step reads them, `StepNeeds.llm_labels`; CTC labels likewise)
    example_index [B] i32 / audio_seconds [B] f32                    (when given)

Side 'right': row b's tokens fill [0, token_lengths[b]); 'left': [L - token_lengths[b], L)
(what `decode.generate` expects). A padding row (None) has every length 0.

`BatchLoader` is the grain map function of training: global step -> the planned batch's rows of
this process, padded to its bucket's shape (`planning.BucketShape`: T, L, Lc fixed per bucket;
`BatchLoader.template` is the same batch with padding rows only, for compiling ahead of time),
each loaded (`audio.io`), augmented per the plan (speed, zero padding, noise), turned
into features (fbank + LFR 7/6 + CMVN), optionally masked (SpecAugment-style, `augment.
draw_spec_masks`) and given a ChatML prompt (`text.prompt.build_prompt`).

- Decoded audio longer than its bucket by <= TRUNCATE_TOLERANCE LFR frames is truncated
  (manifest rounding); by more, the row becomes a weight-0 row with a warning.
- A row whose audio cannot be loaded (AudioError / FrontendError) is, with on_error='skip', a
  weight-0 padding row plus a warning naming the manifest file:line; with 'raise' a `DataError`.
- Per-row draws (noise file, crop offset, SNR) come from SeedSequence([seed, epoch,
  example_index, ROW_TAG]), SpecAugment masks from (seed, epoch, example_index, SPEC_TAG):
  nothing depends on the order batches are produced in.
- Per-process caches (`cache.SharedCache`, bounded by DataConfig.audio_cache_mb /
  feature_cache_mb): decoded waveforms (float32, exactly as `load_audio` returns them) by example
  index, and the features [T, 560] + sample count of rows without waveform augmentation in their
  epoch (speed factor 1.0, no noise), which are a pure function of the file. Masks are applied
  after the cache. Cached values are read-only and identical to what would be recomputed, so a
  batch does not depend on what the cache holds (tests/data/test_cache.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from funasr_jax.audio.frontend import (
    FrontendConfig,
    FrontendError,
    extract_features,
    load_cmvn,
)
from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.data.context import PromptContext, PromptContexts
from funasr_jax.data.augment import (
    TextUnits,
    apply_spec_masks,
    corrupt_text,
    draw_spec_masks,
    mix_noise,
    speed_perturb,
    zero_pad,
)
from funasr_jax.data.cache import MIB, SharedCache, frozen
from funasr_jax.data.config import DataConfig, DataError, StepNeeds
from funasr_jax.data.manifest import Example, example_audio
from funasr_jax.data.planning import BucketShape, EpochPlan, Planner
from funasr_jax.models.batch import IGNORE_INDEX, Batch
from funasr_jax.models.config import audio_token_count
from funasr_jax.text.prompt import (
    PromptIds,
    build_prompt,
    prompt_pieces,
    with_context,
    with_first_pass,
)

__all__ = ["BatchLoader", "count_tokens", "example_instruction", "pad_batch", "pad_feats"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
TRUNCATE_TOLERANCE = 2  # LFR frames an utterance may exceed its bucket by and be truncated
ROW_TAG = 1  # SeedSequence tag of per-row draws (plan draws use planning.PLAN_TAG)
SPEC_TAG = 2  # seed-key tag of SpecAugment mask draws
TEXT_TAG = 3  # SeedSequence tag of first-pass corruption draws


# --------------------------------------------------------------------------- padding


def pad_feats(feats: Sequence[np.ndarray | None], length: int | None = None, dim: int | None = None):
    """Per-row features [T_b, D] (None = padding row) -> (feats [B, T, D] f32 zero-padded, lengths [B] i32).

    T = `length` (default: the longest row); D = `dim` (default: the first real row's).
    """
    real = [f for f in feats if f is not None]
    if dim is None and not real:
        raise ValueError("pad_feats: no real row to take the feature dimension from; pass dim")
    t = max((len(f) for f in real), default=0) if length is None else length
    d = real[0].shape[1] if dim is None else dim
    x = np.zeros((len(feats), t, d), np.float32)
    lengths = np.zeros((len(feats),), np.int32)
    for i, f in enumerate(feats):
        if f is None:
            continue
        if len(f) > t:
            raise ValueError(f"pad_feats: row {i} has {len(f)} frames, more than the padded length {t}")
        x[i, :len(f)] = f
        lengths[i] = len(f)
    return x, lengths


def pad_batch(feats: Sequence[np.ndarray | None], prompts: Sequence[PromptIds | None], *, pad_id: int,
              feat_length: int | None = None, token_length: int | None = None, feat_dim: int | None = None,
              side: str = "right", targets: bool = True, llm_labels: bool = True,
              ctc_labels: Sequence[Sequence[int] | None] | None = None, ctc_length: int | None = None,
              example_index: Sequence[int] | None = None, audio_seconds: Sequence[float] | None = None) -> Batch:
    """One padded `Batch` (numpy) from per-row features [T_b, D] and prompts; None = padding row.

    feat_length / token_length / ctc_length: padded T / L / Lc (default: the longest row).
    side: 'right' (training, teacher forcing) or 'left' (generation: prompts end at column L).
    targets: fill `labels` and `weight` (False for decoding: both None); llm_labels=False leaves
    `labels` None but keeps `weight` (a step without an LLM loss).
    ctc_labels: per-row CTC label ids (None: no CTC fields). example_index / audio_seconds:
    per-row host bookkeeping, copied as given.
    """
    if side not in ("right", "left"):
        raise ValueError(f"pad_batch: side must be 'right' or 'left', got {side!r}")
    if len(feats) != len(prompts):
        raise ValueError(f"pad_batch: {len(feats)} feature rows but {len(prompts)} prompts")
    x, feat_lengths = pad_feats(feats, feat_length, feat_dim)
    b = len(prompts)
    token_lengths = np.array([0 if p is None else len(p.input_ids) for p in prompts], np.int32)
    length = int(token_lengths.max(initial=0)) if token_length is None else token_length
    if (token_lengths > length).any():
        raise ValueError(f"pad_batch: a prompt of {token_lengths.max()} tokens exceeds the padded length {length}")
    ids = np.full((b, length), pad_id, np.int32)
    labels = np.full((b, length), IGNORE_INDEX, np.int32)
    audio_start = np.zeros((b,), np.int32)
    audio_tokens = np.zeros((b,), np.int32)
    for r, p in enumerate(prompts):
        if p is None:
            continue
        s = length - len(p.input_ids) if side == "left" else 0
        ids[r, s:s + len(p.input_ids)] = p.input_ids
        labels[r, s:s + len(p.labels)] = p.labels
        audio_start[r] = s + p.audio_start
        audio_tokens[r] = p.n_audio
    out = {"feats": x, "feat_lengths": feat_lengths, "input_ids": ids, "token_lengths": token_lengths,
           "audio_start": audio_start, "audio_tokens": audio_tokens}
    if targets:
        if llm_labels:
            out["labels"] = labels
        out["weight"] = np.array([0.0 if p is None else 1.0 for p in prompts], np.float32)
    if ctc_labels is not None:
        lc = [0 if c is None else len(c) for c in ctc_labels]
        out["ctc_labels"] = np.zeros((b, max(lc, default=0) if ctc_length is None else ctc_length), np.int32)
        for r, c in enumerate(ctc_labels):
            if c:
                out["ctc_labels"][r, :len(c)] = c
        out["ctc_label_lengths"] = np.array(lc, np.int32)
    if example_index is not None:
        out["example_index"] = np.asarray(example_index, np.int32)
    if audio_seconds is not None:
        out["audio_seconds"] = np.asarray(audio_seconds, np.float32)
    return Batch(**out)


# --------------------------------------------------------------------------- prompt text


def example_instruction(cfg: DataConfig, ex: Example, first_pass: str | None = None,
                        context: PromptContext | None = None) -> str:
    """The user instruction of `ex`'s prompt under `cfg` (override; hotwords / previous segment /
    passages of `context` (`data.context`); first-pass line: `first_pass` if given, else the
    manifest's)."""
    base = cfg.instruction_override if cfg.instruction_override is not None else ex.instruction
    if context is not None:
        base = with_context(base, hotwords=context.hotwords, previous=context.previous, passages=context.passages)
    if not cfg.first_pass_prompt:
        return base
    if ex.first_pass is None:
        raise DataError(f"{ex.where} (key {ex.key!r}): no 'first_pass' field, but data.first_pass_prompt is set; "
                        "write it with `python -m funasr_jax.first_pass --checkpoint CKPT --data FILE`")
    if first_pass is None:
        first_pass = context.first_pass if context is not None and context.first_pass is not None else ex.first_pass
    return with_first_pass(base, first_pass)


def count_tokens(cfg: DataConfig, examples: Sequence[Example], tokenizer, ctc_vocab,
                 contexts: PromptContexts | None = None):
    """(text tokens [n], target tokens [n], CTC labels [n] or None) per example, as `BatchLoader`
    builds them: text = prompt pieces + "{target}<|im_end|>" (audio placeholders excluded).
    contexts: the examples' `PromptContexts` (built from cfg when None)."""
    contexts = PromptContexts(cfg, examples) if contexts is None else contexts
    piece_cache: dict[tuple[str, str], int] = {}
    text, target, ctc = [], [], []
    for i, ex in enumerate(examples):
        key = (ex.system, example_instruction(cfg, ex, context=contexts.of(i) if contexts.active else None))
        if key not in piece_cache:
            before, after = prompt_pieces(*key)
            piece_cache[key] = len(tokenizer.encode(before)) + len(tokenizer.encode(after))
        n_tgt = len(tokenizer.encode(f"{ex.target or ''}<|im_end|>"))
        target.append(n_tgt)
        text.append(piece_cache[key] + n_tgt)
        if ctc_vocab is not None:
            ctc.append(len(ctc_vocab.encode(ex.target or "")))
    ctc_arr = np.asarray(ctc, np.int64) if ctc_vocab is not None else None
    return np.asarray(text, np.int64), np.asarray(target, np.int64), ctc_arr


# --------------------------------------------------------------------------- training rows


class BatchLoader:
    """grain map function: global step -> this process's slice of the planned global batch."""

    def __init__(self, cfg: DataConfig, examples: Sequence[Example], planner: Planner, tokenizer,
                 ctc_vocab, frontend_cfg: FrontendConfig | None, noise_files: Sequence[str], process_index: int,
                 process_count: int, contexts: PromptContexts | None = None, needs: StepNeeds | None = None):
        self.cfg = cfg
        self.needs = needs if needs is not None else StepNeeds()
        self.examples = list(examples)
        self.contexts = PromptContexts(cfg, self.examples) if contexts is None else contexts
        self.planner = planner
        self.tokenizer = tokenizer
        self.ctc_vocab = ctc_vocab if self.needs.ctc_labels else None  # no CTC labels where no loss reads them
        self.frontend_cfg = frontend_cfg if frontend_cfg is not None else FrontendConfig()
        self.cmvn = load_cmvn(self.frontend_cfg.cmvn_file) if self.frontend_cfg.cmvn_file else None
        self.noise_files = list(noise_files)
        self.local_b = cfg.batch_size // process_count
        self.row0 = process_index * self.local_b
        self._noise_cache = SharedCache(max_items=64)
        self._wave_cache = SharedCache(max_bytes=cfg.audio_cache_mb * MIB)
        self._feature_cache = SharedCache(max_bytes=cfg.feature_cache_mb * MIB)
        self._units = TextUnits.of(ex.target or "" for ex in self.examples) if cfg.first_pass_noise else None
        if cfg.spec_freq_masks and cfg.spec_freq_mask_bins > self.frontend_cfg.n_mels:
            raise ValueError(f"DataConfig.spec_freq_mask_bins: at most the {self.frontend_cfg.n_mels} mel bins "
                             f"of the front end, got {cfg.spec_freq_mask_bins}")

    @property
    def steps_per_epoch(self) -> int:
        return self.planner.steps_per_epoch

    def _noise(self, path: str) -> np.ndarray | None:
        wav = self._noise_cache.get(path)
        if wav is None:
            try:
                wav = load_audio(path, SAMPLE_RATE)
            except AudioError as e:
                log.warning("noise file unusable, utterance left clean: %s", e)
                return None
            self._noise_cache.put(path, wav)
        return wav

    def _decoded(self, i: int) -> np.ndarray:
        """Example i's waveform [S] f32 at 16 kHz as decoded (cached, read-only)."""
        wave = self._wave_cache.get(i)
        if wave is None:
            wave = frozen(example_audio(self.examples[i], SAMPLE_RATE))
            self._wave_cache.put(i, wave)
        return wave

    def _wave(self, i: int, epoch: int, plan: EpochPlan) -> np.ndarray:
        """Example i's waveform [S'] f32 after the plan's speed / zero padding / noise for `epoch`."""
        wave = self._decoded(i)
        if plan.factor[i] != 1.0:
            wave = speed_perturb(wave, float(plan.factor[i]), SAMPLE_RATE)
        if plan.noise[i] and self.noise_files:
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, epoch, i, ROW_TAG]))
            path = self.noise_files[int(rng.integers(len(self.noise_files)))]
            snr = float(rng.normal(self.cfg.snr_mean, self.cfg.snr_std))
            noise = self._noise(path)
            if noise is not None:
                ps = float(np.mean(np.square(wave, dtype=np.float64)))
                wave = zero_pad(wave, float(plan.pad_before[i]), float(plan.pad_after[i]), SAMPLE_RATE)
                wave = mix_noise(wave, noise, snr, rng, speech_power=ps)
        return wave

    def _clean(self, i: int, plan: EpochPlan) -> bool:
        """Whether example i gets no waveform augmentation in this plan's epoch."""
        return plan.factor[i] == 1.0 and not (plan.noise[i] and self.noise_files)

    def _row_features(self, i: int, epoch: int, plan: EpochPlan, edge: int) -> tuple[np.ndarray, int]:
        """(features [T, 560] f32 before masking, read-only if cached; waveform samples after
        augmentation) of example i in `epoch`; clean rows come from / go to the feature cache."""
        clean = self._clean(i, plan)
        if clean:
            hit = self._feature_cache.get(i)
            if hit is not None:
                return hit
        wave = self._wave(i, epoch, plan)
        out = (self._features(self.examples[i], wave, edge), int(wave.shape[0]))
        if clean:
            self._feature_cache.put(i, (frozen(out[0]), out[1]))
        return out

    def _masked(self, feats: np.ndarray, i: int, epoch: int) -> np.ndarray:
        """feats [T, 560] with this row's SpecAugment masks for `epoch` (a copy; feats if none)."""
        cfg = self.cfg
        if not (cfg.spec_time_masks or cfg.spec_freq_masks):
            return feats
        n_mels = self.frontend_cfg.n_mels
        masks = draw_spec_masks((cfg.seed, epoch, i, SPEC_TAG), feats.shape[0], n_mels,
                                time_masks=cfg.spec_time_masks, time_width=cfg.spec_time_mask_frames,
                                freq_masks=cfg.spec_freq_masks, freq_width=cfg.spec_freq_mask_bins)
        return apply_spec_masks(feats, masks, n_mels)

    def _features(self, ex: Example, wave: np.ndarray, edge: int) -> np.ndarray:
        feats = extract_features(wave, self.frontend_cfg, self.cmvn)
        if feats.shape[0] == 0:
            raise AudioError(f"{ex.audio_path}: no feature frames")
        if feats.shape[0] > edge + TRUNCATE_TOLERANCE:
            raise AudioError(f"{ex.audio_path}: {feats.shape[0]} LFR frames but the manifest "
                             f"speech_length {ex.speech_length} put it in the {edge}-frame bucket")
        return feats[:edge]

    def _prompt(self, ex: Example, i: int, epoch: int, n_audio: int, max_tokens: int) -> PromptIds:
        """Example i's training prompt in `epoch`; the first-pass line corrupted per
        cfg.first_pass_noise (left clean if the corrupted prompt would exceed max_tokens)."""
        context = self.contexts.of(i) if self.contexts.active else None

        def build(first_pass=None):
            return build_prompt(self.tokenizer, system=ex.system, n_audio=n_audio, target=ex.target or "",
                                instruction=example_instruction(self.cfg, ex, first_pass, context))

        if self._units is not None and ex.first_pass:
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, epoch, i, TEXT_TAG]))
            rate = min(1.0, float(rng.uniform(0.0, 2.0 * self.cfg.first_pass_noise)))
            base = context.first_pass if context is not None and context.first_pass is not None else ex.first_pass
            p = build(corrupt_text(base, rate, rng, self._units))
            if len(p.input_ids) <= max_tokens:
                return p
        return build()

    def row_failure(self, i: int, epoch: int) -> Exception | None:
        """Why example i's row of `epoch` could not be built: the AudioError / FrontendError that
        building it raises (the same work `__call__` does for it), None when it builds now."""
        plan = self.planner.plan(epoch)
        try:
            self._row_features(i, epoch, plan, int(self.planner.edges[self.planner.bucket_of[i]]))
        except (AudioError, FrontendError) as e:
            return e
        return None

    def _row_failed(self, ex: Example, err: Exception) -> None:
        msg = f"{ex.where} (key {ex.key!r}, audio {ex.audio_path}): {err}"
        if self.cfg.on_error == "raise":
            raise DataError(msg) from err
        log.warning("unusable utterance replaced by a weight-0 padding row: %s", msg)

    def _pad(self, feats, prompts, ctc, index, seconds, edge: int, lt: int, lc: int) -> Batch:
        return pad_batch(feats, prompts, pad_id=self.tokenizer.pad_id, feat_length=1 if self.cfg.text_only else edge,
                         token_length=lt, feat_dim=self.frontend_cfg.feature_dim, llm_labels=self.needs.llm_labels,
                         ctc_labels=ctc if self.ctc_vocab is not None else None, ctc_length=lc,
                         example_index=index, audio_seconds=seconds)

    def template(self, shape: BucketShape) -> Batch:
        """A batch of `shape`'s bucket with padding rows only (zeros, weight 0): exactly the
        fields, shapes and dtypes of that bucket's batches (this process's rows)."""
        b = self.local_b
        return self._pad([None] * b, [None] * b, [None] * b, [-1] * b, [0.0] * b,
                         int(self.planner.edges[shape.bucket]), shape.tokens, shape.ctc_tokens)

    def __call__(self, step: int) -> Batch:
        epoch, s = divmod(int(step), self.planner.steps_per_epoch)
        plan = self.planner.plan(epoch)
        edge, lt = int(self.planner.edges[plan.bucket[s]]), int(plan.tokens[s])
        b = self.local_b
        feats: list = [None] * b
        prompts: list = [None] * b
        ctc: list = [None] * b
        index, seconds = [-1] * b, [0.0] * b
        for r, i in enumerate(plan.rows[s, self.row0:self.row0 + b].tolist()):
            if i < 0:
                continue
            ex = self.examples[i]
            if self.cfg.text_only:
                f, n_samples = np.zeros((0, self.frontend_cfg.feature_dim), np.float32), 0
            else:
                try:
                    f, n_samples = self._row_features(i, epoch, plan, edge)
                except (AudioError, FrontendError) as e:
                    self._row_failed(ex, e)
                    continue
                f = self._masked(f, i, epoch)
            p = self._prompt(ex, i, epoch, int(audio_token_count(f.shape[0])) if f.shape[0] else 0, lt)
            if len(p.input_ids) > lt:  # the plan's token count is an upper bound by construction
                raise DataError(f"{ex.where}: a prompt of {len(p.input_ids)} tokens exceeds its bucket's planned "
                                f"L={lt} (data.token_length={self.cfg.token_length}; 0 plans L from the data)")
            feats[r], prompts[r], index[r], seconds[r] = f, p, i, n_samples / SAMPLE_RATE
            if self.ctc_vocab is not None:
                ctc[r] = list(self.ctc_vocab.encode(ex.target or ""))
        return self._pad(feats, prompts, ctc, index, seconds, edge, lt, int(plan.ctc_tokens[s]))
