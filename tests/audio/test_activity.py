"""`audio.activity`: frame levels, the energy gate and cut points, against brute force and the demo."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from funasr_jax.audio.activity import (
    FLOOR_DB,
    frame_grid,
    frame_levels_db,
    is_silent,
    pause_scores,
    plan_segments,
    speech_segments,
)
from funasr_jax.data.manifest import read_manifests

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
SR = 16000
GATE = -50.0


def demo_files(n: int = 60) -> list[str]:
    """n speech utterances (non-empty transcript) of the demo test split, spread over it."""
    files = [ex.audio_path for ex in read_manifests([str(DEMO / "test.jsonl")]) if ex.target.strip()]
    assert len(files) >= n, f"expected >= {n} demo test utterances, found {len(files)}"
    return files[:: max(1, len(files) // n)][:n]


def read(path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    assert sr == SR and x.ndim == 1
    return x


def brute_levels(x: np.ndarray, frame: int = 400, hop: int = 160) -> np.ndarray:
    """10 log10 of each frame's variance, frame by frame, in float64."""
    if len(x) == 0:
        return np.zeros(0)
    if len(x) < frame:
        spans = [(0, len(x))]
    else:
        spans = [(i * hop, i * hop + frame) for i in range(1 + (len(x) - frame) // hop)]
    out = []
    for a, b in spans:
        v = np.var(x[a:b].astype(np.float64))
        out.append(10 * math.log10(v) if v > 1e-20 else FLOOR_DB)
    return np.array(out)


@pytest.mark.parametrize("n", [0, 100, 399, 400, 401, 559, 560, 16000, 160 * 4200 + 777])
def test_frame_levels_match_brute_force(n):
    """Per-frame levels equal np.var frame by frame, across lengths (incl. the blocked path > 4096 frames)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * rng.uniform(0.001, 0.5) + 0.1).astype(np.float32)  # with a DC offset
    if n > 20000:
        x[50000:90000] = 0.0  # digital silence mid-file
    got = frame_levels_db(x)
    want = brute_levels(x)
    assert got.shape == want.shape == (frame_grid().count(n),)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_levels_are_dbfs():
    t = np.arange(SR) / SR
    sine = np.sin(2 * np.pi * 441 * t)
    assert np.allclose(frame_levels_db(sine)[5:-5], 20 * math.log10(1 / math.sqrt(2)), atol=0.05)  # -3 dBFS
    assert np.allclose(frame_levels_db(0.01 * sine + 0.3)[5:-5], -43.0, atol=0.05)  # DC offset ignored
    assert (frame_levels_db(np.zeros(SR)) == FLOOR_DB).all()


def test_gate_rejects_silence_and_near_silence_only():
    rng = np.random.default_rng(0)
    assert is_silent(frame_levels_db(np.zeros(SR)), GATE)
    for dbfs in (-60.0, -55.0):  # white noise with frame RMS at -60 / -55 dBFS
        assert is_silent(frame_levels_db(10 ** (dbfs / 20) * rng.standard_normal(SR)), GATE)
    assert not is_silent(frame_levels_db(10 ** (-40 / 20) * rng.standard_normal(SR)), GATE)
    assert not is_silent(frame_levels_db(0.5 * rng.standard_normal(SR)), GATE)  # loud noise passes (by design)
    click = np.zeros(SR)
    click[8000:8040] = 0.5  # 2.5 ms click: covered by 3 frames, below the 50 ms minimum
    assert int((frame_levels_db(click) > GATE).sum()) == 3 and is_silent(frame_levels_db(click), GATE)
    burst = np.zeros(SR)
    burst[8000:9600] = 0.3 * rng.standard_normal(1600)  # 100 ms of sound is enough
    assert not is_silent(frame_levels_db(burst), GATE)


def test_demo_speech_passes_the_gate():
    """60 bundled demo utterances (espeak-ng, peak 0.2-0.95): each is kept whole,
    also mixed with the demo's noises at SNR 10 dB and when attenuated by 20 dB."""
    noises = [read(p) for p in sorted((DEMO / "noise").glob("*.ogg"))]
    assert noises
    rng = np.random.default_rng(1)
    for k, f in enumerate(demo_files(60)):
        x = read(f)
        n = len(x)
        assert speech_segments(x, max_samples=30 * SR, gate_dbfs=GATE) == [(0, n)], f
        noise = noises[k % len(noises)]
        start = rng.integers(0, max(1, len(noise) - n))
        nz = np.resize(noise[start:], n).astype(np.float64)
        nz *= math.sqrt(np.mean(x.astype(np.float64) ** 2) / max(np.mean(nz ** 2), 1e-20)) / 10 ** (10 / 20)
        assert speech_segments((x + nz).astype(np.float32), max_samples=30 * SR, gate_dbfs=GATE) == [(0, n)], f
        assert speech_segments(0.1 * x, max_samples=30 * SR, gate_dbfs=GATE) == [(0, n)], f


def brute_pause_scores(levels, r):
    f = len(levels)
    return np.array([max(levels[min(max(j, 0), f - 1)] for j in range(i - r, i + r + 1)) for i in range(f)])


def brute_plan(scores, centres, n, m, frac, min_tail):
    """The cut rule, one candidate sample position at a time."""
    cuts, s = [], 0
    while n - s > m:
        lo = s + math.ceil((1 - frac) * m)
        cands = [(scores[i], i) for i in range(len(centres))
                 if max(lo, s + 1) <= centres[i] <= min(s + m, n - min_tail)]
        if cands:
            best = min(c[0] for c in cands)
            tied = [i for sc, i in cands if sc == best]
            cut = int(centres[tied[len(tied) // 2]])
        else:
            cut = s + m if n - (s + m) >= min_tail else max(s + 1, n - min_tail)
        cuts.append(cut)
        s = cut
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


def test_plan_segments_matches_brute_force_on_tiny_inputs():
    rng = np.random.default_rng(7)
    grid = frame_grid()
    for trial in range(40):
        n = int(rng.integers(400, 9000))
        x = rng.standard_normal(n) * rng.choice([0.0, 1e-4, 0.3], size=n // 500 + 1).repeat(500)[:n]
        levels = np.round(frame_levels_db(x), 0)  # rounded: many ties
        r = int(rng.integers(0, 4))
        scores = pause_scores(levels, r)
        np.testing.assert_array_equal(scores, brute_pause_scores(levels, r))
        m, frac, tail = int(rng.integers(300, 3000)), float(rng.choice([0.1, 0.3, 0.5, 1.0])), int(rng.integers(0, 80))
        got = plan_segments(scores, grid.centres(n), n, m, search_frac=frac, min_tail=tail)
        assert got == brute_plan(scores, grid.centres(n), n, m, frac, tail), trial
        assert got[0][0] == 0 and got[-1][1] == n and all(a < b <= a + m for a, b in got)
        assert all(b == c for (_, b), (c, _) in itertools.pairwise(got))


def gapped(utts, gap_s, lead_s):
    """Utterances joined by `gap_s` of digital silence (and `lead_s` before / after) -> (wave, gaps
    as sample ranges, utterance spans)."""
    parts, gaps, spans, pos = [np.zeros(int(lead_s * SR), np.float32)], [(0, int(lead_s * SR))], [], int(lead_s * SR)
    for k, u in enumerate(utts):
        parts.append(u)
        spans.append((pos, pos + len(u)))
        pos += len(u)
        g = int((gap_s if k < len(utts) - 1 else lead_s) * SR)
        parts.append(np.zeros(g, np.float32))
        gaps.append((pos, pos + g))
        pos += g
    return np.concatenate(parts), gaps, spans


def test_long_file_is_cut_in_the_silences_between_utterances():
    """Demo utterances of 3-4.5 s with 1 s gaps, cut to <= 5.76 s (the demo's largest bucket):
    every cut falls inside a gap, each kept segment holds exactly one whole utterance."""
    utts = [x for x in (read(f) for f in demo_files(120)) if 3.0 * SR <= len(x) <= 4.5 * SR][:6]
    assert len(utts) == 6
    wave, gaps, spans = gapped(utts, 1.0, 0.5)
    m = int(5.76 * SR)
    assert len(wave) > 4 * m
    plan = plan_segments(pause_scores(frame_levels_db(wave)), frame_grid().centres(len(wave)), len(wave), m)
    assert all(b - a <= m for a, b in plan) and plan[0][0] == 0 and plan[-1][1] == len(wave)
    for _, cut in plan[:-1]:
        assert any(g0 <= cut < g1 for g0, g1 in gaps[1:-1]), (cut, gaps)
    segs = speech_segments(wave, max_samples=m, gate_dbfs=GATE)
    assert len(segs) == len(utts)
    for (a, b), (u0, u1) in zip(segs, spans):
        assert a <= u0 and u1 <= b


def test_silent_stretches_cost_nothing_and_unbroken_sound_is_still_cut():
    rng = np.random.default_rng(3)
    utt = read(demo_files(1)[0])
    wave = np.concatenate([utt, np.zeros(40 * SR, np.float32), utt]).astype(np.float32)
    m = 5 * SR
    segs = speech_segments(wave, max_samples=m, gate_dbfs=GATE)
    kept = [(a, b) for a, b in segs]
    assert all(b - a <= m for a, b in kept)
    assert kept[0][0] == 0 and kept[-1][1] == len(wave)
    assert sum(b - a for a, b in kept) < 2 * len(utt) + 2 * m  # the 40 s of silence are dropped
    noise = (0.3 * rng.standard_normal(63 * SR)).astype(np.float32)  # no pause anywhere
    segs = speech_segments(noise, max_samples=m, gate_dbfs=GATE)
    assert segs[0][0] == 0 and segs[-1][1] == len(noise) and all(0 < b - a <= m for a, b in segs)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(segs))
    assert len(segs) >= math.ceil(len(noise) / m)
    assert speech_segments(np.zeros(600 * SR, np.float32), max_samples=30 * SR, gate_dbfs=GATE) == []
    assert speech_segments(noise, max_samples=None, gate_dbfs=None) == [(0, len(noise))]
