"""CTC forced alignment against brute force over every frame path; word grouping by hand."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from funasr_jax.decode.align import (AlignmentError, ctc_forced_align, ctc_forced_align_batch, token_times,
                                     word_timestamps)

V, BLANK = 4, 3


def collapse(path, blank=BLANK):
    """Merge repeats, then drop blanks (the CTC many-to-one map)."""
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


@functools.lru_cache(maxsize=None)
def all_paths(t):
    """Every frame path of length t over V symbols: ([V**t, t] int array, the collapse of each)."""
    paths = np.array(list(itertools.product(range(V), repeat=t)), np.int64).reshape(-1, t)
    return paths, [collapse(p) for p in paths.tolist()]


def brute_best(lp, labels):
    """max over frame paths collapsing to labels of the summed log-prob (-inf when none)."""
    t = lp.shape[0]
    paths, collapsed = all_paths(t)
    keep = np.array([c == tuple(labels) for c in collapsed])
    if not keep.any():
        return -np.inf
    scores = lp[np.arange(t), paths[keep]].sum(-1) if t else np.zeros(1)
    return float(scores.max())


def logsoftmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def path_of(al):
    return [al.labels[k] if k >= 0 else BLANK for k in al.frame_labels]


def check_against_brute_force(lp, labels):
    want = brute_best(lp, labels)
    if not np.isfinite(want):
        with pytest.raises(AlignmentError):
            ctc_forced_align(lp, labels, BLANK)
        return False
    al = ctc_forced_align(lp, labels, BLANK)
    assert al.labels == tuple(labels)
    assert np.isclose(al.score, want)
    path = path_of(al)
    assert len(path) == lp.shape[0] and collapse(path) == tuple(labels)
    assert np.isclose(sum(lp[i, p] for i, p in enumerate(path)), want)
    assert len(al.spans) == len(labels)
    prev_end = 0
    for k, (a, b) in enumerate(al.spans):
        assert prev_end <= a < b
        assert list(np.flatnonzero(al.frame_labels == k)) == list(range(a, b))
        assert a <= al.peaks[k] < b and lp[al.peaks[k], labels[k]] == lp[a:b, labels[k]].max()
        prev_end = b
    assert set(al.frame_labels.tolist()) <= set(range(-1, len(labels)))
    return True


@pytest.mark.parametrize("seed", range(80))
def test_viterbi_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    t = int(rng.integers(1, 8))
    labels = [int(v) for v in rng.integers(0, 3, int(rng.integers(0, 4)))]
    lp = logsoftmax(rng.normal(size=(t, V)) * 2)
    if seed % 4 == 1:  # coarse values: many tied paths
        lp = np.round(lp)
    if seed % 5 == 2:  # some impossible emissions
        lp[rng.random(lp.shape) < 0.3] = -np.inf
    check_against_brute_force(lp, labels)


@pytest.mark.parametrize("labels,t", [([1, 1], 2), ([1, 1], 3), ([1, 1], 7), ([1, 1, 1], 4), ([1, 1, 1], 5),
                                      ([0, 1, 0], 3), ([2, 2, 1], 4), ([0, 0, 0], 6), ([2], 1), ([], 1), ([], 5)])
def test_repeats_against_brute_force(labels, t):
    rng = np.random.default_rng(len(labels) * 10 + t)
    for _ in range(4):
        feasible = check_against_brute_force(logsoftmax(rng.normal(size=(t, V)) * 3), labels)
        need = len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))
        assert feasible == (need <= t)


def test_tie_rule_by_hand():
    uniform = np.full((4, V), np.log(1 / V))
    # all fitting paths tie: read back from the end, each state keeps the earlier frames it can
    assert ctc_forced_align(uniform, [0, 1], BLANK).frame_labels.tolist() == [0, 1, 1, 1]
    assert ctc_forced_align(uniform[:3], [0], BLANK).frame_labels.tolist() == [0, 0, 0]
    assert ctc_forced_align(uniform, [1, 1], BLANK).frame_labels.tolist() == [0, -1, 1, 1]
    assert ctc_forced_align(uniform, [0, 1], BLANK).peaks == (0, 1)


def test_planted_path_and_token_times():
    path = [BLANK, 0, 0, BLANK, 2, 2, 2, BLANK, 2]
    lp = np.full((len(path), V), np.log(0.02))
    lp[np.arange(len(path)), path] = np.log(0.94)
    al = ctc_forced_align(lp, [0, 2, 2], BLANK)
    assert al.spans == ((1, 3), (4, 7), (8, 9))
    assert path_of(al) == path
    assert np.isclose(al.score, 9 * np.log(0.94))
    assert token_times(al, 60.0, 1000.0, start="span") == [(1060.0, 1180.0), (1240.0, 1420.0), (1480.0, 1540.0)]
    spiky = lp.copy()
    spiky[5, 2] = np.log(0.99)  # the second label's spike is its middle frame
    spiky_al = ctc_forced_align(spiky, [0, 2, 2], BLANK)
    assert spiky_al.peaks == (1, 5, 8)
    assert token_times(spiky_al) == [(60.0, 180.0), (300.0, 420.0), (480.0, 540.0)]
    assert token_times(spiky_al, 10.0, 5.0, start="span")[1] == (45.0, 75.0)
    with pytest.raises(ValueError, match="start"):
        token_times(al, start="middle")


def test_batch_equals_per_row():
    rng = np.random.default_rng(7)
    batch = logsoftmax(rng.normal(size=(3, 9, V)) * 2)
    lengths = [9, 6, 0]
    batch[1, 6:] = np.nan  # padding past a row's length is never read
    labels_list = [[0, 2, 2], [1], []]
    got = ctc_forced_align_batch(batch, np.array(lengths), labels_list, BLANK)
    for b, (n, labels) in enumerate(zip(lengths, labels_list)):
        want = ctc_forced_align(batch[b, :n], labels, BLANK)
        assert got[b].spans == want.spans and got[b].peaks == want.peaks and got[b].labels == want.labels
        assert np.isclose(got[b].score, want.score) and np.array_equal(got[b].frame_labels, want.frame_labels)
        assert len(got[b].frame_labels) == n
    with pytest.raises(AlignmentError, match="lengths"):
        ctc_forced_align_batch(batch, [10, 1, 1], labels_list, BLANK)
    with pytest.raises(AlignmentError):
        ctc_forced_align_batch(batch, [9, 6], labels_list, BLANK)


def test_errors_and_empty():
    lp = logsoftmax(np.random.default_rng(0).normal(size=(5, V)))
    with pytest.raises(AlignmentError, match=r"cannot align 2 labels \(1 repeats need blanks between\) in 2 frames"):
        ctc_forced_align(lp[:2], [1, 1], BLANK)
    with pytest.raises(AlignmentError, match="cannot align 6 labels"):
        ctc_forced_align(lp, [0, 1, 2, 0, 1, 2], BLANK)
    with pytest.raises(AlignmentError, match="non-blank"):
        ctc_forced_align(lp, [0, BLANK], BLANK)
    with pytest.raises(AlignmentError, match="non-blank"):
        ctc_forced_align(lp, [V], BLANK)
    with pytest.raises(AlignmentError, match="non-blank"):
        ctc_forced_align(lp, [-1], BLANK)
    with pytest.raises(AlignmentError, match="blank 4"):
        ctc_forced_align(lp, [], V)
    with pytest.raises(AlignmentError, match=r"\[T, V\]"):
        ctc_forced_align(lp[0], [1], BLANK)
    with pytest.raises(AlignmentError, match=r"\[T, V\]"):
        ctc_forced_align(lp[None], [1], BLANK)
    nan = lp.copy()
    nan[2, 1] = np.nan
    with pytest.raises(AlignmentError, match="NaN"):
        ctc_forced_align(nan, [1], BLANK)
    no_label = lp.copy()
    no_label[:, 1] = -np.inf
    with pytest.raises(AlignmentError, match="-inf"):
        ctc_forced_align(no_label, [1], BLANK)
    empty = ctc_forced_align(lp, [], BLANK)
    assert empty.spans == () and empty.frame_labels.tolist() == [-1] * 5
    assert np.isclose(empty.score, lp[:, BLANK].sum())
    zero = ctc_forced_align(np.zeros((0, V)), [], BLANK)
    assert zero.spans == () and zero.frame_labels.shape == (0,) and zero.score == 0.0
    with pytest.raises(AlignmentError, match="in 0 frames"):
        ctc_forced_align(np.zeros((0, V)), [1], BLANK)


def words_of(pieces, times):
    return [(w.text, w.start_ms, w.end_ms) for w in word_timestamps(pieces, times)]


def test_word_timestamps_by_hand():
    assert words_of(["\u2581hello", "wor", "ld", "\u2581你好"], [(0, 100), (100, 150), (150, 200), (300, 400)]) == [
        ("helloworld", 0, 200), ("你", 300, 350), ("好", 350, 400)]
    # a lone '▁' ends the word before it; its time is not used
    assert words_of(["\u2581a", "\u2581", "b", "", "c"], [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]) == [
        ("a", 0, 10), ("bc", 20, 50)]
    # '▁' inside a piece; several ideographs in a piece share its time evenly
    assert words_of(["今天\u2581开会"], [(0, 400)]) == [("今", 0, 100), ("天", 100, 200), ("开", 200, 300),
                                                      ("会", 300, 400)]
    assert words_of(["\u2581今天", "\u2581开", "会ok"], [(0, 200), (200, 300), (300, 500)]) == [
        ("今", 0, 100), ("天", 100, 200), ("开", 200, 300), ("会", 300, 400), ("ok", 400, 500)]
    # Latin then ideographs in one piece; the Latin run continues the word before it (no '▁')
    assert words_of(["\u2581", "AI模型"], [(0, 60), (60, 360)]) == [("AI", 60, 160), ("模", 160, 260), ("型", 260, 360)]
    assert words_of(["\u2581big", "AI模型"], [(0, 60), (60, 360)]) == [("bigAI", 0, 160), ("模", 160, 260),
                                                                      ("型", 260, 360)]
    # Latin after an ideograph starts a word, in the same piece or the next
    assert words_of(["模型AI", "s"], [(0, 300), (300, 310)]) == [("模", 0, 100), ("型", 100, 200), ("AIs", 200, 310)]
    assert words_of(["你", "ok"], [(0, 60), (60, 120)]) == [("你", 0, 60), ("ok", 60, 120)]
    assert words_of(["hello\u2581world", "s"], [(0, 200), (200, 260)]) == [("hello", 0, 100), ("worlds", 100, 260)]
    assert words_of(["ab\u2581", "cd"], [(0, 60), (60, 120)]) == [("ab", 0, 60), ("cd", 60, 120)]
    # extension A ideographs are words of their own too
    assert words_of(["\u3400\u4e00"], [(0, 120)]) == [("\u3400", 0, 60), ("\u4e00", 60, 120)]
    assert words_of([], []) == []
    with pytest.raises(ValueError, match="2 pieces but 1 times"):
        word_timestamps(["a", "b"], [(0, 1)])
