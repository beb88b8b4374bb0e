"""GRPO for the LLM-ASR model: pure rollout and update functions (jitted on the mesh by train.sharded).

One GRPO step over a batch of B utterances (a training `Batch`: right-padded prompt + transcript,
the transcript only marks where the prompt ends) with G samples each, S = B x G rows:

  rollout(params, rng, batch) -> (completions [S, N] int32, lengths [S] int32)
      encoder + adaptor once per utterance, the prompt embeddings left-padded and repeated G times,
      then G sampled continuations per utterance (temperature / top-k / top-p, row s drawing with
      `fold_in(fold_in(rng, ROLLOUT_TAG), s)`) in one jitted KV-cache loop; EOS included, each row
      capped at ceil(tokens_per_second x its seconds) + token_slack (and N).
  host: detokenise, score with `funasr_jax.rewards` -> rewards [S] float32.
  update(state, batch, completions, lengths, rewards) -> (state, metrics)
      A = (R - mean_g R) / (std_g R + eps) within each utterance's group (0 where the group's
      rewards are all equal; std over the G samples, ddof 0), then `inner_steps` optimizer steps on
      the clipped token-level objective of the report's eq. (2) (`grpo_objective`):

        J = 1/sum_s w_s  sum_s w_s 1/|o_s| sum_t [ min(r_st A_s, clip(r_st, 1-eps, 1+eps) A_s)
                                                   - beta KL_st ],
        r_st = pi_theta(o_st) / pi_old(o_st),  KL_st = exp(q) - q - 1,  q = log pi_ref - log pi_theta

      (the k3 estimator), w_s = 1 for real utterances and 0 for padding rows; the loss is -J.
      Only completion tokens are scored: the prompt and everything past a row's EOS are masked.

pi_old is the rollout policy: the parameters that sampled the completions, scored teacher-forced
at temperature 1 without filters (the sampling temperature and top-k / top-p shape which tokens are
drawn, not the policy being optimised). With one inner step r = exp(logp - stop_gradient(logp))
= 1 and no extra forward; with more, pi_old's log-probs are computed once before the first.

pi_ref: with only LoRA adapters trained (the default), the same weights with the adapters switched
off (lora_B = 0: the base, i.e. the SFT model when training starts from fresh adapters) — no
second copy of the weights; otherwise a frozen copy of the initial params kept in the state as
`ref_params`. beta = 0 skips the reference forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funasr_jax.decode.generate import CausalDecoder, left_pad
from funasr_jax.decode.sample import SamplingConfig, row_keys_for, sample_tokens
from funasr_jax.models.batch import IGNORE_INDEX, Batch
from funasr_jax.models.funasr import FunASRNano, llm_module
from funasr_jax.models.lora import lora_param_filter
from sharding.paths import key_name
from train.step import stop_frozen_gradients

ROLLOUT_TAG = 0x5A17  # fold_in tag of the rollout's key (the update splits the state's key)


@dataclass(frozen=True)
class GRPOSettings:
    """What the pure GRPO functions need (built from `train.config.GRPOConfig` + the tokenizer)."""

    group_size: int
    sampling: SamplingConfig
    max_new_tokens: int
    clip_eps: float
    beta: float
    inner_steps: int
    adv_eps: float
    eos_id: int
    pad_id: int
    tokens_per_second: float
    token_slack: int
    frame_seconds: float = 0.06  # one LFR frame
    reference: str = "adapters_off"  # "adapters_off" | "copy" (state["ref_params"])


class GRPOStepFns(NamedTuple):
    """rollout(params, rng, batch) -> (completions, lengths); update(state, batch, completions,
    lengths, rewards) -> (state, metrics); init(params, tx, seed) -> state."""

    rollout: Callable
    update: Callable
    init: Callable


# --------------------------------------------------------------------------- pure pieces


def group_advantages(rewards, group: int, eps: float):
    """rewards [B x G] (groups contiguous) -> advantages [B x G]: (R - mean) / (std + eps) per
    group, exactly 0 in a group whose rewards are all equal."""
    r = rewards.reshape(-1, group).astype(jnp.float32)
    mean = r.mean(axis=1, keepdims=True)
    std = r.std(axis=1, keepdims=True)
    adv = (r - mean) / (std + eps)
    flat = (r.max(axis=1, keepdims=True) == r.min(axis=1, keepdims=True))
    return jnp.where(flat, 0.0, adv).reshape(-1)


def prompt_lengths(labels, token_lengths):
    """[B]: tokens before a row's first scored label (the prompt of a training row); 1 for a
    padding row (no labels)."""
    scored = labels != IGNORE_INDEX
    first = jnp.argmax(scored, axis=1)
    return jnp.where(scored.any(axis=1), first, jnp.maximum(token_lengths, 1)).astype(jnp.int32)


def completion_inputs(input_ids, p_len, completions, comp_len, group: int, pad_id: int):
    """Teacher-forcing rows of prompt + sampled completion.

    input_ids [B, L] (prompt at [0, p_len)), completions [S, N], comp_len [S], S = B x G.
    Returns (ids [S, L + N], token_lengths [S] = p + len, p [S] repeated prompt lengths).
    """
    ids = jnp.repeat(input_ids, group, axis=0)
    p = jnp.repeat(p_len, group)
    n = completions.shape[1]
    pos = jnp.arange(ids.shape[1] + n)[None, :]
    prompt = jnp.pad(ids, ((0, 0), (0, n)), constant_values=pad_id)
    rel = pos - p[:, None]
    comp = jnp.take_along_axis(completions, jnp.clip(rel, 0, n - 1), axis=1)
    seq = jnp.where(pos < p[:, None], prompt, jnp.where(rel < comp_len[:, None], comp, pad_id))
    return seq.astype(jnp.int32), (p + comp_len).astype(jnp.int32), p


def completion_mask(comp_len, n: int):
    """[S, N] bool: True on a row's completion tokens (EOS included)."""
    return jnp.arange(n)[None, :] < comp_len[:, None]


def grpo_objective(logp, old_logp, ref_logp, advantages, mask, weight, *, clip_eps: float, beta: float):
    """The loss -J of eq. (2) (module docstring) and its diagnostics.

    logp / old_logp / ref_logp [S, N] f32 (ref_logp may be None when beta = 0); advantages [S];
    mask [S, N] bool; weight [S] (0 drops a row). Returns (loss, {"kl", "clip_frac", "ratio"}):
    token means over the scored tokens of weighted rows.
    """
    m = mask.astype(jnp.float32) * (weight > 0)[:, None]
    ratio = jnp.exp(logp - old_logp)
    a = advantages[:, None]
    surrogate = jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)
    if beta > 0:
        q = ref_logp - logp
        kl = jnp.exp(q) - q - 1.0
    else:
        kl = jnp.zeros_like(logp)
    per_token = surrogate - beta * kl
    n_tok = jnp.maximum(m.sum(axis=1), 1.0)
    per_row = (per_token * m).sum(axis=1) / n_tok
    w = (weight > 0).astype(jnp.float32)
    loss = -(per_row * w).sum() / jnp.maximum(w.sum(), 1.0)
    clipped = ((a > 0) & (ratio > 1.0 + clip_eps)) | ((a < 0) & (ratio < 1.0 - clip_eps))
    tok = jnp.maximum(m.sum(), 1.0)
    return loss, {"kl": (kl * m).sum() / tok, "clip_frac": (clipped * m).sum() / tok,
                  "ratio": (ratio * m).sum() / tok}


def adapters_off(params):
    """params with every lora_B kernel zeroed: the LoRA model's base (no copy of the weights)."""
    def f(path, x):
        names = [key_name(k) for k in path]
        return jnp.zeros_like(x) if lora_param_filter(path) and "lora_B" in names else x

    return jax.tree_util.tree_map_with_path(f, params)


def only_adapters_trained(mask) -> bool:
    """True when every trained leaf of the freeze mask is a LoRA adapter."""
    leaves = jax.tree_util.tree_leaves_with_path(mask)
    return all(lora_param_filter(p) for p, m in leaves if m) and any(m for _, m in leaves)


# --------------------------------------------------------------------------- model calls


def token_logprobs(model: FunASRNano, params, batch: Batch, seq, seq_len, p_rep, completions, group: int):
    """log pi(o_st | prompt, o_s<t) [S, N] and the policy's entropy per position [S, N] (f32),
    teacher-forced, deterministic. The encoder + adaptor run once per utterance."""
    n = completions.shape[1]

    def f(module, feats, feat_lengths, seq, seq_len, audio_start, audio_tokens):
        adapted, _, _ = module.audio_embeds(feats, feat_lengths, True)
        adapted = jnp.repeat(adapted, group, axis=0)
        emb = module.embed_prompt(seq, adapted, jnp.repeat(audio_start, group), jnp.repeat(audio_tokens, group))
        h, _ = module.llm(emb, lengths=seq_len, deterministic=True, return_hidden=True)
        idx = jnp.clip(p_rep[:, None] - 1 + jnp.arange(n)[None, :], 0, h.shape[1] - 1)  # predicts o_st
        return module.llm.logits_from_hidden(jnp.take_along_axis(h, idx[..., None], axis=1))

    logits = model.apply({"params": params}, batch.feats, batch.feat_lengths, seq, seq_len, batch.audio_start,
                         batch.audio_tokens, method=f).astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, completions[..., None], axis=-1)[..., 0]
    entropy = logz - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
    return picked - logz, entropy


def rollout_fn(model: FunASRNano, s: GRPOSettings):
    decoder = CausalDecoder(llm_module(model.cfg))

    def rollout(params, rng, batch: Batch):
        p_len = prompt_lengths(batch.labels, batch.token_lengths)

        def f(module, feats, feat_lengths, ids, audio_start, audio_tokens):
            adapted, _, _ = module.audio_embeds(feats, feat_lengths, True)
            return module.embed_prompt(ids, adapted, audio_start, audio_tokens)

        emb = model.apply({"params": params}, batch.feats, batch.feat_lengths, batch.input_ids, batch.audio_start,
                          batch.audio_tokens, method=f)
        emb = jnp.repeat(left_pad(emb, p_len), s.group_size, axis=0)
        p_rep = jnp.repeat(p_len, s.group_size)
        seconds = jnp.repeat(batch.feat_lengths, s.group_size).astype(jnp.float32) * s.frame_seconds
        limits = jnp.clip(jnp.ceil(s.tokens_per_second * seconds - 1e-6).astype(jnp.int32) + s.token_slack, 1,
                          s.max_new_tokens)
        keys = row_keys_for(jax.random.fold_in(rng, ROLLOUT_TAG), emb.shape[0])
        tokens, lengths = sample_tokens(decoder, params["llm"], emb, p_rep, keys, limits,
                                        max_new_tokens=s.max_new_tokens, eos_id=s.eos_id, pad_id=s.pad_id,
                                        cfg=s.sampling)
        return tokens, lengths

    return rollout


def make_grpo_steps(model: FunASRNano, tx: optax.GradientTransformation, mask, s: GRPOSettings) -> GRPOStepFns:
    """The pure GRPO rollout / update / init of one stage (module docstring)."""
    g = s.group_size

    def reference_params(state):
        return adapters_off(state["params"]) if s.reference == "adapters_off" else state["ref_params"]

    def update(state, batch: Batch, completions, comp_len, rewards):
        n = completions.shape[1]
        p_len = prompt_lengths(batch.labels, batch.token_lengths)
        seq, seq_len, p_rep = completion_inputs(batch.input_ids, p_len, completions, comp_len, g, s.pad_id)
        tok_mask = completion_mask(comp_len, n)
        weight = jnp.repeat(batch.weight, g)
        adv = group_advantages(rewards, g, s.adv_eps) * (weight > 0)

        def logprobs(p):
            return token_logprobs(model, p, batch, seq, seq_len, p_rep, completions, g)

        ref = jax.lax.stop_gradient(logprobs(reference_params(state))[0]) if s.beta > 0 else None
        old = jax.lax.stop_gradient(logprobs(state["params"])[0]) if s.inner_steps > 1 else None

        def loss_fn(p):
            lp, ent = logprobs(stop_frozen_gradients(p, mask))
            loss, m = grpo_objective(lp, jax.lax.stop_gradient(lp) if old is None else old, ref, adv, tok_mask,
                                     weight, clip_eps=s.clip_eps, beta=s.beta)
            mw = tok_mask * (weight > 0)[:, None]
            m["entropy"] = (ent * mw).sum() / jnp.maximum(mw.sum(), 1)
            return loss, m

        params, opt_state = state["params"], state["opt_state"]
        metrics = None
        for _ in range(s.inner_steps):
            (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            trained = jax.tree_util.tree_map(lambda x, k: x if k else jnp.zeros_like(x), grads, mask)
            m = {**m, "loss": loss, "grad_norm": optax.global_norm(trained)}
            metrics = m if metrics is None else metrics  # diagnostics of the first inner step (at pi_old)
        w = (weight > 0).astype(jnp.float32)
        nw = jnp.maximum(w.sum(), 1.0)
        metrics = {**metrics, "reward": (rewards * w).sum() / nw, "out_len": (comp_len * w).sum() / nw,
                   "adv_abs": (jnp.abs(adv) * w).sum() / nw}
        rng, _ = jax.random.split(state["rng"])
        return {**state, "params": params, "opt_state": opt_state, "rng": rng, "step": state["step"] + 1}, metrics

    def init(params, tx_, seed: int) -> dict[str, Any]:
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx_.init(params),
                 "rng": jax.random.PRNGKey(seed)}
        if s.reference == "copy":
            state["ref_params"] = jax.tree_util.tree_map(jnp.copy, params)
        return state

    return GRPOStepFns(rollout_fn(model, s), update, init)
