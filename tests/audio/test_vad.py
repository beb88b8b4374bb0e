"""WebRTC VAD segmentation on files built from demo speech clips with known silences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from funasr_jax.audio.io import load_audio
from funasr_jax.audio.vad import VadConfig, vad_segments, voiced_frames
from funasr_jax.data.manifest import read_manifests

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SR = 16000


@pytest.fixture(scope="module")
def clips():
    exs = [e for e in read_manifests([str(DEMO / "test.jsonl")]) if e.subset != "noise"][:6]
    return [load_audio(e.audio_path) for e in exs]


def speech_bounds(w):
    """First / last sample above 1 % of the peak: how tools/make_demo_corpus.py trimmed the speech."""
    idx = np.flatnonzero(np.abs(w) > 0.01 * np.abs(w).max())
    return idx[0], idx[-1] + 1


def silence(s):
    return np.zeros(int(s * SR), np.float32)


def test_segments_match_known_silences(clips):
    gaps = [1.0, 1.5, 0.8, 1.0]
    parts, truth, pos = [silence(gaps[0])], [], len(silence(gaps[0]))
    for w, g in zip(clips[:3], gaps[1:]):
        a, b = speech_bounds(w)
        truth.append((pos + a, pos + b))
        parts += [w, silence(g)]
        pos += len(w) + len(silence(g))
    x = np.concatenate(parts)
    cfg = VadConfig()
    segs = vad_segments(x, SR, cfg)
    assert len(segs) == 3
    tol = (cfg.pad_ms + 150) * SR / 1000  # padding + webrtcvad's frame quantisation and hangover
    for (a, b), (ta, tb) in zip(segs, truth):
        assert abs(a - ta) <= tol and abs(b - tb) <= tol
        assert a <= ta and b >= tb - 0.05 * SR  # the speech itself lies inside its segment
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(segs, segs[1:]))


def test_short_gap_bridged_click_dropped(clips):
    w = clips[0]
    a, b = speech_bounds(w)
    mid = (a + b) // 2
    x = np.concatenate([silence(0.5), w[:mid], silence(0.1), w[mid:], silence(0.5)])
    assert len(vad_segments(x, SR)) == 1
    click = np.concatenate([silence(1.0), 0.8 * np.sign(np.sin(np.arange(480) / 3)).astype(np.float32), silence(1.0)])
    assert vad_segments(click, SR, VadConfig(min_speech_ms=150)) == []
    assert vad_segments(np.zeros(0, np.float32), SR) == [] and vad_segments(silence(2.0), SR) == []


def test_long_speech_is_cut_to_max_segment(clips):
    pieces = []
    while sum(len(p) for p in pieces) < 70 * SR:
        for w in clips:
            a, b = speech_bounds(w)
            pieces += [w[a:b], silence(0.1)]
    x = np.concatenate(pieces)
    segs = vad_segments(x, SR, VadConfig(max_segment_s=30.0))
    assert len(segs) >= 3 and all(b - a <= 30 * SR for a, b in segs)
    covered = sum(b - a for a, b in segs)
    assert covered >= 0.95 * len(x)


def test_ten_minute_file(clips):
    unit = np.concatenate([np.concatenate([w, silence(1.2)]) for w in clips])
    x = np.tile(unit, int(np.ceil(600 * SR / len(unit))))[: 600 * SR]
    segs = vad_segments(x, SR)
    assert len(segs) >= 0.8 * 600 / (len(unit) / SR) * len(clips)
    assert all(0 <= a < b <= len(x) for a, b in segs) and all(b1 <= a2 for (_, b1), (a2, _) in zip(segs, segs[1:]))


def test_bad_settings_and_input_are_named():
    with pytest.raises(ValueError, match="aggressiveness"):
        VadConfig(aggressiveness=4)
    with pytest.raises(ValueError, match="frame_ms"):
        VadConfig(frame_ms=25)
    with pytest.raises(ValueError, match="pad_ms"):
        VadConfig(pad_ms=-1)
    with pytest.raises(ValueError, match="22050 Hz"):
        vad_segments(np.zeros(22050, np.float32), 22050)
    with pytest.raises(ValueError, match="1-D"):
        voiced_frames(np.zeros((2, 160), np.float32))


def test_a_quiet_noise_floor_between_utterances_is_not_speech(clips):
    rng = np.random.default_rng(0)
    floor = lambda s: (1e-3 * rng.standard_normal(int(s * SR))).astype(np.float32)  # noqa: E731  -60 dBFS
    x = np.concatenate([floor(1.0), clips[0], floor(1.5), clips[1], floor(1.0)])
    assert len(vad_segments(x, SR)) == 2
    assert len(voiced_frames(floor(3.0), SR, VadConfig(min_level_dbfs=None))) == 100  # frames, for the record
    with pytest.raises(ValueError, match="min_level_dbfs"):
        VadConfig(min_level_dbfs=5)
