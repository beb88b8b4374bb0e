"""Logical axis names of every parameter of the models, derived from its PATH.

A parameter path is the '/'-joined key path of the nested params dict, which mirrors the
PyTorch state-dict names (`llm/model/layers/5/self_attn/q_proj/kernel`). `PARAM_RULES` is an
ordered table of (regex, logical axes); the first regex that `re.search`es the path wins and
must give one name per array dimension. A path matched by no rule is an error
(`UnmatchedParamError`), so a new parameter can never go silently unsharded. The table lives
with the models (a new layer adds its row here); `sharding/` maps the logical names to mesh
axes (`sharding.rules`) and never looks at model paths itself.

Logical names (`sharding.rules.LOGICAL_AXES`):
    batch         utterances in a batch
    length        time: LFR frames of 60 ms (encoder) or tokens (LLM)
    audio_frames  encoder / adaptor time axis when it is kept apart from `length`
    embed         model width (d_model / hidden_size / encoder input 560)
    heads         query heads x head_dim, flattened (or q|k|v fused in SAN-M)
    kv_heads      key/value heads x head_dim, flattened
    head_dim      one head's width (q_norm / k_norm scales)
    mlp           feed-forward hidden width
    vocab         LLM or CTC vocabulary
    lora          LoRA rank
    norm          norm gains / biases (never sharded)
    conv          FSMN kernel taps (never sharded)
    layers        the leading layer axis of a stack kept stacked at rest (`model.scan_layers`:
                  `.../stacked/...` leaves are [L, ...]); replicated by every rules table (each
                  device holds all layers; a pipeline axis could split it later)

A stacked leaf takes the rule of its per-layer path, with `layers` in front of it for each
`stacked` component of the path (`funasr_jax.models.stack`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax

from funasr_jax.models.stack import LAYER_AXIS, stacked_depth
from sharding.paths import path_str


class UnmatchedParamError(ValueError):
    """A parameter path matches no rule in the table, or its rank disagrees with the rule."""


# (regex searched in the '/'-joined path, logical axes per dimension). Order matters: LoRA and
# specific names before the generic ones.
PARAM_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    # --- LoRA adapters: keep the base weight's in/out axis, the rank axis unsharded.
    (r"(q_proj|gate_proj|up_proj)/lora_A/kernel$", ("embed", "lora")),
    (r"(k_proj|v_proj)/lora_A/kernel$", ("embed", "lora")),
    (r"o_proj/lora_A/kernel$", ("heads", "lora")),
    (r"down_proj/lora_A/kernel$", ("mlp", "lora")),
    (r"q_proj/lora_B/kernel$", ("lora", "heads")),
    (r"(k_proj|v_proj)/lora_B/kernel$", ("lora", "kv_heads")),
    (r"o_proj/lora_B/kernel$", ("lora", "embed")),
    (r"(gate_proj|up_proj)/lora_B/kernel$", ("lora", "mlp")),
    (r"down_proj/lora_B/kernel$", ("lora", "embed")),
    # --- Qwen3 LLM
    (r"embed_tokens/embedding$", ("vocab", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"q_proj/kernel$", ("embed", "heads")),
    (r"(k_proj|v_proj)/kernel$", ("embed", "kv_heads")),
    (r"o_proj/kernel$", ("heads", "embed")),
    (r"(gate_proj|up_proj)/kernel$", ("embed", "mlp")),
    (r"down_proj/kernel$", ("mlp", "embed")),
    (r"(q_norm|k_norm)/scale$", ("head_dim",)),
    # --- SAN-M encoder attention (fused q|k|v) and FSMN memory
    (r"linear_q_k_v/kernel$", ("embed", "heads")),
    (r"linear_q_k_v/bias$", ("heads",)),
    (r"fsmn_block/kernel$", ("conv", None, "heads")),
    # --- adaptor / CTC-decoder attention
    (r"linear_(q|k|v)/kernel$", ("embed", "heads")),
    (r"linear_(q|k|v)/bias$", ("heads",)),
    (r"linear_out/kernel$", ("heads", "embed")),
    (r"linear_out/bias$", ("embed",)),
    # --- feed-forward (encoder / adaptor blocks) and the adaptor's input projection
    (r"(w_1|linear1)/kernel$", ("embed", "mlp")),
    (r"(w_1|linear1)/bias$", ("mlp",)),
    (r"(w_2|linear2)/kernel$", ("mlp", "embed")),
    (r"(w_2|linear2)/bias$", ("embed",)),
    # --- CTC output layer
    (r"ctc_lo/kernel$", ("embed", "vocab")),
    (r"ctc_lo/bias$", ("vocab",)),
    # --- Best-RQ pre-training heads and the frozen quantiser (small: replicated)
    (r"bestrq_head/kernel$", ("embed", None)),
    (r"bestrq_head/bias$", (None,)),
    (r"bestrq_quantizer/(projection|codebooks)$", (None, None, None)),
    # --- AED pre-training decoder (FunASR TransformerDecoder names; attention / FFN rows above)
    (r"aed_decoder/embed/0/embedding$", ("vocab", "embed")),
    (r"aed_decoder/output_layer/kernel$", ("embed", "vocab")),
    (r"aed_decoder/output_layer/bias$", ("vocab",)),
    # --- norms (LayerNorm scale/bias, RMSNorm scale)
    (r"(norm\w*|layernorm\w*)/(scale|bias)$", ("norm",)),
)

_COMPILED = tuple((re.compile(p), axes) for p, axes in PARAM_RULES)


def logical_axes_for(path: str, ndim: int) -> tuple[str | None, ...]:
    """Logical axes of the parameter at `path` with `ndim` dimensions (first matching rule; a
    stacked leaf [L, ...] gets `layers` in front of its per-layer axes)."""
    depth = stacked_depth(path)
    if depth:
        if ndim < depth:
            raise UnmatchedParamError(f"parameter {path}: stacked {depth} deep but has only {ndim} dimensions")
        return (LAYER_AXIS,) * depth + _rule_axes(path, ndim - depth)
    return _rule_axes(path, ndim)


def _rule_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    for rx, axes in _COMPILED:
        if rx.search(path):
            if len(axes) != ndim:
                raise UnmatchedParamError(
                    f"parameter {path}: rule {rx.pattern!r} gives {len(axes)} axes {axes} but the array has "
                    f"{ndim} dimensions")
            return axes
    raise UnmatchedParamError(
        f"parameter {path} (rank {ndim}) matches no rule in funasr_jax.models.axes.PARAM_RULES; add one so it is "
        "sharded deliberately")


def param_logical_axes(params) -> Mapping:
    """Pytree like `params` whose leaves are tuples of logical axis names (wrapped in `Axes`)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: Axes(logical_axes_for(path_str(p), len(x.shape))), params)


class Axes(tuple):
    """A tuple of logical names that jax treats as one leaf (a tuple subclass is not a pytree
    node, unlike a plain tuple)."""
