"""CTC forced alignment against brute force over every frame path; word grouping by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from funasr_jax.decode.align import (AlignmentError, ctc_forced_align, ctc_forced_align_batch, token_times,
                                     word_timestamps)

BLANK = 3


def collapse(path, blank=BLANK):
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def brute_best(lp, labels):
    best, best_path = -np.inf, None
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        if collapse(path) == tuple(labels):
            s = sum(lp[t, p] for t, p in enumerate(path))
            if s > best:
                best, best_path = s, path
    return best, best_path


def logsoftmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("seed", range(24))
def test_viterbi_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(3, 7))
    n = int(rng.integers(0, 4))
    labels = [int(v) for v in rng.integers(0, 3, n)]
    if seed % 6 == 0:
        labels = [1, 1][: max(1, n)]  # repeats need a blank between them
    lp = logsoftmax(rng.normal(size=(t, 4)) * 2)
    want, _ = brute_best(lp, labels)
    if not np.isfinite(want):
        with pytest.raises(AlignmentError):
            ctc_forced_align(lp, labels, BLANK)
        return
    al = ctc_forced_align(lp, labels, BLANK)
    assert np.isclose(al.score, want)
    path = [labels[k] if k >= 0 else BLANK for k in al.frame_labels]
    assert collapse(path) == tuple(labels) and np.isclose(sum(lp[i, p] for i, p in enumerate(path)), want)
    for k, (a, b) in enumerate(al.spans):
        assert set(np.flatnonzero(al.frame_labels == k)) == set(range(a, b))
        assert a <= al.peaks[k] < b and lp[al.peaks[k], labels[k]] == lp[a:b, labels[k]].max()


def test_planted_path_and_batch_and_errors():
    path = [BLANK, 0, 0, BLANK, 2, 2, 2, BLANK, 2]
    lp = np.full((len(path), 4), np.log(0.02))
    lp[np.arange(len(path)), path] = np.log(0.94)
    al = ctc_forced_align(lp, [0, 2, 2], BLANK)
    assert al.spans == ((1, 3), (4, 7), (8, 9))
    assert token_times(al, 60.0, 1000.0, start="span") == [(1060.0, 1180.0), (1240.0, 1420.0), (1480.0, 1540.0)]
    spiky = lp.copy()
    spiky[5, 2] = np.log(0.99)  # the second label's spike is its middle frame
    assert ctc_forced_align(spiky, [0, 2, 2], BLANK).peaks == (1, 5, 8)
    assert token_times(ctc_forced_align(spiky, [0, 2, 2], BLANK), 60.0)[1] == (300.0, 420.0)
    batch = np.stack([lp, np.roll(lp, 1, axis=0)])
    got = ctc_forced_align_batch(batch, [9, 6], [[0, 2, 2], [2]], BLANK)
    assert got[0].spans == al.spans and got[1].spans == ctc_forced_align(batch[1, :6], [2], BLANK).spans
    with pytest.raises(AlignmentError, match="cannot align 2 labels"):
        ctc_forced_align(lp[:2], [1, 1], BLANK)
    with pytest.raises(AlignmentError, match="non-blank"):
        ctc_forced_align(lp, [BLANK], BLANK)
    with pytest.raises(AlignmentError, match=r"\[T, V\]"):
        ctc_forced_align(lp[0], [1], BLANK)
    empty = ctc_forced_align(lp, [], BLANK)
    assert empty.spans == () and np.isclose(empty.score, lp[:, BLANK].sum())


def test_word_timestamps_by_hand():
    words = word_timestamps(["\u2581hello", "wor", "ld", "\u2581你好", "\u2581", "AI", "模型"],
                            [(0, 100), (100, 150), (150, 200), (300, 400), (400, 410), (410, 500), (500, 700)])
    assert [(w.text, w.start_ms, w.end_ms) for w in words] == [
        ("helloworld", 0, 200), ("你", 300, 350), ("好", 350, 400), ("AI", 410, 500), ("模", 500, 600),
        ("型", 600, 700)]
    mixed = word_timestamps(["\u2581今天", "\u2581开", "会ok"], [(0, 200), (200, 300), (300, 500)])
    assert [(w.text, w.start_ms, w.end_ms) for w in mixed] == [
        ("今", 0, 100), ("天", 100, 200), ("开", 200, 300), ("会", 300, 400), ("ok", 400, 500)]
    with pytest.raises(ValueError, match="2 pieces but 1 times"):
        word_timestamps(["a", "b"], [(0, 1)])
