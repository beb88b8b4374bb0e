"""Streaming-simulated training data: cut points, aligned prefixes, the manifest lines and how the
data pipeline reads them back."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.train import small_manifest

from funasr_jax.audio.io import load_audio
from funasr_jax.data.manifest import ManifestError, example_audio, read_manifests
from funasr_jax.decode.align import ctc_forced_align
from funasr_jax.infer.recognizer import Recognizer, ctc_log_probs
from funasr_jax.infer.stream_data import draw_cut, spoken_prefix, write_stream_manifests
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def test_spoken_prefix_counts_labels_finished_by_the_cut():
    spans = [(0, 2), (3, 5), (5, 9)]
    assert [spoken_prefix(spans, c) for c in (0, 1, 2, 4, 5, 8, 9, 20)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert spoken_prefix([], 3) == 0


def test_cuts_fall_on_chunk_multiples_before_the_tail():
    rng = np.random.default_rng(0)
    cuts = [draw_cut(rng, 3.0, (480.0, 720.0), 240.0) for _ in range(400)]
    assert all(c is not None and (c % 480 == 0 or c % 720 == 0) and 0 < c <= 2760 for c in cuts)
    assert {480.0, 960.0, 1440.0, 1920.0, 2400.0, 720.0, 2160.0} <= set(cuts)
    assert draw_cut(rng, 0.6, (480.0,), 240.0) is None  # 480 + 240 > 600 ms


@pytest.fixture(scope="module")
def rec():
    from configs.base import model_for_preset
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    tok = str(DEMO / "tokenizer.model")
    return Recognizer(cfg, init_params(cfg, jax.random.PRNGKey(2)), load_tokenizer(tok), CTCVocabulary(tok))


def test_manifest_lines_and_pipeline_read_back(rec, tmp_path):
    src = small_manifest(tmp_path, "train", 10, first_pass=True)
    res = write_stream_manifests(rec, [src], tmp_path / "out", fraction=1.0, chunk_ms=(480.0,), seed=3)
    assert res["utterances"] == 10 and res["cut"] + res["too_short"] + res["unaligned"] == 10 and res["cut"] >= 8
    lines = [json.loads(l) for l in Path(res["files"][0]).read_text().splitlines()]
    originals = {o["key"]: o for o in lines if "#cut" not in o["key"]}
    assert len(originals) == 10
    examples = {ex.key: ex for ex in read_manifests(res["files"])}
    for obj in lines:
        if "#cut" not in obj["key"]:
            continue
        key, cut = obj["key"].split("#cut")
        base, ex = examples[key], examples[obj["key"]]
        assert float(cut) == obj["audio_end_ms"] == ex.audio_end_ms and ex.audio_end_ms % 480 == 0
        assert ex.speech_length == int(ex.audio_end_ms // 10)
        full = load_audio(base.audio_path)
        cut_wave = example_audio(ex)
        np.testing.assert_array_equal(cut_wave, full[: int(ex.audio_end_ms * 16)])
        # the target is the labels whose Viterbi frames end by the cut, recomputed independently here
        labels = rec.ctc_vocab.encode(base.target)
        x, n = rec.pad_feats([rec.features(full)])
        logp = np.asarray(ctc_log_probs(rec.model, rec.params, x, n))[0, : int(n[0])]
        spans = ctc_forced_align(logp, labels, rec.cfg.ctc.blank).spans
        k = sum(1 for _, e in spans if e * 60 <= ex.audio_end_ms)
        assert ex.target == " ".join(rec.ctc_vocab.decode(labels[:k]).split())
        assert ex.first_pass == rec.decode_ctc([rec.features(cut_wave)])[0]  # first pass of the cut audio


def test_bad_audio_end_is_named(tmp_path):
    src = small_manifest(tmp_path, "train", 1)
    obj = json.loads(Path(src).read_text())
    obj["audio_end_ms"] = -5
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(obj, ensure_ascii=False) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:1.*audio_end_ms"):
        read_manifests([str(bad)])
