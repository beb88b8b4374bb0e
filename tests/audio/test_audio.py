"""funasr_jax.audio.io against soundfile/soxr, and its errors on bad files.

Fixtures: tests/fixtures/audio (regenerate with tools/make_test_fixtures.sh).
"""

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from funasr_jax.audio.io import AudioError, load_audio, load_audio_bytes

FIX = Path(__file__).parents[1] / "fixtures" / "audio"


@pytest.mark.parametrize("name", ["zh.flac", "en.flac", "odd.flac", "short_20ms.wav"])
def test_mono_16k_is_decoded_unchanged(name):
    ref, sr = sf.read(FIX / name, dtype="float32")
    assert sr == 16000 and ref.ndim == 1
    x = load_audio(FIX / name)
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, ref)
    assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.01  # real speech, not silence


def test_bytes_and_path_give_the_same_samples():
    data = (FIX / "en.flac").read_bytes()
    np.testing.assert_array_equal(load_audio_bytes(data, "en.flac"), load_audio(FIX / "en.flac"))


def test_stereo_8k_is_averaged_then_resampled_with_soxr():
    raw, sr = sf.read(FIX / "stereo_8k.wav", dtype="float32", always_2d=True)
    assert sr == 8000 and raw.shape[1] == 2
    assert np.abs(raw[:, 0] - raw[:, 1]).max() > 0.01  # the two channels really differ
    ref = soxr.resample(raw.mean(axis=1), 8000, 16000, quality="HQ")
    x = load_audio(FIX / "stereo_8k.wav")
    assert x.shape == (2 * raw.shape[0],) == ref.shape
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-6)


def test_truncated_wav_names_the_file():
    path = FIX / "truncated.wav"
    # libsndfile alone would silently decode the part that is present:
    assert sf.read(path)[0].shape[0] > 0
    with pytest.raises(AudioError, match="truncated") as e:
        load_audio(path)
    assert str(path) in str(e.value)


def test_truncated_flac_names_the_source():
    data = (FIX / "zh.flac").read_bytes()
    with pytest.raises(AudioError, match="cut.flac"):
        load_audio_bytes(data[: len(data) // 2], "cut.flac")


def test_garbage_bytes_raise_audio_error():
    with pytest.raises(AudioError, match="noise.bin.*cannot decode"):
        load_audio_bytes(b"\x00\x01not audio at all" * 10, "noise.bin")


def test_empty_wav_raises():
    path = FIX / "empty.wav"
    assert sf.info(path).frames == 0
    with pytest.raises(AudioError, match="0 samples") as e:
        load_audio(path)
    assert str(path) in str(e.value)


def test_missing_file_raises(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="not found") as e:
        load_audio(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_non_finite_samples_raise(tmp_path):
    x = np.zeros(800, np.float32)
    x[100] = np.nan
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*non-finite"):
        load_audio_bytes(buf.getvalue(), "nan.wav")
