"""Per-process caches: `SharedCache` bounds / LRU / threads, and that caching never changes a batch."""

from __future__ import annotations

import dataclasses
import json
import pickle
import threading

import numpy as np
import pytest
from helpers.data import CharCTC, CharTokenizer, assert_batches_equal, write_corpus, write_noise

import funasr_jax.data.manifest as manifest_mod
import funasr_jax.data.rows as rows_mod
from funasr_jax.data.cache import MIB, SharedCache, frozen, nbytes
from funasr_jax.data.config import DataConfig
from funasr_jax.data.datasets import make_train_data, make_train_iterator
from funasr_jax.data.manifest import read_manifests

DURS = [0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 1.9, 2.2, 2.5, 3.0, 3.5, 0.4, 0.8]


def _arr(n_bytes: int, fill: float = 0.0) -> np.ndarray:
    return np.full(n_bytes // 4, fill, np.float32)


def test_nbytes_and_frozen():
    assert nbytes(_arr(40)) == 40 and nbytes((_arr(40), 7, [_arr(8)])) == 48 and nbytes("x") == 0
    x = frozen(_arr(8))
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1.0


def test_shared_cache_bytes_lru_and_off():
    c = SharedCache(max_bytes=100)
    for k in "abc":
        c.put(k, _arr(40))
    assert len(c) == 2 and c.bytes == 80 and c.get("a") is None  # 'a' evicted to fit 'c'
    c.get("b")  # 'b' is now the most recent: 'c' goes next
    c.put("d", _arr(40))
    assert c.get("c") is None and c.get("b") is not None and c.get("d") is not None
    c.put("big", _arr(104))  # larger than the whole budget: not stored, nothing evicted
    assert c.get("big") is None and len(c) == 2
    c.put("b", _arr(80))  # replacing a key frees its old bytes first
    assert c.bytes == 80 and len(c) == 1 and c.get("b").nbytes == 80
    assert (c.hits, c.misses) == (4, 3)
    off = SharedCache(max_bytes=0)
    off.put("a", _arr(4))
    assert len(off) == 0 and off.get("a") is None and not off.enabled
    items = SharedCache(max_items=2)
    for k in range(3):
        items.put(k, k + 1)
    assert items.get(0) is None and items.get(2) == 3
    assert items.get_or_make(5, lambda: 6) == 6 and items.get(5) == 6


def test_shared_cache_pickles_empty_and_is_thread_safe():
    c = SharedCache(max_bytes=1000)
    c.put("a", _arr(40))
    d = pickle.loads(pickle.dumps(c))
    assert (d.max_bytes, d.max_items, len(d), d.bytes) == (1000, None, 0, 0)

    def hammer(seed):
        rng = np.random.default_rng(seed)
        for _ in range(3000):
            k = int(rng.integers(60))
            v = c.get(k)
            if v is None:
                c.put(k, _arr(4 * (1 + k), float(k)))
            else:
                assert v[0] == k and v.nbytes == 4 * (1 + k)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.bytes == sum(v.nbytes for v in c._items.values()) <= 1000


# --------------------------------------------------------------------------- the loader


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache_corpus")
    path = write_corpus(str(d), DURS)
    return {"manifest": path, "noise": write_noise(str(d / "noise")), "examples": read_manifests([path])}


def _cfg(corpus, **kw):
    """Every augmentation on: speed, noise + zero padding, SpecAugment masks."""
    base = {"train_files": (corpus["manifest"],), "batch_size": 4, "bucket_frames": (8, 16, 32, 64),
            "max_target_tokens": 64, "token_multiple": 16, "seed": 5, "noise_dir": corpus["noise"],
            "noise_prob": 0.4, "zero_pad_prob": 0.5, "zero_pad_max_s": 0.3, "speed_factors": (0.9, 1.0, 1.0, 1.1),
            "spec_time_masks": 2, "spec_time_mask_frames": 3, "spec_freq_masks": 2, "spec_freq_mask_bins": 10}
    base.update(kw)
    return DataConfig(**base)


def _off(cfg):
    return dataclasses.replace(cfg, audio_cache_mb=0, feature_cache_mb=0)


def test_cache_on_equals_off_over_two_epochs(corpus, monkeypatch):
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    cfg = _cfg(corpus)
    td_off = make_train_data(_off(cfg), exs, tok, ctc)
    spe = td_off.steps_per_epoch
    expected = [td_off.loader(s) for s in range(2 * spe)]
    plans = [td_off.plan(e) for e in (0, 1)]
    clean = [(p.factor == 1.0) & ~p.noise for p in plans]
    assert all(c[:len(DURS)].any() and not c[:len(DURS)].all() for c in clean)  # both kinds of rows, both epochs

    decoded = []
    real_load = rows_mod.load_audio
    spy = lambda path, sr: decoded.append(path) or real_load(path, sr)  # noqa: E731
    monkeypatch.setattr(rows_mod, "load_audio", spy)  # noise files
    monkeypatch.setattr(manifest_mod, "load_audio", spy)  # utterances (data.manifest.example_audio)
    td_on = make_train_data(cfg, exs, tok, ctc)
    # epoch 0 in a scrambled order (as threads may produce it), epoch 1 in order
    order = list(np.random.default_rng(0).permutation(spe)) + list(range(spe, 2 * spe))
    got = {s: td_on.loader(s) for s in order}
    assert_batches_equal([got[s] for s in range(2 * spe)], expected)
    audio = [p for p in decoded if not p.startswith(corpus["noise"])]
    assert sorted(audio) == sorted(ex.audio_path for ex in exs)  # each utterance decoded once, in epoch 0
    loader = td_on.loader
    assert len(loader._wave_cache) == len(exs) and loader._feature_cache.hits > 0
    for feats, n_samples in loader._feature_cache._items.values():
        assert not feats.flags.writeable and isinstance(n_samples, int)
    # the cached epoch-1 features of clean rows equal the cold path's (masks applied after the cache)
    assert_batches_equal([td_on.loader(s) for s in range(spe, 2 * spe)], expected[spe:])


def test_cache_on_iterator_and_resume_equal_cache_off(corpus):
    tok, ctc, exs = CharTokenizer(), CharCTC(), corpus["examples"]
    cfg = _cfg(corpus)
    spe = make_train_data(cfg, exs, tok, ctc).steps_per_epoch
    expected = [b for _, b in zip(range(2 * spe), make_train_iterator(_off(cfg), exs, tok, ctc))]
    it = make_train_iterator(cfg, exs, tok, ctc)  # grain, num_threads=2, one shared cache
    first = [next(it) for _ in range(spe + 1)]
    state = json.loads(json.dumps(it.get_state()))
    assert_batches_equal(first + [next(it) for _ in range(spe - 1)], expected)
    it2 = make_train_iterator(cfg, exs, tok, ctc)  # resumed with a cold cache
    it2.set_state(state)
    assert_batches_equal([next(it2) for _ in range(spe - 1)], expected[spe + 1:])


def test_tiny_cache_budget_still_equal(corpus):
    """A budget far below the corpus (constant eviction) changes nothing either."""
    tok, exs = CharTokenizer(), corpus["examples"]
    cfg = _cfg(corpus, spec_time_masks=0, spec_freq_masks=0)
    td_off, td_on = make_train_data(_off(cfg), exs, tok), make_train_data(cfg, exs, tok)
    td_on.loader._wave_cache = SharedCache(max_bytes=60_000)  # ~2 s of float32 audio
    td_on.loader._feature_cache = SharedCache(max_bytes=60_000)
    steps = range(2 * td_off.steps_per_epoch)
    assert_batches_equal([td_on.loader(s) for s in steps], [td_off.loader(s) for s in steps])
    assert 0 < td_on.loader._wave_cache.bytes <= 60_000


def test_cache_fields_validate():
    for field in ("audio_cache_mb", "feature_cache_mb"):
        with pytest.raises(ValueError, match=f"DataConfig.{field}"):
            DataConfig(**{field: -1}).validate()
    assert MIB == 1 << 20
