"""Silence gives "" without running the model; long files are cut at pauses, decoded in batches
with other files' segments and joined in order; the segment length follows a training run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

from configs.base import model_for_preset
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer import recognizer as recognizer_mod
from funasr_jax.infer.recognizer import DEFAULT_MAX_SEGMENT_S, Recognizer, Transcript
from funasr_jax.io.checkpoint import (
    CheckpointError,
    load_model,
    write_meta,
    write_params_pointer,
)
from funasr_jax.models.funasr import init_params
from funasr_jax.text.join import join_texts
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SR = 16000
DEMO_SEGMENT_S = 96 * 0.06  # the demo's largest bucket, 96 LFR frames


def tiny_parts():
    """(cfg, params, tokenizer, ctc vocabulary): the tiny preset, random, sized for the demo tokenizer."""
    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    cfg = model_for_preset("tiny")
    cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, vocab_size=tok.vocab_size),
                      ctc=dataclasses.replace(cfg.ctc, vocab_size=tok.vocab_size + 1))
    return cfg, init_params(cfg, jax.random.PRNGKey(2)), tok, CTCVocabulary(str(DEMO / "tokenizer.model"))


@pytest.fixture(scope="module")
def parts():
    return tiny_parts()


def make_rec(parts, **kw) -> Recognizer:
    cfg, params, tok, ctc = parts
    return Recognizer(cfg, params, tok, ctc, **kw)


class Calls:
    """Counts (and records the argument sizes of) calls into a recognizer's model-facing methods."""

    def __init__(self, rec, monkeypatch):
        self.features, self.llm, self.ctc, self.generated = [], [], [], []
        real_features, real_llm, real_ctc = rec.features, rec.decode_llm_with_first_pass, rec.decode_ctc

        def features(wave):
            self.features.append(len(wave))
            return real_features(wave)

        def llm(utts, max_new_tokens):
            self.llm.append([len(u.feats) for u in utts])
            return real_llm(utts, max_new_tokens)

        def ctc(feats):
            self.ctc.append([len(f) for f in feats])
            return real_ctc(feats)

        real_generate = recognizer_mod.greedy_generate

        def generate(*args, **kw):
            tokens, n = real_generate(*args, **kw)
            self.generated.append(np.asarray(n).tolist())
            return tokens, n

        monkeypatch.setattr(rec, "features", features)
        monkeypatch.setattr(rec, "decode_llm_with_first_pass", llm)
        monkeypatch.setattr(rec, "decode_ctc", ctc)
        monkeypatch.setattr(recognizer_mod, "greedy_generate", generate)

    @property
    def model_calls(self) -> int:
        return len(self.features) + len(self.llm) + len(self.ctc)


def near_silence(seconds: float, dbfs: float = -60.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (10 ** (dbfs / 20) * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def test_silence_and_near_silence_give_empty_text_without_the_model(parts, monkeypatch):
    rec = make_rec(parts)
    calls = Calls(rec, monkeypatch)
    waves = [np.zeros(SR, np.float32), near_silence(1.0), np.zeros(600 * SR, np.float32), near_silence(600.0, -55)]
    t0 = time.time()
    for mode in ("llm", "ctc"):
        assert rec.transcribe(waves, mode=mode) == ["", "", "", ""]
        res = rec.recognize(waves, ["x"] * 4, mode=mode)
        assert all(r == Transcript("", None, 0) for r in res)
    assert calls.model_calls == 0
    assert time.time() - t0 < 60  # 2 x 2 x 20 minutes of audio: one numpy pass each, no model
    # The gate is what skips them: without it the model runs (and may say anything).
    ungated = make_rec(parts, gate_dbfs=None)
    calls = Calls(ungated, monkeypatch)
    assert len(ungated.transcribe(waves[:2], max_new_tokens=4)) == 2
    assert calls.llm == [[17, 17]]


def test_ten_minutes_of_loud_noise_are_cut_and_the_output_is_bounded(parts, monkeypatch):
    """Loud white noise passes the energy gate; the file is cut into <= 5.76 s segments (no
    feature matrix longer than 96 LFR frames) and each row's output is capped by its length."""
    rec = make_rec(parts, max_segment_s=DEMO_SEGMENT_S)
    calls = Calls(rec, monkeypatch)
    noise = (0.3 * np.random.default_rng(1).standard_normal(600 * SR)).astype(np.float32)
    t0 = time.time()
    (res,) = rec.recognize([noise], ["语音转写："], batch_size=16, max_new_tokens=128)
    elapsed = time.time() - t0
    rows = [n for batch in calls.llm for n in batch]
    assert res.segments == len(rows) >= math.ceil(600 / DEMO_SEGMENT_S)
    assert max(rows) <= 96 and max(calls.features) <= int(DEMO_SEGMENT_S * SR)
    assert sum(calls.features) == len(noise)  # every sample decoded once, in segments
    generated = [n for batch in calls.generated for n in batch]
    assert len(generated) == len(rows)
    for t, n in zip(rows, generated):  # by hand: ceil(15 tokens/s x 60 ms x T) + 8
        assert n <= math.ceil(15 * 6 * t / 100) + 8
    # in all: 15 tokens/s over the file, + per segment the slack (8), the ceil (1) and the LFR
    # rounding of its length (< 0.1 s)
    assert sum(generated) <= 15 * 600 + len(rows) * (8 + 1 + 15 * 0.1)
    assert isinstance(res.text, str)
    assert elapsed < 400


def demo_speech(n: int, lo_s: float, hi_s: float) -> list[np.ndarray]:
    """n demo test utterances (non-empty transcripts) lasting lo_s..hi_s seconds."""
    out = []
    for ex in read_manifests([str(DEMO / "test.jsonl")]):
        if ex.target.strip():
            x, sr = sf.read(ex.audio_path, dtype="float32")
            if sr == SR and lo_s * SR <= len(x) <= hi_s * SR:
                out.append(x)
        if len(out) == n:
            return out
    raise AssertionError(f"only {len(out)} demo utterances of {lo_s}-{hi_s} s")


def concat_with_gaps(utts, gap_s: float, lead_s: float = 0.5):
    """-> (wave, utterance spans [(start, end)] in samples, gaps [(start, end)])."""
    parts, spans, gaps, pos = [], [], [], 0
    for k, u in enumerate(utts):
        g = int((lead_s if k == 0 else gap_s) * SR)
        parts.append(np.zeros(g, np.float32))
        gaps.append((pos, pos + g))
        pos += g
        parts.append(u)
        spans.append((pos, pos + len(u)))
        pos += len(u)
    parts.append(np.zeros(int(lead_s * SR), np.float32))
    gaps.append((pos, pos + int(lead_s * SR)))
    return np.concatenate(parts), spans, gaps


def _offset(view: np.ndarray, base: np.ndarray) -> int:
    """Start sample of `view` inside `base` (the recognizer slices without copying)."""
    assert np.shares_memory(view, base)
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize


def test_long_file_is_cut_in_pauses_decoded_with_other_files_and_joined_in_order(parts, monkeypatch):
    utts = demo_speech(6, 3.0, 4.5)
    long_wave, spans, gaps = concat_with_gaps(utts[:5], gap_s=1.0)
    # 20 s of digital silence in the middle: cut, gated, never decoded.
    long_wave = np.concatenate([long_wave, np.zeros(20 * SR, np.float32), utts[5]])
    spans.append((len(long_wave) - len(utts[5]), len(long_wave)))
    short_wave = utts[0].copy()
    assert len(long_wave) > 6 * DEMO_SEGMENT_S * SR
    rec = make_rec(parts, max_segment_s=DEMO_SEGMENT_S)
    labels = ["你好", "世界", "hello", "world", "再见", "朋友"]
    seen, batches = [], []

    def features(wave):  # which utterance does this segment hold? -> a marker "feature"
        base = long_wave if np.shares_memory(wave, long_wave) else short_wave
        a = _offset(wave, base) if base is long_wave else 0
        b = a + len(wave)
        held = [k for k, (u0, u1) in enumerate(spans) if a <= u0 and u1 <= b] if base is long_wave else [-1]
        assert len(held) == 1, (a, b, spans)  # each segment holds exactly one whole utterance
        if base is long_wave:
            assert len(wave) <= DEMO_SEGMENT_S * SR
            seen.append((a, b))
        return np.full((1, 1), held[0], np.float32)

    def decode(utts_, max_new_tokens):
        batches.append([int(u.feats[0, 0]) for u in utts_])
        return [("短" if k < 0 else labels[k]) for k in batches[-1]], None

    monkeypatch.setattr(rec, "features", features)
    monkeypatch.setattr(rec, "decode_llm_with_first_pass", decode)
    res = rec.recognize([long_wave, short_wave], ["x", "y"], batch_size=8)
    assert res[0] == Transcript("你好世界 hello world 再见朋友", None, 6)  # joined in file order
    assert res[1] == Transcript("短", None, 1)
    assert len(batches) == 1 and sorted(batches[0]) == [-1, 0, 1, 2, 3, 4, 5]  # both files in one batch
    # every cut of the kept segments lies in a silence (a gap, or the 20 s stretch)
    silences = [*gaps, (spans[4][1], spans[5][0])]
    seen.sort()
    assert len(seen) == 6 and all(b0 <= a1 for (_, b0), (a1, _) in itertools.pairwise(seen))
    for x in [a for a, _ in seen[1:]] + [b for _, b in seen[:-1]]:
        assert any(g0 <= x <= g1 for g0, g1 in silences), (x, silences)
    # real features and model on the same file: six segments, CTC and LLM
    rec = make_rec(parts, max_segment_s=DEMO_SEGMENT_S)
    calls = Calls(rec, monkeypatch)
    out = rec.recognize([long_wave], ["x"], mode="ctc")
    assert out[0].segments == 6 and len(calls.features) == 6 and max(calls.features) <= DEMO_SEGMENT_S * SR
    out = rec.recognize([long_wave], ["x"], max_new_tokens=3)
    assert out[0].segments == 6 and isinstance(out[0].text, str)


def test_a_file_without_pauses_is_still_cut(parts, monkeypatch):
    rec = make_rec(parts, max_segment_s=2.0)
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(7.3 * SR)) / SR)).astype(np.float32)
    segs = rec.speech_segments(tone)
    assert segs[0][0] == 0 and segs[-1][1] == len(tone) and all(0 < b - a <= 2 * SR for a, b in segs)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(segs)) and len(segs) >= 4
    calls = Calls(rec, monkeypatch)
    (res,) = rec.recognize([tone], ["x"], mode="ctc")
    assert res.segments == len(segs) and calls.features == [b - a for a, b in sorted(segs, key=lambda s: s[1] - s[0])]


def test_join_rule():
    assert join_texts(["今天", "天气好"]) == "今天天气好"
    assert join_texts(["hello", "world"]) == "hello world"
    assert join_texts(["用 Python", "写代码", "", "  ", "and 中文"]) == "用 Python 写代码 and 中文"
    assert join_texts(["你好。", "再见"]) == "你好。再见"
    assert join_texts([]) == join_texts(["", " "]) == ""


def _tiny_run(folder: Path, parts, bucket_frames) -> Path:
    """A training-run-shaped directory: funasr_jax.json + train_config.json + checkpoints/<step>/params
    named by latest_params.json (as train.loop writes it)."""
    cfg, params, _, _ = parts
    folder.mkdir(parents=True)
    write_meta(folder, cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
               ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    ck = ocp.StandardCheckpointer()
    ck.save((folder / "checkpoints" / "7" / "params").absolute(), jax.tree_util.tree_map(np.asarray, params))
    ck.wait_until_finished()
    write_params_pointer(folder, "checkpoints/7/params", 7)
    if bucket_frames is not None:
        (folder / "train_config.json").write_text(json.dumps({"data": {"bucket_frames": bucket_frames}}))
    return folder


def test_max_segment_length_follows_the_training_run(parts, tmp_path):
    run = _tiny_run(tmp_path / "run", parts, [48, 64, 96])
    assert Recognizer.from_checkpoint(run).max_segment_s == pytest.approx(96 * 0.06)
    m = load_model(run)
    assert Path(m.source).parent.name == "7"  # the params sit below the run folder
    assert Recognizer.from_loaded(m).max_segment_s == pytest.approx(96 * 0.06)
    assert Recognizer.from_checkpoint(run, max_segment_s=12.0).max_segment_s == 12.0
    assert Recognizer.from_checkpoint(run, max_segment_s=None).max_segment_s is None
    plain = _tiny_run(tmp_path / "plain", parts, None)
    assert Recognizer.from_checkpoint(plain).max_segment_s == DEFAULT_MAX_SEGMENT_S == 30.0
    (run / "train_config.json").write_text('{"data": {}}')
    with pytest.raises(CheckpointError, match="train_config.json"):
        Recognizer.from_checkpoint(run)
