"""AdamW with warmup + decay, gradient clipping, and stage freeze plans.

A freeze plan is a list of trainable path patterns (`audio_adaptor`, `audio_encoder`,
`llm:lora`, `ctc_decoder`, ...). Frozen leaves go through `optax.set_to_zero()` inside
`optax.multi_transform`, so they get no optimizer state at all and stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import optax

from funasr_jax.models.stack import stacked_depth
from train.config import OptimConfig

_LORA_LEAVES = ("lora_A", "lora_B")


def _is_lora(path: tuple[str, ...]) -> bool:
    return any(p in _LORA_LEAVES for p in path)


def path_matches(path: tuple[str, ...], pattern: str) -> bool:
    """`pattern` = "a/b" prefix of the param path, with an optional ":lora" suffix meaning only
    LoRA adapter leaves under that prefix; "*" matches everything."""
    lora_only = pattern.endswith(":lora")
    prefix = pattern[: -len(":lora")] if lora_only else pattern
    if prefix not in ("*", ""):
        parts = tuple(prefix.split("/"))
        if path[: len(parts)] != parts:
            return False
    return _is_lora(path) if lora_only else True


def _names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def trainable_mask(params, patterns: Sequence[str]):
    """Pytree of bools, True where a leaf is trained. Base weights under a `:lora` pattern stay
    frozen; a plain prefix trains everything under it (adapters included)."""
    def label(path, _):
        return any(path_matches(_names(path), p) for p in patterns)

    return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(cfg: OptimConfig, total_steps: int):
    warmup = max(0, min(cfg.warmup_steps, total_steps))
    decay_steps = max(1, total_steps - warmup)
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, floor, decay_steps)
    elif cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "inverse_sqrt":  # FunASR's "warmuplr"
        decay = lambda s: peak * jax.numpy.sqrt(max(warmup, 1) / jax.numpy.maximum(s + max(warmup, 1), 1.0))  # noqa: E731
    else:
        raise ValueError(f"optim.schedule: unknown schedule {cfg.schedule!r}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(cfg: OptimConfig, params, trainable_patterns: Sequence[str], total_steps: int):
    """optax transform for `params`: clip -> AdamW on trainable leaves; frozen leaves zeroed.

    Weight decay skips biases, norm gains and embeddings-free 1-D leaves (the usual rule), judged
    per layer: a stacked [L, D] norm gain is still a gain.
    Returns (tx, mask) where mask marks trainable leaves.
    """
    mask = trainable_mask(params, trainable_patterns)
    if not any(jax.tree_util.tree_leaves(mask)):
        raise ValueError(f"stage.trainable {list(trainable_patterns)} matches no parameter")
    # rank per layer: a stacked leaf's leading layer axis does not make a norm gain a matrix
    decay_mask = jax.tree_util.tree_map_with_path(lambda p, x: x.ndim - stacked_depth(_names(p)) >= 2, params)
    adamw = optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay, mask=decay_mask)
    train_tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw) if cfg.grad_clip > 0 else adamw
    labels = jax.tree_util.tree_map(lambda m: "train" if m else "freeze", mask)
    tx = optax.multi_transform({"train": train_tx, "freeze": optax.set_to_zero()}, labels)
    return tx, mask
