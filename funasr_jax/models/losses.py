"""Training losses: the LLM's masked next-token cross-entropy and the CTC branch loss.

Both return sums and counts as well as the mean so that gradient accumulation and data-parallel
reduction weight every token (or utterance) equally, as one large batch would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from funasr_jax.models.batch import IGNORE_INDEX
from kernels.ctc import ctc_loss


def llm_cross_entropy(logits, labels, row_weight=None):
    """HF-style causal LM loss (fun-asr-nano.md §6.6): position l predicts labels[l + 1].

    logits [B, L, V] (f32), labels [B, L] (IGNORE_INDEX = not scored), row_weight [B] (0 drops a
    padding row). Returns dict(loss = sum / count, sum, count, correct).
    """
    shift_logits = logits[:, :-1].astype(jnp.float32)
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    if row_weight is not None:
        valid &= (row_weight > 0)[:, None]
    safe = jnp.where(valid, targets, 0)
    logz = jax.nn.logsumexp(shift_logits, axis=-1)
    picked = jnp.take_along_axis(shift_logits, safe[..., None], axis=-1)[..., 0]
    nll = jnp.where(valid, logz - picked, 0.0)
    count = valid.sum()
    correct = jnp.where(valid, jnp.argmax(shift_logits, -1) == safe, False).sum()
    total = nll.sum()
    return {"loss": total / jnp.maximum(count, 1), "sum": total, "count": count, "correct": correct}


def ctc_branch_loss(ctc_logits, logit_lengths, labels, label_lengths, *, blank_id, row_weight=None,
                    implementation=None):
    """CTC loss of the CTC head, averaged per utterance over valid rows.

    ctc_logits [B, T, V] unnormalized; labels [B, Lc] padded past label_lengths. Impossible
    alignments count as 0 (zero_infinity) so one bad utterance cannot poison a step. A row with
    audio but an empty label (a noise-only clip) counts: its loss is that of the all-blank path,
    which teaches the head to emit nothing on noise; rows without audio (padding) do not.
    Returns dict(loss = sum / count, sum, count).
    """
    per_utt = ctc_loss(ctc_logits, logit_lengths, labels, label_lengths, blank_id=blank_id,
                       reduction="none", zero_infinity=True, implementation=implementation)
    w = jnp.ones_like(per_utt) if row_weight is None else (row_weight > 0).astype(per_utt.dtype)
    w = w * (logit_lengths > 0)
    total = (per_utt * w).sum()
    count = w.sum()
    return {"loss": total / jnp.maximum(count, 1.0), "sum": total, "count": count}
