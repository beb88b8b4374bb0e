"""Brute-force CTC: the test oracle. Enumerates every frame-level path (V**T of them).

For each utterance b, every path pi in {0..V-1}^T_b whose collapse (merge repeats, drop blanks)
equals labels[b, :U_b] contributes prod_t softmax(logits[b, t])[pi_t]; the loss is
-log(sum of contributions). Labels and lengths must be concrete (numpy-able): the set of valid
paths is built in numpy; logits may be traced (the result is differentiable in them).
Only for tiny V and T (V**T paths per utterance).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from kernels._common import KernelInputError

MAX_PATHS = 1 << 16


def _collapse(path, blank_id):
    out, prev = [], None
    for p in path:
        if p != prev and p != blank_id:
            out.append(p)
        prev = p
    return tuple(out)


def ctc_loss(logits, logit_lengths, labels, label_lengths, *, blank_id):
    """Per-utterance negative log-likelihood [B] (f32; inf when no path exists)."""
    logits = jnp.asarray(logits)
    b, t, v = logits.shape
    logit_lengths = np.asarray(logit_lengths)
    labels = np.asarray(labels)
    label_lengths = np.asarray(label_lengths)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    losses = []
    for i in range(b):
        tb, ub = int(logit_lengths[i]), int(label_lengths[i])
        if v ** tb > MAX_PATHS:
            raise KernelInputError(f"brute-force CTC: {v}**{tb} paths is too many")
        target = tuple(int(x) for x in labels[i, :ub])
        paths = [p for p in itertools.product(range(v), repeat=tb) if _collapse(p, blank_id) == target]
        if not paths:
            losses.append(jnp.float32(jnp.inf))
            continue
        if tb == 0:
            losses.append(jnp.float32(0.0))
            continue
        idx = np.asarray(paths)                                    # [N, tb]
        scores = logp[i, jnp.arange(tb)[None, :], idx].sum(axis=1)  # [N]
        losses.append(-jax.nn.logsumexp(scores))
    return jnp.stack(losses)
