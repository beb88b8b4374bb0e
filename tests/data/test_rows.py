"""The one padded-row builder (`data.rows.pad_batch`) against a position-by-position expectation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import CharTokenizer

from funasr_jax.data.rows import pad_batch, pad_feats
from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID, IGNORE_INDEX
from funasr_jax.text.prompt import PromptIds, build_prompt

PAD = CharTokenizer.pad_id


def _rows():
    """Hand-built prompts (one with a target, one without, a padding row, a hand-written one) and features."""
    tok = CharTokenizer()
    prompts = [
        build_prompt(tok, system="s", instruction="hi", n_audio=3, target="ab"),
        build_prompt(tok, system="sys", instruction="x", n_audio=1),
        None,
        PromptIds(input_ids=[7, 0, 0, 8, 9], labels=[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, 9],
                  audio_start=1, n_audio=2),
    ]
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((t, 4)).astype(np.float32) + 1 for t in (5, 2)] + [None] + [np.ones((7, 4))]
    return feats, prompts


def _expected_row(p: PromptIds | None, length: int, side: str):
    """(ids, labels, audio_start) by brute force: column j of the padded row, one at a time."""
    ids, labels = [PAD] * length, [IGNORE_INDEX] * length
    if p is None:
        return ids, labels, 0
    offset = length - len(p.input_ids) if side == "left" else 0
    for j in range(length):
        k = j - offset
        if 0 <= k < len(p.input_ids):
            ids[j], labels[j] = p.input_ids[k], p.labels[k]
    return ids, labels, offset + p.audio_start


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("token_length,feat_length", [(None, None), (40, 9)])
def test_pad_batch_matches_brute_force(side, token_length, feat_length):
    feats, prompts = _rows()
    ctc = [[1, 2, 3], [4], None, []]
    b = pad_batch(feats, prompts, pad_id=PAD, token_length=token_length, feat_length=feat_length, side=side,
                  ctc_labels=ctc, example_index=[5, 6, -1, 7], audio_seconds=[0.5, 0.25, 0.0, 1.0])
    n_tok = [len(p.input_ids) if p else 0 for p in prompts]
    length = token_length or max(n_tok)
    t_max = feat_length or 7
    assert b.input_ids.shape == b.labels.shape == (4, length) and b.feats.shape == (4, t_max, 4)
    assert b.input_ids.dtype == b.labels.dtype == b.token_lengths.dtype == np.int32 and b.feats.dtype == np.float32
    assert b.token_lengths.tolist() == n_tok
    assert b.feat_lengths.tolist() == [5, 2, 0, 7]
    assert b.audio_tokens.tolist() == [3, 1, 0, 2]
    assert b.weight.tolist() == [1, 1, 0, 1]
    assert b.example_index.tolist() == [5, 6, -1, 7] and b.example_index.dtype == np.int32
    np.testing.assert_allclose(b.audio_seconds, [0.5, 0.25, 0.0, 1.0])
    for r, (f, p) in enumerate(zip(feats, prompts)):
        ids, labels, start = _expected_row(p, length, side)
        assert b.input_ids[r].tolist() == ids and b.labels[r].tolist() == labels
        assert int(b.audio_start[r]) == start
        t = 0 if f is None else len(f)
        np.testing.assert_array_equal(b.feats[r, :t], np.zeros((0, 4)) if f is None else f)
        assert not b.feats[r, t:].any()
        if p is None:
            continue
        # audio placeholders sit exactly at [audio_start, audio_start + N) (no text id is 0)
        assert np.flatnonzero(b.input_ids[r] == AUDIO_PLACEHOLDER_ID).tolist() == list(range(start, start + p.n_audio))
        # labels are IGNORE_INDEX everywhere but the target ids
        scored = np.flatnonzero(b.labels[r] != IGNORE_INDEX)
        assert len(scored) == p.num_target
        assert (b.labels[r, scored] == b.input_ids[r, scored]).all()
        valid = np.flatnonzero(b.input_ids[r] != PAD)
        assert valid.tolist() == (list(range(len(p.input_ids))) if side == "right"
                                  else list(range(length - len(p.input_ids), length)))
    assert b.ctc_labels.shape == (4, 3) and b.ctc_label_lengths.tolist() == [3, 1, 0, 0]
    assert b.ctc_labels.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_pad_batch_without_targets_or_extras():
    feats, prompts = _rows()
    b = pad_batch(feats[:2], prompts[:2], pad_id=PAD, side="left", targets=False)
    assert b.labels is None and b.weight is None and b.ctc_labels is None and b.example_index is None
    assert b.input_ids.shape == (2, max(len(p.input_ids) for p in prompts[:2]))


def test_pad_batch_refuses_what_does_not_fit():
    feats, prompts = _rows()
    with pytest.raises(ValueError, match="exceeds the padded length"):
        pad_batch(feats, prompts, pad_id=PAD, token_length=4)
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_batch(feats, prompts, pad_id=PAD, feat_length=6)
    with pytest.raises(ValueError, match="side"):
        pad_batch(feats, prompts, pad_id=PAD, side="middle")
    with pytest.raises(ValueError, match="prompts"):
        pad_batch(feats[:2], prompts, pad_id=PAD)
    with pytest.raises(ValueError, match="pass dim"):
        pad_feats([None, None])
    x, lengths = pad_feats([None, None], length=3, dim=560)
    assert x.shape == (2, 3, 560) and lengths.tolist() == [0, 0] and not x.any()
