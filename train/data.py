"""The trainer's view of the data pipeline: next batch, and a JSON state for checkpoints."""

from __future__ import annotations

import jax

from funasr_jax.configtools import ConfigError
from funasr_jax.data.config import StepNeeds
from funasr_jax.data.datasets import (
    UnreadableGuard,
    check_audio_present,
    load_text_tools,
    make_train_data,
    read_train_examples,
)
from funasr_jax.models.batch import Batch


def step_needs(cfg) -> StepNeeds:
    """What the stage's step reads from a batch, and its micro-batches per optimizer step.

    LLM labels: the LLM loss, and GRPO (prompt lengths from the labels); CTC labels: the CTC and
    AED losses of an SFT stage. A Best-RQ-only stage reads neither.
    """
    sft = cfg.stage.kind == "sft"
    return StepNeeds(llm_labels=cfg.stage.llm_weight > 0 or not sft,
                     ctc_labels=sft and (cfg.stage.ctc_weight > 0 or cfg.stage.aed_weight > 0),
                     micro_batches=cfg.optim.accum_steps)


class TrainData:
    """Training batches for this process (its rows of each global batch), resumable exactly.

    Nothing to learn from stops the run with a named `DataError`: manifests without a usable line
    (`EmptyManifestError`), more missing audio files than `data.max_unreadable_share` allows
    (looked for here, before anything compiles) and, as batches come, more unreadable rows per
    epoch than it allows (`UnreadableGuard`; both `UnreadableDataError`)."""

    def __init__(self, cfg):
        self.cfg = cfg.data
        self.tokenizer, self.ctc_vocab = load_text_tools(cfg.data)
        check_vocabularies(cfg, self.tokenizer, self.ctc_vocab)
        self.examples = read_train_examples(cfg.data)
        self.needs = step_needs(cfg)
        self.train = make_train_data(cfg.data, self.examples, self.tokenizer, self.ctc_vocab, cfg.frontend,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     needs=self.needs)
        check_audio_present(cfg.data, self.examples, self.train.kept)
        self.iterator = self.train.iterator()
        self.guard = UnreadableGuard(self.train)
        self.position: int | None = 0  # the iterator's next global step (None: unknown after a resume)

    def next_train(self) -> Batch:
        batch = next(self.iterator)
        if self.position is not None:
            self.guard.observe(self.position, batch)
            self.position += 1
        return batch

    def templates(self):
        """[(BucketShape, padding-only Batch of this process's rows)] per bucket with batches."""
        return self.train.templates()

    def state(self):
        return self.iterator.get_state()

    def restore(self, state) -> None:
        if state:
            self.iterator.set_state(state)
            # grain's in-process iterator state is {"next_index": n}; with worker processes the
            # position is not read back, and the unreadable-row check is off for this run
            pos = state.get("next_index") if isinstance(state, dict) else None
            self.position = int(pos) if isinstance(pos, int) else None


def check_vocabularies(cfg, tokenizer, ctc_vocab) -> None:
    """ConfigError (one line, both sizes, the flag that fixes it) when a vocabulary the stage uses
    does not fit the model; a mismatch of a part the stage does not use is no error.

    The LLM tokenizer may be smaller than the embedding (Qwen3: 151,669 entries, 151,936 rows);
    the CTC vocabulary (blank included) must equal the CTC head's output size.
    """
    if cfg.stage.llm_weight > 0 and tokenizer.vocab_size > cfg.model.llm.vocab_size:
        raise ConfigError(f"data.tokenizer has {tokenizer.vocab_size} tokens but model.llm.vocab_size is "
                          f"{cfg.model.llm.vocab_size}: give the model's tokenizer (--set data.tokenizer=...) "
                          f"or size the embedding (--set model.llm.vocab_size={tokenizer.vocab_size})")
    if not step_needs(cfg).ctc_labels:
        return
    if ctc_vocab is None:
        raise ConfigError("data.ctc_tokenizer is required when stage.ctc_weight > 0 or stage.aed_weight > 0")
    if ctc_vocab.vocab_size != cfg.model.ctc.vocab_size:
        fix = (f"its CTC head comes from run.init_from {cfg.run.init_from}: give that head's CTC tokenizer with "
               "--set data.ctc_tokenizer=PATH" if cfg.run.init_from else
               f"--set model.ctc.vocab_size={ctc_vocab.vocab_size} sizes a fresh CTC head for it, or "
               "--set data.ctc_tokenizer=PATH gives the head's own tokenizer")
        raise ConfigError(f"data.ctc_tokenizer has {ctc_vocab.vocab_size} labels (blank included) but "
                          f"model.ctc.vocab_size is {cfg.model.ctc.vocab_size}; {fix}")
