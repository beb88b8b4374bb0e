"""The jitted pure train and eval steps.

State is a plain dict pytree {"step", "params", "opt_state", "rng"}. Losses are normalised by
the token / utterance counts of the whole optimizer step (all micro-batches), so gradient
accumulation gives the gradient of one large batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funasr_jax.models.funasr import FunASRNano
from funasr_jax.models.losses import IGNORE_ID, ctc_branch_loss, llm_cross_entropy

MODEL_INPUTS = ("feats", "feat_lengths", "input_ids", "token_lengths", "audio_start", "audio_tokens")


@dataclass(frozen=True)
class LossWeights:
    llm: float
    ctc: float
    ctc_blank: int
    ctc_impl: str | None = None


def batch_counts(batch: dict) -> dict[str, float]:
    """Host-side normalisers for one micro-batch: scored LLM tokens and CTC utterances."""
    w = np.asarray(batch["weight"]) > 0
    tokens = ((np.asarray(batch["labels"])[:, 1:] != IGNORE_ID) & w[:, None]).sum()
    utts = (w & (np.asarray(batch.get("ctc_label_lengths", np.zeros_like(w, dtype=np.int32))) > 0)).sum()
    return {"tokens": float(tokens), "utts": float(utts)}


def loss_fn(params, batch, rng, norm, *, model: FunASRNano, weights: LossWeights, deterministic=False):
    """Scalar loss whose gradient, summed over micro-batches, is the step's gradient.

    norm: {"tokens", "utts"} totals over the whole optimizer step (>= 1).
    """
    out = model.apply({"params": params}, *(batch[k] for k in MODEL_INPUTS),
                      deterministic=deterministic, with_llm=weights.llm > 0, with_ctc=weights.ctc > 0,
                      rngs={"dropout": rng})
    metrics = {}
    total = jnp.zeros((), jnp.float32)
    if weights.llm > 0:
        ce = llm_cross_entropy(out["logits"], batch["labels"], batch["weight"])
        total += weights.llm * ce["sum"] / norm["tokens"]
        metrics.update(llm_sum=ce["sum"], llm_count=ce["count"], llm_correct=ce["correct"])
    if weights.ctc > 0:
        c = ctc_branch_loss(out["ctc_logits"], out["enc_lengths"], batch["ctc_labels"],
                            batch["ctc_label_lengths"], blank_id=weights.ctc_blank,
                            row_weight=batch["weight"], implementation=weights.ctc_impl)
        total += weights.ctc * c["sum"] / norm["utts"]
        metrics.update(ctc_sum=c["sum"], ctc_count=c["count"])
    return total, metrics


def _freeze(params, mask):
    """stop_gradient on frozen leaves so XLA never computes their weight gradients."""
    return jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


def make_steps(model: FunASRNano, tx: optax.GradientTransformation, mask, weights: LossWeights):
    """Returns (grad_fn, update_fn, train_step, eval_fn), all pure and ready for jax.jit.

    grad_fn(params, batch, rng, norm) -> (grads, metrics)
    update_fn(state, grads) -> (state, {"grad_norm", "lr"-free stats})
    train_step(state, batch, norm) -> (state, metrics)   (one micro-batch: grad + update fused)
    eval_fn(params, batch) -> metrics (sums/counts, deterministic)
    """

    def grad_fn(params, batch, rng, norm):
        def f(p):
            return loss_fn(_freeze(p, mask), batch, rng, norm, model=model, weights=weights)

        (loss, metrics), grads = jax.value_and_grad(f, has_aux=True)(params)
        metrics["loss"] = loss
        return grads, metrics

    def update_fn(state, grads):
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        trainable = jax.tree_util.tree_map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
        gnorm = optax.global_norm(trainable)
        return {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}, {"grad_norm": gnorm}

    def train_step(state, batch, norm):
        rng, sub = jax.random.split(state["rng"])
        grads, metrics = grad_fn(state["params"], batch, sub, norm)
        state, stats = update_fn({**state, "rng": rng}, grads)
        return state, {**metrics, **stats}

    def eval_fn(params, batch):
        ones = {"tokens": jnp.ones(()), "utts": jnp.ones(())}
        _, metrics = loss_fn(params, batch, jax.random.PRNGKey(0), ones, model=model, weights=weights,
                             deterministic=True)
        return metrics

    return grad_fn, update_fn, train_step, eval_fn


def init_state(params, tx, seed: int) -> dict[str, Any]:
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": jax.random.PRNGKey(seed)}


def device_batch(batch: dict) -> dict:
    """Keep only the arrays the step uses (drop host-only fields)."""
    keep = MODEL_INPUTS + ("labels", "weight", "ctc_labels", "ctc_label_lengths")
    return {k: jnp.asarray(v) for k, v in batch.items() if k in keep}
