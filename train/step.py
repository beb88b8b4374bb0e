"""The jitted pure train and eval steps.

State is a plain dict pytree {"step", "params", "opt_state", "rng"}; a batch is a
`funasr_jax.models.batch.Batch`. Losses are normalised by the token / utterance counts of the
whole optimizer step (all micro-batches), so gradient accumulation gives the gradient of one
large batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funasr_jax.models.batch import IGNORE_INDEX, Batch
from funasr_jax.models.funasr import FunASRNano, lm_head_params
from funasr_jax.models.aed import label_smoothing_loss
from funasr_jax.models.bestrq import bestrq_loss
from funasr_jax.models.losses import ctc_branch_loss, llm_cross_entropy_from_hidden


@dataclass(frozen=True)
class LossWeights:
    llm: float
    ctc: float
    ctc_blank: int
    ctc_impl: str | None = None
    bestrq: float = 0.0  # weight of the Best-RQ masked-prediction loss (model.bestrq.enabled)
    aed: float = 0.0  # weight of the AED decoder's label-smoothed loss (model.aed.enabled)
    aed_smoothing: float = 0.1


def batch_counts(batch: Batch) -> dict[str, float]:
    """Host-side normalisers for one micro-batch: scored LLM tokens and CTC utterances."""
    w = np.asarray(batch.weight) > 0
    tokens = ((np.asarray(batch.labels)[:, 1:] != IGNORE_INDEX) & w[:, None]).sum()
    ctc_lengths = batch.ctc_label_lengths if batch.ctc_label_lengths is not None else np.zeros_like(w, np.int32)
    utts = (w & (np.asarray(ctc_lengths) > 0)).sum()
    return {"tokens": float(tokens), "utts": float(utts)}


def loss_fn(params, batch: Batch, rng, norm, *, model: FunASRNano, weights: LossWeights, deterministic=False):
    """Scalar loss whose gradient, summed over micro-batches, is the step's gradient.

    norm: {"tokens", "utts"} totals over the whole optimizer step (>= 1). The Best-RQ term is the
    mean over this micro-batch's masked frames (its mask is drawn inside the step).
    """
    metrics = {}
    total = jnp.zeros((), jnp.float32)
    if weights.bestrq > 0:
        mask_rng, rng = jax.random.split(rng)
        rq = model.apply({"params": params}, batch.feats, batch.feat_lengths, mask_rng, deterministic,
                         method=FunASRNano.bestrq_outputs, rngs={"dropout": rng})
        b = bestrq_loss(rq["logits"], rq["targets"], rq["mask"], batch.weight)
        total += weights.bestrq * b["loss"]
        metrics.update(bestrq_sum=b["sum"], bestrq_count=b["count"], bestrq_correct=b["correct"])
        if weights.llm == 0 and weights.ctc == 0 and weights.aed == 0:
            return total, metrics
    out = model.apply({"params": params}, batch, deterministic=deterministic, with_llm=weights.llm > 0,
                      with_ctc=weights.ctc > 0, with_aed=weights.aed > 0, with_logits=False, rngs={"dropout": rng})
    if weights.llm > 0:  # LM head only at scored positions, a chunk at a time (never [B, L, V])
        def head(head_params, h):
            return model.apply({"params": head_params}, h, method=FunASRNano.lm_logits)

        ce = llm_cross_entropy_from_hidden(out["hidden"], batch.labels, head, lm_head_params(params), batch.weight)
        total += weights.llm * ce["sum"] / norm["tokens"]
        metrics.update(llm_sum=ce["sum"], llm_count=ce["count"], llm_correct=ce["correct"])
    if weights.ctc > 0:
        c = ctc_branch_loss(out["ctc_logits"], out["enc_lengths"], batch.ctc_labels, batch.ctc_label_lengths,
                            blank_id=weights.ctc_blank, row_weight=batch.weight, implementation=weights.ctc_impl)
        total += weights.ctc * c["sum"] / norm["utts"]
        metrics.update(ctc_sum=c["sum"], ctc_count=c["count"])
    if weights.aed > 0:  # FunASR: summed over tokens, divided by the utterances (length_normalized_loss false)
        a = label_smoothing_loss(out["aed_logits"], out["aed_targets"], weights.aed_smoothing, batch.weight)
        total += weights.aed * a["sum"] / norm["utts"]
        metrics.update(aed_sum=a["sum"], aed_count=a["count"], aed_correct=a["correct"])
    return total, metrics


def stop_frozen_gradients(params, mask):
    """stop_gradient on frozen leaves (mask False) so XLA never computes their weight gradients."""
    return jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p), params, mask)


class StepFns(NamedTuple):
    """The pure step functions of one stage, ready for jax.jit (train/sharded.py jits them).

    grad(params, batch, rng, norm) -> (grads, metrics)
    update(state, grads) -> (state, {"grad_norm"})
    train(state, batch, norm) -> (state, metrics)   (one micro-batch: grad + update fused)
    eval(params, batch) -> metrics (sums / counts, deterministic)
    accumulate(state, micro, norm, grad_sharding=None) -> (state, metrics): the k micro-batches
      of one optimizer step stacked [k, B, ...] (`accumulate_grads`), one update; what the loop runs
    """

    grad: Callable
    update: Callable
    train: Callable
    eval: Callable
    accumulate: Callable


def make_steps(model: FunASRNano, tx: optax.GradientTransformation, mask, weights: LossWeights, *,
               skip_nonfinite: bool = False) -> StepFns:
    """skip_nonfinite (`run.on_nonfinite="skip"`): a step whose loss or gradient norm is not finite
    keeps the params and optimizer state it started from (step count and RNG still advance)."""

    def guard(old, new, metrics):
        if not skip_nonfinite:
            return new
        ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        keep = lambda a, b: jnp.where(ok, b, a)  # noqa: E731
        return {**new, "params": jax.tree_util.tree_map(keep, old["params"], new["params"]),
                "opt_state": jax.tree_util.tree_map(keep, old["opt_state"], new["opt_state"])}

    def grad_fn(params, batch, rng, norm):
        def f(p):
            return loss_fn(stop_frozen_gradients(p, mask), batch, rng, norm, model=model, weights=weights)

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
        new, stats = update_fn({**state, "rng": rng}, grads)
        return guard(state, new, {**metrics, **stats}), {**metrics, **stats}

    def eval_fn(params, batch):
        ones = {"tokens": jnp.ones(()), "utts": jnp.ones(())}
        _, metrics = loss_fn(params, batch, jax.random.PRNGKey(0), ones, model=model, weights=weights,
                             deterministic=True)
        return metrics

    def accumulate(state, micro: Batch, norm, grad_sharding=None):
        """One optimizer step over k micro-batches stacked along a leading axis (feats [k, B, T,
        560], input_ids [k, B, L], ...): grads and metrics summed over them, then one update.

        norm: the step's totals over all k micro-batches (`step_counts`). k = 1 is `train_step`
        itself (same RNG split, same program). k > 1 splits the state's key once more into k
        keys, one per micro-batch. grad_sharding: the params' shardings, kept on the f32 sum.
        """
        k = micro.feats.shape[0]
        if k == 1:
            return train_step(state, jax.tree_util.tree_map(lambda x: x[0], micro), norm)
        rng, sub = jax.random.split(state["rng"])
        grads, metrics = accumulate_grads(grad_fn, state["params"], mask, micro, jax.random.split(sub, k), norm,
                                          grad_sharding)
        new, stats = update_fn({**state, "rng": rng}, grads)
        return guard(state, new, {**metrics, **stats}), {**metrics, **stats}

    return StepFns(grad_fn, update_fn, train_step, eval_fn, accumulate)


def accumulate_grads(grad_fn, params, mask, micro: Batch, keys, norm, shardings=None):
    """Sum of `grad_fn(params, micro[i], keys[i], norm)` over the leading axis of `micro`, in one
    `lax.scan`: (grads like params, metrics summed in f32).

    Only trainable leaves (mask True) are carried, summed in f32 and returned in the params'
    dtype; frozen leaves get zeros (what `stop_frozen_gradients` gives them). shardings: a tree
    like params whose leaves constrain the carried sums (None: left to XLA).
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    trained = [i for i, m in enumerate(treedef.flatten_up_to(mask)) if m]
    placed = [None] * len(leaves) if shardings is None else treedef.flatten_up_to(shardings)

    def constrain(i, x):
        return x if placed[i] is None else jax.lax.with_sharding_constraint(x, placed[i])

    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    _, metric_shapes = jax.eval_shape(grad_fn, params, first, keys[0], norm)
    init = ([constrain(i, jnp.zeros(leaves[i].shape, jnp.float32)) for i in trained],
            jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, jnp.float32), metric_shapes))

    def body(carry, xs):
        sums, msums = carry
        batch, key = xs
        g, m = grad_fn(params, batch, key, norm)
        g = treedef.flatten_up_to(g)
        sums = [constrain(i, s + g[i].astype(jnp.float32)) for s, i in zip(sums, trained)]
        return (sums, jax.tree_util.tree_map(lambda a, v: a + v.astype(jnp.float32), msums, m)), None

    (sums, metrics), _ = jax.lax.scan(body, init, (micro, keys))
    out = [jnp.zeros(x.shape, x.dtype) for x in leaves]
    for s, i in zip(sums, trained):
        out[i] = s.astype(leaves[i].dtype)
    return treedef.unflatten(out), metrics


def step_counts(micro) -> dict[str, np.float32]:
    """The loss normalisers of one optimizer step (host side): scored LLM tokens and CTC
    utterances summed over its micro-batches (a sequence of `Batch`), each at least 1. A batch
    without labels / CTC labels (a stage that does not read them) counts 0 of that kind."""
    tokens = utts = 0.0
    for b in micro:
        w = np.asarray(b.weight) > 0
        if b.labels is not None:
            tokens += float(((np.asarray(b.labels)[:, 1:] != IGNORE_INDEX) & w[:, None]).sum())
        if b.ctc_label_lengths is not None:
            utts += float((w & (np.asarray(b.ctc_label_lengths) > 0)).sum())
    return {"tokens": np.float32(max(1.0, tokens)), "utts": np.float32(max(1.0, utts))}


def init_state(params, tx, seed: int) -> dict[str, Any]:
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": jax.random.PRNGKey(seed)}


def device_batch(batch: Batch) -> Batch:
    """The arrays a step reads (host-only fields dropped) as jax arrays, on the default device."""
    return batch.on_device_fields().map(jnp.asarray)
