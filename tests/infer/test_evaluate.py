"""`infer.evaluate.evaluate_examples`, the one evaluation path: every example scored exactly once."""

from __future__ import annotations

import os

import numpy as np
from helpers.data import write_corpus

from funasr_jax.audio.io import load_audio
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples

DURS = [0.3, 2.5, 0.7, 0.9, 5.0, 1.3, 0.4, 12.0, 0.8]  # unsorted; 5 s and 12 s exceed any training bucket


class _FrameCounter:
    """A stand-in recognizer whose hypothesis is the row's frame count, so rows are traceable."""

    def __init__(self):
        self.batches = []

    def features(self, wave):
        return np.zeros((len(wave) // 960, 560), np.float32)

    def decode_ctc(self, feats):
        self.batches.append([len(f) for f in feats])
        return [str(len(f)) for f in feats]

    def decode_llm_with_first_pass(self, utts, max_new_tokens):
        return self.decode_ctc([u.feats for u in utts]), None


def test_every_example_scored_exactly_once_in_manifest_order(tmp_path):
    path = write_corpus(str(tmp_path), DURS)
    os.remove(tmp_path / "wav" / "3.wav")
    exs = read_manifests([path])
    for mode in ("llm", "ctc"):
        rec = _FrameCounter()
        rows, table, info = evaluate_examples(rec, exs, mode=mode, batch_size=3, on_error="skip")
        kept = [ex for i, ex in enumerate(exs) if i != 3]
        assert [r["key"] for r in rows] == [ex.key for ex in kept]  # each once, manifest order
        assert [r["hyp"] for r in rows] == [str(len(load_audio(ex.audio_path)) // 960) for ex in kept]
        assert info["utterances"] == len(kept) and info["skipped"] == 1 and f"{path}:4" in info["skipped_where"][0]
        assert sum(len(b) for b in rec.batches) == len(kept) and max(len(b) for b in rec.batches) <= 3
        lengths = [n for b in rec.batches for n in b]
        assert lengths == sorted(lengths)  # batched by length, so padding stays small
        assert table["overall"]["utterances"] == len(kept)
