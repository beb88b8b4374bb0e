"""SpecAugment-style masks: exactly the drawn LFR rows / mel bins are zero, deterministic, off by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers.data import CharCTC, CharTokenizer, write_corpus

from funasr_jax.data.augment import SpecMasks, apply_spec_masks, draw_spec_masks
from funasr_jax.data.config import DataConfig
from funasr_jax.data.datasets import make_train_data
from funasr_jax.data.manifest import read_manifests
from funasr_jax.data.planning import PLAN_TAG
from funasr_jax.data.rows import ROW_TAG, SPEC_TAG

N_MELS, STACK = 8, 3  # small LFR layout: 3 stacked frames of 8 bins -> 24 columns


def _expected_zero(t: int, masks: SpecMasks) -> np.ndarray:
    """[t, STACK * N_MELS] bool by brute force, one element at a time."""
    z = np.zeros((t, STACK * N_MELS), bool)
    for row in range(t):
        for col in range(STACK * N_MELS):
            mel = col % N_MELS
            z[row, col] = (any(s <= row < s + w for s, w in masks.time)
                           or any(s <= mel < s + w for s, w in masks.freq))
    return z


@pytest.mark.parametrize("key", [(0, 0, 0, SPEC_TAG), (5, 1, 3, SPEC_TAG), (5, 2, 3, SPEC_TAG)])
def test_masks_zero_exactly_the_drawn_rows_and_bins(key):
    t = 11
    feats = np.random.default_rng(1).uniform(1.0, 2.0, (t, STACK * N_MELS)).astype(np.float32)  # no zeros
    masks = draw_spec_masks(key, t, N_MELS, time_masks=2, time_width=4, freq_masks=2, freq_width=3)
    assert len(masks.time) == 2 and len(masks.freq) == 2
    assert all(0 <= w <= 4 and 0 <= s and s + w <= t for s, w in masks.time)
    assert all(0 <= w <= 3 and 0 <= s and s + w <= N_MELS for s, w in masks.freq)
    out = apply_spec_masks(feats, masks, N_MELS)
    zero = _expected_zero(t, masks)
    assert out.dtype == np.float32 and out.shape == feats.shape
    np.testing.assert_array_equal(out == 0, zero)
    np.testing.assert_array_equal(out[~zero], feats[~zero])
    assert (feats >= 1.0).all()  # input untouched


def test_hand_written_masks_and_edges():
    feats = np.ones((5, STACK * N_MELS), np.float32)
    out = apply_spec_masks(feats, SpecMasks(time=((4, 1), (0, 0)), freq=((6, 2),)), N_MELS)
    assert (out[4] == 0).all() and (out[:4, 6::N_MELS] == 0).all() and (out[:4, 7::N_MELS] == 0).all()
    assert (out == 0).sum() == STACK * N_MELS + 4 * STACK * 2
    # widths are capped at the axis size; a 1-frame utterance can be masked whole but never overrun
    for k in range(20):
        m = draw_spec_masks((k,), 1, N_MELS, time_masks=3, time_width=50, freq_masks=3, freq_width=50)
        assert all(s + w <= 1 and w in (0, 1) for s, w in m.time) and all(s + w <= N_MELS for s, w in m.freq)
    with pytest.raises(ValueError, match="n_mels"):
        apply_spec_masks(np.ones((2, 10), np.float32), SpecMasks(), N_MELS)


def test_draws_are_a_function_of_the_key_and_kinds_are_independent():
    kw = {"time_masks": 2, "time_width": 5, "freq_masks": 2, "freq_width": 6}
    a = draw_spec_masks((5, 1, 3, SPEC_TAG), 40, 80, **kw)
    assert a == draw_spec_masks((5, 1, 3, SPEC_TAG), 40, 80, **kw)
    others = [draw_spec_masks(k, 40, 80, **kw) for k in [(6, 1, 3, SPEC_TAG), (5, 2, 3, SPEC_TAG), (5, 1, 4, SPEC_TAG)]]
    assert all(o != a for o in others)
    # changing the time settings leaves the frequency masks alone, and vice versa
    assert draw_spec_masks((5, 1, 3, SPEC_TAG), 40, 80, **{**kw, "time_masks": 0}).freq == a.freq
    assert draw_spec_masks((5, 1, 3, SPEC_TAG), 40, 80, **{**kw, "freq_width": 2}).time == a.time
    assert len({PLAN_TAG, ROW_TAG, SPEC_TAG}) == 3


# --------------------------------------------------------------------------- in the loader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec_corpus")
    path = write_corpus(str(d), [0.5, 0.9, 1.3, 1.9, 2.5, 3.0, 0.7, 1.1])
    return {"manifest": path, "examples": read_manifests([path])}


def _cfg(corpus, **kw):
    base = {"train_files": (corpus["manifest"],), "batch_size": 4, "bucket_frames": (16, 32, 64),
            "max_target_tokens": 64, "token_multiple": 16, "seed": 3}
    return DataConfig(**{**base, **kw})


def _batches(cfg, corpus, epochs=2):
    td = make_train_data(cfg, corpus["examples"], CharTokenizer(), CharCTC())
    return td, [td.loader(s) for s in range(epochs * td.steps_per_epoch)]


def test_loader_masks_per_seed_epoch_index(corpus):
    spec = {"spec_time_masks": 2, "spec_time_mask_frames": 4, "spec_freq_masks": 2, "spec_freq_mask_bins": 20}
    assert DataConfig().spec_time_masks == 0 and DataConfig().spec_freq_masks == 0  # off by default
    _, plain = _batches(_cfg(corpus), corpus)
    td, masked = _batches(_cfg(corpus, **spec), corpus)
    spe = td.steps_per_epoch
    n_masked = 0
    for s, (p, m) in enumerate(zip(plain, masked)):
        pa, ma = p.arrays(), m.arrays()
        for k in pa:
            if k != "feats":
                np.testing.assert_array_equal(pa[k], ma[k], err_msg=k)
        for r in np.flatnonzero(p.weight > 0):
            i, t = int(p.example_index[r]), int(p.feat_lengths[r])
            masks = draw_spec_masks((3, s // spe, i, SPEC_TAG), t, 80, time_masks=2, time_width=4,
                                    freq_masks=2, freq_width=20)
            np.testing.assert_array_equal(m.feats[r, :t], apply_spec_masks(p.feats[r, :t], masks, 80))
            assert not m.feats[r, t:].any()
            n_masked += int((m.feats[r, :t] != p.feats[r, :t]).any())
    assert n_masked >= len(corpus["examples"])  # most rows of both epochs got a non-empty mask
    # reproducible, and independent of the order batches are produced in
    td2 = make_train_data(_cfg(corpus, **spec), corpus["examples"], CharTokenizer(), CharCTC())
    for s in reversed(range(2 * spe)):
        np.testing.assert_array_equal(td2.loader(s).feats, masked[s].feats)
    # another seed, another mask (the plan changes too, so compare per example via the draws)
    other = draw_spec_masks((4, 0, 0, SPEC_TAG), 30, 80, time_masks=2, time_width=4, freq_masks=2, freq_width=20)
    assert other != draw_spec_masks((3, 0, 0, SPEC_TAG), 30, 80, time_masks=2, time_width=4, freq_masks=2,
                                    freq_width=20)


def test_spec_fields_validate(corpus):
    cases = [({"spec_time_masks": -1}, "spec_time_masks"), ({"spec_freq_masks": 1.5}, "spec_freq_masks"),
             ({"spec_time_masks": 1, "spec_time_mask_frames": 0}, "spec_time_mask_frames"),
             ({"spec_freq_masks": 1, "spec_freq_mask_bins": 0}, "spec_freq_mask_bins"),
             ({"spec_time_mask_frames": True}, "spec_time_mask_frames")]
    for kw, field in cases:
        with pytest.raises(ValueError, match=f"DataConfig.{field}"):
            _cfg(corpus, **kw).validate()
    _cfg(corpus, spec_time_mask_frames=0, spec_freq_mask_bins=0).validate()  # widths unused while off
    with pytest.raises(ValueError, match="DataConfig.spec_freq_mask_bins.*80 mel bins"):
        make_train_data(_cfg(corpus, spec_freq_masks=1, spec_freq_mask_bins=81), corpus["examples"],
                        CharTokenizer())
    assert dataclasses.replace(DataConfig(), spec_freq_masks=1).validate().spec_freq_mask_bins == 30
