"""funasr_jax.audio.frontend against kaldi-native-fbank and FunASR's own WavFrontend / apply_lfr / load_cmvn.

Tolerance on log-mel: the references compute in float32, and a float32 FFT has a noise floor
about 80 dB below a frame's loudest bin, so filters more than 18 nats (78 dB) under the
frame's peak carry a few 1e-3 of rounding noise in any float32 implementation (ours included).
Hence: |Δ| <= 1e-3 on every filter within 18 nats of its frame's peak, and <= 5e-3 everywhere.
"""

from pathlib import Path

import jax
import kaldi_native_fbank as knf
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")

from funasr_jax.audio import frontend as F
from funasr_jax.audio import frontend_jnp as J
from funasr_jax.audio.io import load_audio

import funasr.frontends.wav_frontend as wav_frontend

jax.config.update("jax_default_matmul_precision", "highest")

FIX = Path(__file__).parents[1] / "fixtures" / "audio"
CFG = F.FrontendConfig()
CLIPS = ["zh.flac", "en.flac", "odd.flac"]
TOL_NEAR_PEAK, TOL_ALL, PEAK_RANGE = 1e-3, 5e-3, 18.0


@pytest.fixture(scope="module")
def waves():
    return {n: load_audio(FIX / n) for n in CLIPS + ["short_20ms.wav"]}


def knf_fbank(wave: np.ndarray, frame_length_ms: float = 25.0) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.frame_opts.frame_shift_ms = 10.0
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (wave.astype(np.float64) * 32768).astype(np.float32))
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def funasr_frontend(**kw):
    args = dict(fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10,
                lfr_m=7, lfr_n=6, dither=0.0)
    args.update(kw)
    return wav_frontend.WavFrontend(**args)


def funasr_forward(frontend, wave: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        feats, lens = frontend(torch.from_numpy(wave)[None], [len(wave)])
    assert int(lens[0]) == feats.shape[1]
    return feats[0].numpy()


def logmel_err(ours, ref):
    """(max |Δ| near the frame peak, max |Δ| overall); both [..., 80k] log-mel arrays."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    o, r = ours.reshape(-1, 80), ref.reshape(-1, 80)
    d = np.abs(o - r)
    near = (r.max(axis=1, keepdims=True) - r) < PEAK_RANGE
    return float(d[near].max()), float(d.max())


def assert_logmel_close(ours, ref):
    near, overall = logmel_err(ours, ref)
    assert near <= TOL_NEAR_PEAK and overall <= TOL_ALL, (near, overall)


def test_tables_match_knf():
    t = F.frontend_tables(CFG)
    frame = knf.FrameExtractionOptions()
    frame.window_type = "hamming"
    mel = knf.MelBanksOptions()
    mel.num_bins, mel.low_freq, mel.high_freq = 80, 20.0, 0.0
    ref_mel = np.asarray(knf.MelBanks(mel, frame).get_matrix()).T  # [257, 80]
    assert (t.frame_len, t.frame_shift, t.n_fft) == (400, 160, 512)
    assert t.mel.shape == ref_mel.shape
    np.testing.assert_allclose(t.mel, ref_mel, rtol=0, atol=2e-5)
    np.testing.assert_allclose(t.window, np.asarray(knf.FeatureWindowFunction(frame).window), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", CLIPS)
def test_fbank_np_matches_knf(waves, name):
    w = waves[name]
    ref = knf_fbank(w)
    ours = F.fbank_np(w)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (1 + (len(w) - 400) // 160, 80)
    assert ours.shape[0] == F.num_fbank_frames(len(w))
    assert_logmel_close(ours, ref)


def test_fbank_jnp_batched_matches_knf(waves):
    clips = [waves[n] for n in CLIPS]
    s = max(len(c) for c in clips)
    batch = np.zeros((len(clips), s), np.float32)
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    lengths = np.array([len(c) for c in clips])
    feats, fb_len = jax.jit(J.fbank, static_argnames="cfg")(batch, lengths, cfg=CFG)
    feats = np.asarray(feats)
    assert feats.shape == (len(clips), F.num_fbank_frames(s), 80)
    for i, c in enumerate(clips):
        ref = knf_fbank(c)
        assert int(fb_len[i]) == ref.shape[0]
        assert_logmel_close(feats[i, : ref.shape[0]], ref)
        assert np.all(feats[i, ref.shape[0] :] == 0)


def test_short_clip_matches_funasr_wavfrontend(waves):
    w = waves["short_20ms.wav"]
    assert len(w) == 320  # 20 ms < one 25 ms frame
    assert F.num_fbank_frames(len(w)) == 1
    # FunASR windows the whole clip (frame_length = min(25 ms, duration)).
    ref_fb = funasr_forward(funasr_frontend(lfr_m=1, lfr_n=1), w)
    assert ref_fb.shape == (1, 80)
    assert_logmel_close(F.fbank_np(w), ref_fb)
    feats, n = J.fbank(w[None], np.array([320]))
    assert int(n[0]) == 1
    assert_logmel_close(np.asarray(feats)[0], ref_fb)

    ref = funasr_forward(funasr_frontend(), w)
    assert ref.shape == (1, 560)
    assert_logmel_close(F.extract_features(w), ref)
    x, xl = J.features(w[None], np.array([320]))
    assert int(xl[0]) == 1
    assert_logmel_close(np.asarray(x)[0], ref)


def test_clip_too_short_for_80_mel_bins_is_rejected(waves):
    w = waves["short_20ms.wav"][:200]  # 12.5 ms -> 256-point FFT, empty mel filters
    with pytest.raises(Exception):  # the reference refuses it too
        funasr_forward(funasr_frontend(), w)
    with pytest.raises(F.FrontendError, match="200 samples"):
        F.fbank_np(w)
    batch = np.zeros((2, 400), np.float32)
    with pytest.raises(F.FrontendError, match=r"lengths\[1\] = 200"):
        J.features(batch, np.array([400, 200]))


@pytest.mark.parametrize("m,n", [(7, 6), (5, 3)])
def test_lfr_matches_funasr_apply_lfr_all_short_lengths(m, n):
    rng = np.random.default_rng(0)
    t_max = 40
    feats = rng.standard_normal((t_max, t_max, 80)).astype(np.float32)
    lengths = np.arange(1, t_max + 1)
    for i, t in enumerate(lengths):
        feats[i, t:] = 0.0
    x, x_len = jax.jit(J.lfr, static_argnums=(2, 3))(feats, lengths, m, n)
    x = np.asarray(x)
    for i, t in enumerate(lengths):
        ref = wav_frontend.apply_lfr(torch.from_numpy(feats[i, :t].copy()), m, n).numpy()
        assert ref.shape == (-(-t // n), m * 80)
        np.testing.assert_array_equal(F.lfr_np(feats[i, :t], m, n), ref)
        assert int(x_len[i]) == ref.shape[0]
        np.testing.assert_array_equal(x[i, : ref.shape[0]], ref)
        assert np.all(x[i, ref.shape[0] :] == 0)


def test_lfr_matches_funasr_apply_lfr_on_clips(waves):
    for name in CLIPS:
        fb = F.fbank_np(waves[name])
        ref = wav_frontend.apply_lfr(torch.from_numpy(fb.copy()), 7, 6).numpy()
        np.testing.assert_array_equal(F.lfr_np(fb, 7, 6), ref)


@pytest.mark.parametrize("name", CLIPS)
def test_extract_features_matches_funasr_wavfrontend(waves, name):
    w = waves[name]
    ref = funasr_forward(funasr_frontend(), w)
    ours = F.extract_features(w)
    assert ours.shape == ref.shape == (-(-F.num_fbank_frames(len(w)) // 6), 560)
    assert_logmel_close(ours, ref)


def test_batched_features_equal_per_clip_numpy(waves):
    clips = [waves["en.flac"], waves["short_20ms.wav"], waves["zh.flac"], np.zeros(0, np.float32),
             waves["odd.flac"]]
    s = max(len(c) for c in clips) + 37  # extra padding past the longest clip
    batch = np.zeros((len(clips), s), np.float32)
    batch[:, :] = 0.5  # garbage past each length must not leak into the features
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    lengths = np.array([len(c) for c in clips], np.int32)
    x, x_len = jax.jit(J.features, static_argnames="cfg")(batch, lengths, cfg=CFG)
    x = np.asarray(x)
    assert x.shape == (len(clips), -(-F.num_fbank_frames(s) // 6), 560)
    assert x.dtype == np.float32
    for i, c in enumerate(clips):
        if len(c) == 0:
            assert int(x_len[i]) == 0 and np.all(x[i] == 0)
            continue
        ref = F.extract_features(c)
        assert int(x_len[i]) == ref.shape[0]
        assert_logmel_close(x[i, : ref.shape[0]], ref)
        assert np.all(x[i, ref.shape[0] :] == 0)


def write_am_mvn(path, shift, scale):
    def vec(v):
        return " ".join(f"{x:.6f}" for x in v)

    d = len(shift)
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {d} {d}\n[ 0 ]\n"
        f"<AddShift> {d} {d}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
        f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n"
        "</Nnet>\n"
    )


def test_cmvn_matches_funasr(tmp_path, waves):
    rng = np.random.default_rng(1)
    shift = -rng.uniform(5, 15, 560)
    scale = rng.uniform(0.05, 0.5, 560)
    path = tmp_path / "am.mvn"
    write_am_mvn(path, shift, scale)
    ref = wav_frontend.load_cmvn(str(path)).numpy()
    got_shift, got_scale = F.load_cmvn(path)
    np.testing.assert_array_equal(got_shift, ref[0])
    np.testing.assert_array_equal(got_scale, ref[1])

    w = waves["odd.flac"]
    ref_x = funasr_forward(funasr_frontend(cmvn_file=str(path)), w)
    cfg = F.FrontendConfig(cmvn_file=str(path))
    ours = F.extract_features(w, cfg)
    # CMVN rescales log-mel errors by `scale` (< 0.5) after shifting; compare with the same bound.
    assert np.abs(ours - ref_x).max() <= TOL_ALL * 0.5
    x, x_len = J.features(np.pad(w, (0, 500))[None], np.array([len(w)]), cfg)
    np.testing.assert_allclose(np.asarray(x)[0, : int(x_len[0])], ours, rtol=0, atol=TOL_ALL * 0.5)


def test_malformed_cmvn_names_the_file(tmp_path):
    path = tmp_path / "bad.mvn"
    write_am_mvn(path, np.zeros(4), np.ones(4))
    path.write_text(path.read_text().replace("<Rescale> 4 4", "<Rescale> 5 5"))
    with pytest.raises(F.FrontendError, match=r"bad\.mvn.*<Rescale> declares 5"):
        F.load_cmvn(path)
    path.write_text("<Nnet>\n</Nnet>\n")
    with pytest.raises(F.FrontendError, match=r"bad\.mvn.*no <AddShift>"):
        F.load_cmvn(path)


def test_config_validation():
    with pytest.raises(F.FrontendError, match="dither"):
        F.FrontendConfig(dither=1.0)
    with pytest.raises(F.FrontendError, match="lfr_n"):
        F.FrontendConfig(lfr_n=0)
    assert F.FrontendConfig().feature_dim == 560
