"""`ctc_branch_loss`: rows with audio and an empty label (noise-only clips) are trained toward blanks."""

import itertools

import jax.numpy as jnp
import numpy as np

from funasr_jax.models.losses import ctc_branch_loss


def test_empty_label_row_counts_as_the_all_blank_path():
    rng = np.random.default_rng(0)
    b, t, v = 3, 6, 5
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    lengths = np.array([6, 4, 0], np.int32)      # row 2 is padding (no audio)
    labels = np.array([[1, 2, 0], [0, 0, 0], [0, 0, 0]], np.int32)
    label_lengths = np.array([2, 0, 0], np.int32)  # row 1: audio, empty transcript
    out = ctc_branch_loss(jnp.asarray(logits), jnp.asarray(lengths), jnp.asarray(labels),
                          jnp.asarray(label_lengths), blank_id=0)
    assert float(out["count"]) == 2.0
    # brute force: the only alignment of an empty label is blank at every frame
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    blank_path = -logp[1, :4, 0].sum()
    # row 0 by brute force over all alignments of [1, 2] in 6 frames
    total = -np.inf
    for path in itertools.product(range(v), repeat=t):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        if collapsed == [1, 2]:
            total = np.logaddexp(total, sum(logp[0, i, k] for i, k in enumerate(path)))
    np.testing.assert_allclose(float(out["sum"]), blank_path - total, rtol=1e-4)
