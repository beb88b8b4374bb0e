"""`infer.evaluate.evaluate_examples`, the one evaluation path: every example scored exactly once;
noise-only examples (reference "") reported apart from the error rates."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from helpers.data import write_corpus

from funasr_jax.audio.io import load_audio
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples, format_table
from funasr_jax.infer.recognizer import Transcript
from funasr_jax.text import metrics

DURS = [0.3, 2.5, 0.7, 0.9, 5.0, 1.3, 0.4, 12.0, 0.8]  # unsorted; 5 s and 12 s exceed any training bucket


class _FrameCounter:
    """A stand-in recognizer whose hypothesis is the waveform's length in 60 ms frames (or what
    `hyps` maps that length to), so rows are traceable."""

    def __init__(self, hyps=None):
        self.batches, self.modes, self.hyps = [], [], hyps or {}

    def recognize(self, waves, instructions, systems=None, *, mode="llm", batch_size=8, max_new_tokens=128,
                  hotwords=None, contexts=None):
        assert len(instructions) == len(waves) == len(systems)
        assert hotwords is None and contexts is None
        self.batches.append([len(w) // 960 for w in waves])
        self.modes.append(mode)
        n = [len(w) // 960 for w in waves]
        return [Transcript(self.hyps.get(k, str(k)), None, 1) for k in n]


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
        assert set(rec.modes) == {mode}
        lengths = [n for b in rec.batches for n in b]
        assert lengths == sorted(lengths)  # batched by length, so padding stays small
        assert table["overall"]["utterances"] == len(kept)
        assert info["noise_only"] == {"utterances": 0, "nonempty": 0}


def test_noise_only_examples_are_counted_apart_from_error_rates(tmp_path):
    """Examples with reference "" (subset "noise") are left out of every error rate; info counts
    them and how many got a non-empty hypothesis; per-subset rows cover the scored subsets."""
    durs = [0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7]
    exs = read_manifests([write_corpus(str(tmp_path), durs)])
    subsets = ["free", "noise", "template", "noise", "free", "noise", "template"]
    exs = [dataclasses.replace(ex, subset=s, target="" if s == "noise" else ex.target)
           for ex, s in zip(exs, subsets)]
    frames = [len(load_audio(ex.audio_path)) // 960 for ex in exs]
    # noise clip 1 -> "", clip 3 -> "uh huh", clip 5 -> "  " (empty after stripping); speech keeps its count
    rec = _FrameCounter({frames[1]: "", frames[3]: "uh huh", frames[5]: "  "})
    rows, table, info = evaluate_examples(rec, exs, batch_size=4)
    assert len(rows) == len(exs) and [r["subset"] for r in rows] == subsets  # noise rows are still written
    assert info["noise_only"] == {"utterances": 3, "nonempty": 1}
    speech = [(ex, r) for ex, r in zip(exs, rows) if ex.subset != "noise"]
    want = metrics.ErrorCounts()
    for ex, r in speech:
        want.add(metrics.score_pair(ex.target, r["hyp"]))
    assert table["overall"]["utterances"] == len(speech) == 4
    assert (table["overall"]["errors"], table["overall"]["ref_tokens"]) == (want.errors, want.ref_tokens)
    assert "subset/noise" not in table
    for sub in ("free", "template"):
        part = [metrics.score_pair(ex.target, r["hyp"]) for ex, r in speech if ex.subset == sub]
        assert table[f"subset/{sub}"]["utterances"] == len(part) == 2
        assert table[f"subset/{sub}"]["errors"] == sum(c.errors for c in part)
    text = format_table(table, info)
    assert "subset/free" in text and "subset/template" in text
    noise_line = [ln for ln in text.splitlines() if ln.startswith("noise-only")]
    assert len(noise_line) == 1 and "3 utterances" in noise_line[0] and "1 with a non-empty" in noise_line[0]


def test_all_noise_gives_no_error_rate(tmp_path):
    exs = [dataclasses.replace(ex, subset="noise", target="") for ex in
           read_manifests([write_corpus(str(tmp_path), [0.5, 0.8])])]
    rows, table, info = evaluate_examples(_FrameCounter(), exs)
    assert table == {} and info["noise_only"] == {"utterances": 2, "nonempty": 2}
    assert all(np.char.isnumeric(r["hyp"]) for r in rows)
    assert "noise-only" in format_table(table, info)
