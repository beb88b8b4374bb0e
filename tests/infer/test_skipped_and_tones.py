"""Smaller probes of the failure paths: `evaluate --on-error skip` names what it skipped (the first
SHOWN_SKIPPED with file:line and reason, the rest counted); a text file named `.wav` is reported
by its path, not by libsndfile's in-memory buffer; a loud steady tone (a full-scale int16 square
wave) gives no transcript, while every speech clip of the demo test split keeps its segments."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import soundfile as sf
from helpers.data import SR, tone, write_corpus
from helpers.train import small_manifest

from configs.base import DEMO, model_for_preset
from funasr_jax.audio import activity
from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.data.manifest import example_audio, read_manifests
from funasr_jax.infer import evaluate
from funasr_jax.infer.evaluate import evaluate_examples, format_table
from funasr_jax.infer import recognizer
from funasr_jax.infer.recognizer import Recognizer, Transcript
from funasr_jax.models.funasr import abstract_params
from funasr_jax.text.prompt import instruction_text
from funasr_jax.text.tokenizer import load_tokenizer


class _Lengths:
    """A stand-in recognizer: each hypothesis is the waveform's length in samples."""

    def recognize(self, waves, instructions, systems=None, **kw):
        return [Transcript(str(len(w)), None, 1) for w in waves]


def test_evaluate_names_the_skipped_files(tmp_path):
    n_missing = evaluate.SHOWN_SKIPPED + 2
    path = write_corpus(str(tmp_path), [0.4 + 0.05 * i for i in range(n_missing + 2)])
    for i in range(n_missing):
        os.remove(tmp_path / "wav" / f"{i}.wav")
    rows, table, info = evaluate_examples(_Lengths(), read_manifests([path]), on_error="skip")
    assert len(rows) == 2 and info["skipped"] == n_missing
    text = format_table(table, info).splitlines()
    named = [ln for ln in text if ln.startswith(f"  {path}:")]
    assert len(named) == evaluate.SHOWN_SKIPPED and all("audio file not found" in ln for ln in named)
    lines = [int(ln.split(f"{path}:", 1)[1].split(":", 1)[0]) for ln in named]
    assert lines == list(range(1, evaluate.SHOWN_SKIPPED + 1))  # the first ones, in manifest order (1-based lines)
    assert f"  ... and {n_missing - evaluate.SHOWN_SKIPPED} more" in text
    assert text[-1].startswith(f"2 utterances scored, {n_missing} skipped")


def test_a_text_file_named_wav_is_reported_by_its_path(tmp_path):
    f = tmp_path / "notes.wav"
    f.write_text("not audio at all\n")
    with pytest.raises(AudioError) as e:
        load_audio(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: cannot decode audio") and "BytesIO" not in msg and " at 0x" not in msg


def _square(seconds, freq, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return np.where(np.sin(2 * np.pi * freq * t) >= 0, 32767, -32767).astype(np.int16)


@pytest.fixture(scope="module")
def rec():
    """A tiny recognizer; nothing here reaches the model (every probe is decided before it), so its
    weights are zeros."""
    cfg = model_for_preset("tiny")
    params = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract_params(cfg))
    return Recognizer(cfg, params, load_tokenizer(str(DEMO / "tokenizer.model")))


def test_a_full_scale_square_wave_gives_no_transcript(rec, tmp_path):
    f = tmp_path / "square.wav"
    sf.write(f, _square(2.0, 440.0), SR, subtype="PCM_16")  # the probe: a full-scale int16 square wave
    wave = load_audio(f)
    assert rec.speech_segments(wave) == []
    out = rec.recognize([wave], [instruction_text()])
    assert out == [Transcript("", None, 0)]
    gated_off = Recognizer(rec.cfg, rec.params, rec.tokenizer, max_periodicity=None)
    assert gated_off.speech_segments(wave) == [(0, len(wave))]  # the energy gate alone lets it through
    t = np.arange(3 * SR) / SR
    for other in (_square(1.5, 100.0) / 32768.0, _square(1.0, 3001.0) / 32768.0,
                  0.99 * np.sin(2 * np.pi * 1000.0 * t),  # a full-scale test tone
                  0.5 * np.sin(2 * np.pi * 50.0 * t) + 0.25 * np.sin(2 * np.pi * 150.0 * t)):  # loud hum
        assert rec.speech_segments(np.asarray(other, np.float32)) == []


def test_speech_noise_and_quiet_tones_keep_their_segments(rec, tmp_path):
    """The guard drops only loud steady tones: every speech clip of the demo test split, loud noise
    and a quieter tone (the kind the other tests use as stand-in speech) are decoded as before."""
    gate_only = Recognizer(rec.cfg, rec.params, rec.tokenizer, max_periodicity=None)
    speech = [ex for ex in read_manifests([small_manifest(tmp_path, "test", 400)]) if ex.target]
    assert len(speech) >= 200
    worst = 0.0
    for ex in speech:
        wave = example_audio(ex)
        segs = gate_only.speech_segments(wave)
        assert rec.speech_segments(wave) == segs, ex.where
        # louder than the guard's level, so only the periodicity measure keeps them
        loud = wave * (10 ** ((activity.TONE_MIN_DBFS + 1) / 20) / max(float(np.std(wave)), 1e-9))
        worst = max(worst, activity.periodicity(loud))
        assert rec.speech_segments(loud.astype(np.float32)) == gate_only.speech_segments(loud.astype(np.float32)), ex.where
    assert worst < recognizer.DEFAULT_MAX_PERIODICITY, worst
    rng = np.random.default_rng(0)
    white = np.clip(rng.standard_normal(2 * SR) * 0.5, -1, 1).astype(np.float32)
    brown = np.cumsum(rng.standard_normal(2 * SR))
    brown = (0.9 * (brown - brown.mean()) / np.abs(brown - brown.mean()).max()).astype(np.float32)
    quiet = tone(1.5, 300.0)  # 0.3 amplitude: -13.5 dBFS, under the guard's level
    for wave in (white, brown, quiet):
        assert rec.speech_segments(wave) == gate_only.speech_segments(wave) != []
