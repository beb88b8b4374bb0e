"""Augmentation: measured SNR, noise cropping/tiling, zero-pad lengths, speed perturbation pitch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import SR, tone

from funasr_jax.data.augment import mix_noise, speed_perturb, zero_pad


def _snr_db(speech, mixed, speech_power=None):
    ps = np.mean(speech.astype(np.float64) ** 2) if speech_power is None else speech_power
    pn = np.mean((mixed.astype(np.float64) - speech) ** 2)
    return 10 * np.log10(ps / pn)


@pytest.mark.parametrize("noise_len", [3000, 40000], ids=["tiled", "cropped"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 23.7])
def test_mix_noise_snr(noise_len, snr):
    speech = tone(1.0, 220.0, seed=1)
    noise = (np.random.default_rng(7).standard_normal(noise_len) * 0.05).astype(np.float32)
    mixed = mix_noise(speech, noise, snr, np.random.default_rng(3))
    assert mixed.shape == speech.shape and mixed.dtype == np.float32
    assert abs(_snr_db(speech, mixed) - snr) < 0.1
    # the added signal is gain * noise read circularly from a single offset
    added = mixed.astype(np.float64) - speech
    # brute force over offsets o: added[k] * noise[o] == added[0] * noise[o + k] for k < 16
    nz = noise.astype(np.float64)
    resid = sum(np.abs(added[k] * nz - added[0] * np.roll(nz, -k)) for k in range(1, 16))
    hits = np.flatnonzero(resid < 1e-3 * np.abs(added[0]) * np.abs(nz).mean())
    assert len(hits) == 1
    o = int(hits[0])
    gain = added[0] / noise[o]
    np.testing.assert_allclose(added, gain * noise[(o + np.arange(len(speech))) % noise_len], atol=2e-6)


def test_mix_noise_rng_and_speech_power():
    speech = tone(0.5, seed=2)
    noise = np.random.default_rng(0).standard_normal(50000).astype(np.float32)
    a = mix_noise(speech, noise, 5.0, np.random.default_rng(11))
    b = mix_noise(speech, noise, 5.0, np.random.default_rng(11))
    c = mix_noise(speech, noise, 5.0, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # zero-padded speech: the SNR refers to the given (un-padded) speech power
    ps = float(np.mean(speech.astype(np.float64) ** 2))
    padded = zero_pad(speech, 0.3, 0.2)
    m = mix_noise(padded, noise, 8.0, np.random.default_rng(1), speech_power=ps)
    assert abs(_snr_db(padded, m, ps) - 8.0) < 0.1
    assert np.mean(np.abs(m[:4800])) > 0  # noise-only stretch exists
    # silent speech or silent noise: returned unchanged
    np.testing.assert_array_equal(mix_noise(np.zeros(100, np.float32), noise, 0.0, np.random.default_rng(0)),
                                  np.zeros(100))
    np.testing.assert_array_equal(mix_noise(speech, np.zeros(10, np.float32), 0.0, np.random.default_rng(0)),
                                  speech)


def test_zero_pad_lengths():
    x = tone(0.1)
    y = zero_pad(x, 0.25, 0.5)
    assert len(y) == len(x) + 4000 + 8000
    assert not y[:4000].any() and not y[-8000:].any()
    np.testing.assert_array_equal(y[4000:4000 + len(x)], x)
    assert len(zero_pad(x, 0.0, 0.0)) == len(x)
    assert len(zero_pad(x, 1 / 32000, 0.0)) == len(x) + 0  # rounds half to even: 0.5 -> 0
    with pytest.raises(ValueError):
        zero_pad(x, -0.1, 0)


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * SR / len(x)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_length_and_pitch(factor):
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR)).astype(np.float32)
    y = speed_perturb(x, factor)
    assert y.dtype == np.float32
    assert abs(len(y) - len(x) / factor) <= 1
    assert abs(_peak_hz(y) - 1000.0 * factor) < 3.0  # pitch moves with speed (Kaldi-style)
    np.testing.assert_array_equal(speed_perturb(x, 1.0), x)
    with pytest.raises(ValueError):
        speed_perturb(x, 0.0)


def test_corrupt_text_error_share_matches_the_rate():
    """The unit edit distance (rapidfuzz, an independent Levenshtein) between a text and its
    corrupted copy averages the rate per unit; 0 keeps the text; the result is re-joined."""
    from rapidfuzz.distance import Levenshtein

    from funasr_jax.data.augment import TextUnits, corrupt_text
    from funasr_jax.text.metrics import tokens

    texts = ["我们明天下午三点在北京开会", "my brother arrived so oliver was dirty", "中午郑彤准备来火车站讨论 video 的事情"]
    pool = TextUnits.of(texts + ["他她它你您是的了在有和就不人都一上也很到说要去会着没看好自己这"])
    assert "video" in pool.words and "我" in pool.cjk and " " not in "".join(pool.words)
    rng = np.random.default_rng(0)
    for t in texts:
        assert corrupt_text(t, 0.0, rng, pool) == t
    for rate in (0.1, 0.3, 0.6):
        errs = units = 0
        for _ in range(400):
            for t in texts:
                out = corrupt_text(t, rate, rng, pool)
                assert "  " not in out and out == out.strip()
                errs += Levenshtein.distance(tokens(t), tokens(out))
                units += len(tokens(t))
        assert abs(errs / units - rate) < 0.04 + 0.1 * rate, (rate, errs / units)
    with pytest.raises(ValueError, match="rate"):
        corrupt_text("x", 1.5, rng, pool)
