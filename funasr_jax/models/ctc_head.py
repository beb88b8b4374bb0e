"""CTC output layer and greedy decoding (the release's `ctc_decoder` + `ctc.ctc_lo`).

The CTC decoder body is `adaptor.Transformer`; this module holds the final projection
`ctc_lo` (D -> vocab) and pure helpers on its output.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.models.encoder import ModelInputError


class CTCLo(nn.Module):
    """One Dense named `ctc_lo`: [B, T, D] -> logits [B, T, vocab_size] float32."""

    vocab_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if x.ndim != 3:
            raise ModelInputError(f"CTC head input: expected [B, T, D], got shape {tuple(x.shape)}")
        y = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=jnp.float32, name="ctc_lo")(x.astype(self.dtype))
        return y.astype(jnp.float32)


def ctc_log_probs(logits):
    """log_softmax over the vocabulary in float32: [B, T, V] -> [B, T, V]."""
    return jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)


def ctc_greedy(log_probs, lengths, blank: int) -> list[list[int]]:
    """Best-path decoding: per-frame argmax over the first lengths[b] frames, collapse repeats,
    drop `blank`. log_probs [B, T, V] (logits work too), lengths [B] -> token ids per utterance.
    """
    best = np.asarray(jnp.argmax(jnp.asarray(log_probs), axis=-1))
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.shape[0] != best.shape[0]:
        raise ModelInputError(f"ctc_greedy: lengths has {lengths.shape[0]} entries for a batch of {best.shape[0]}")
    out = []
    for row, n in zip(best, lengths):
        row = row[: max(int(n), 0)]
        if row.size:
            keep = np.concatenate([[True], row[1:] != row[:-1]])
            row = row[keep]
        out.append([int(i) for i in row if i != blank])
    return out
