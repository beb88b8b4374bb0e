"""The trainer's view of the data pipeline: next batch, and a JSON state for checkpoints."""

from __future__ import annotations

import jax

from funasr_jax.data.datasets import load_text_tools, make_train_data, read_train_examples
from funasr_jax.models.batch import Batch


class TrainData:
    """Training batches for this process (its rows of each global batch), resumable exactly."""

    def __init__(self, cfg):
        self.cfg = cfg.data
        self.tokenizer, self.ctc_vocab = load_text_tools(cfg.data)
        if cfg.stage.ctc_weight > 0 and self.ctc_vocab is None:
            raise ValueError("data.ctc_tokenizer is required when stage.ctc_weight > 0")
        if cfg.stage.llm_weight > 0 and self.tokenizer.vocab_size > cfg.model.llm.vocab_size:
            raise ValueError(f"data.tokenizer has {self.tokenizer.vocab_size} tokens but model.llm.vocab_size "
                             f"is {cfg.model.llm.vocab_size}")
        if self.ctc_vocab is not None and cfg.model.ctc.enabled and self.ctc_vocab.vocab_size != cfg.model.ctc.vocab_size:
            raise ValueError(f"data.ctc_tokenizer has {self.ctc_vocab.vocab_size} labels (blank included) but "
                             f"model.ctc.vocab_size is {cfg.model.ctc.vocab_size}")
        self.examples = read_train_examples(cfg.data)
        self.train = make_train_data(cfg.data, self.examples, self.tokenizer, self.ctc_vocab, cfg.frontend,
                                     process_index=jax.process_index(), process_count=jax.process_count())
        self.iterator = self.train.iterator()

    def next_train(self) -> Batch:
        return next(self.iterator)

    def state(self):
        return self.iterator.get_state()

    def restore(self, state) -> None:
        if state:
            self.iterator.set_state(state)
