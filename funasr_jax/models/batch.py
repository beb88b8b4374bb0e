"""The typed batch every path hands the model: data pipeline, API, recognizer, benchmarks, steps.

`Batch` is a `flax.struct.dataclass` (a pytree: jit, shard and donate it like a dict). Fields,
B rows (utterances), T LFR frames of 60 ms, L LLM tokens, Lc CTC labels::

    feats          [B, T, 560] f32   stacked fbank (LFR 7/6, CMVN), zero past feat_lengths
    feat_lengths   [B] i32           valid frames per row (0 on padding rows)
    input_ids      [B, L] i32        prompt + target ids; audio placeholders are AUDIO_PLACEHOLDER_ID
    token_lengths  [B] i32           valid tokens per row (right padding)
    audio_start    [B] i32           index of the first audio placeholder
    audio_tokens   [B] i32           N placeholders = audio_token_count(feat_lengths) (the release's fake-token splice)
  targets (None where a path has none, e.g. decoding):
    labels         [B, L] i32        HF-style: IGNORE_INDEX where not scored
    weight         [B] f32           row weight; 0 = padding row
    ctc_labels     [B, Lc] i32       CTC-vocabulary ids, 0-padded past ctc_label_lengths
    ctc_label_lengths [B] i32
  host-only bookkeeping (dropped by `on_device_fields` before a step):
    example_index  [B] i32           manifest example index, -1 on padding rows
    audio_seconds  [B] f32           waveform duration after augmentation

Fields left None are empty subtrees, so a jitted function sees a fixed structure per path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct

IGNORE_INDEX = -100  # label of a position the LLM loss does not score (HF convention)
AUDIO_PLACEHOLDER_ID = 0  # input id written where the adaptor's audio rows are spliced in

Array = Any


@flax.struct.dataclass
class Batch:
    feats: Array
    feat_lengths: Array
    input_ids: Array
    token_lengths: Array
    audio_start: Array
    audio_tokens: Array
    labels: Array | None = None
    weight: Array | None = None
    ctc_labels: Array | None = None
    ctc_label_lengths: Array | None = None
    example_index: Array | None = None
    audio_seconds: Array | None = None

    def on_device_fields(self) -> "Batch":
        """The batch without the host-only fields (what a jitted step receives)."""
        return self.replace(example_index=None, audio_seconds=None)

    def arrays(self) -> dict[str, Array]:
        """{field: array} for the fields that are set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def map(self, fn) -> "Batch":
        """`fn` applied to every set array (e.g. `np.asarray`, `jnp.asarray`)."""
        return self.replace(**{k: fn(v) for k, v in self.arrays().items()})
