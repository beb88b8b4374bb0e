"""Initialise SAN-M encoder blocks from Qwen3 decoder layers (the recipe's "LLM-layer initialisation").

`init_encoder_from_llm(encoder_params, llm_params, layer_map)` returns a copy of the encoder's
parameter tree (`params["audio_encoder"]` of `funasr_jax.models.funasr.init_params`) in which the
chosen encoder blocks take their weights from the chosen Qwen3 layers (`params["llm"]`, or the
tree `funasr_jax.io.hf_qwen3.llm_params_from_hf` loads from Hugging Face). Pure: the inputs are
not modified; every tensor that is not written is the very same array (bit-equal).

Encoder block indices are global, in the order the encoder runs them:
0 = `encoders0/0`, 1 .. num_blocks-1 = `encoders/0 ..`, then `tp_encoders/0 ..`.
LLM layer i = `model/layers/{i}`. Block 0 takes the 560-dim LFR features (input_size), so it only
fits when input_size equals the LLM hidden size. Blocks and layers are addressed by their
per-layer names "0", "1", ...; trees whose stacks are stacked at rest (`scan_layers=True`:
`<stack>/stacked/...` [L, ...], `funasr_jax.models.stack`) are unstacked on the way in and the
encoder comes back in the layout it was given (bit-exact); any other stack keying is rejected.

Mapping for one (encoder block E, LLM layer L); flax Dense kernels are [in, out], D = d_model =
LLM hidden, F = encoder output_size = heads * head_dim, U = FFN width, Hq / Hkv / hd = LLM query
heads / kv heads / head dim, I = LLM intermediate size:

| encoder tensor (E/...)                 | shape     | <- Qwen3 tensor (L/...)                                   |
|----------------------------------------|-----------|-----------------------------------------------------------|
| self_attn/linear_q_k_v/kernel          | [D, 3F]   | concat(self_attn/q_proj, k_proj, v_proj /kernel, axis 1)  |
|                                        |           | (q, k, v: the order the encoder's `jnp.split(qkv, 3)` uses)|
| self_attn/linear_q_k_v/bias            | [3F]      | zeros (Qwen3 has no q/k/v bias; copied if the tree has one)|
| self_attn/linear_out/kernel            | [F, D]    | self_attn/o_proj/kernel [Hq*hd, D]                        |
| self_attn/linear_out/bias              | [D]       | zeros                                                     |
| feed_forward/w_1/kernel                | [D, U]    | mlp/up_proj/kernel [D, I]                                 |
| feed_forward/w_1/bias                  | [U]       | zeros                                                     |
| feed_forward/w_2/kernel                | [U, D]    | mlp/down_proj/kernel [I, D]                               |
| feed_forward/w_2/bias                  | [D]       | zeros                                                     |
| norm1/scale (LayerNorm before attn)    | [D]       | input_layernorm/scale (RMSNorm) [D]                       |
| norm1/bias                             | [D]       | zeros                                                     |
| norm2/scale (LayerNorm before the FFN) | [D]       | post_attention_layernorm/scale [D]                        |
| norm2/bias                             | [D]       | zeros                                                     |
| self_attn/fsmn_block/kernel            | [K, 1, F] | none: the FSMN memory has no LLM counterpart, left as is   |

Dropped LLM tensors (no encoder counterpart): mlp/gate_proj (the SwiGLU gate: the encoder FFN is
ReLU(x W1) W2, so the copy keeps up/down only), self_attn/q_norm and k_norm (per-head RMSNorm),
and RoPE (not a parameter; the encoder has its own sinusoidal input encoding). The copied block
is therefore an initialisation, not a function-preserving conversion.

A bias is zeroed only when its kernel (or norm scale) is copied; with a skipped kernel both stay.
The encoder splits q/k/v into heads by a contiguous reshape, as Qwen3 does, so heads line up
when the encoder's head_dim F / heads equals the LLM's hd (checked when `encoder_heads` is given;
the parameter tree alone only shows widths).

GQA (Hkv < Hq: k_proj / v_proj are [D, Hkv*hd], narrower than the fused slice [D, F]), `gqa=`:
  "raise"  (default) a shape mismatch like any other (ValueError; strict=False skips the fused
           tensor and its bias whole);
  "repeat" kv head j is repeated for query heads j*g .. j*g+g-1 (g = Hq / Hkv), exactly HF's
           `repeat_kv`, giving [D, Hq*hd] (hd read from q_norm/scale [hd]);
  "skip"   only the q slice [:, :F] of the fused kernel is copied (bias [:F] zeroed); the k/v
           columns [:, F:] stay as initialised and are listed in `report.skipped`.

Errors: a shape mismatch raises ValueError naming the encoder path, the LLM path(s) and both
shapes (strict=False: skip the tensor and list it in `report.skipped`); a block / layer index
out of range raises IndexError naming the index and the available count; LoRA adapters in the
LLM layer raise ValueError (fold them first with `funasr_jax.models.lora.fold_lora`). Copied
values are cast to the encoder tensor's dtype (exact for float32 <- float32 / bfloat16).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax.numpy as jnp

from funasr_jax.models.config import EncoderConfig, FunASRConfig, Qwen3Config
from funasr_jax.models.stack import to_layout, unstack_layers

ENCODER_STACKS = ("encoders0", "encoders", "tp_encoders")
GQA_MODES = ("raise", "repeat", "skip")

# (encoder linear, Qwen3 linears): one Qwen3 kernel each, except the fused q/k/v.
_LINEARS = (
    ("self_attn/linear_q_k_v", ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj")),
    ("self_attn/linear_out", ("self_attn/o_proj",)),
    ("feed_forward/w_1", ("mlp/up_proj",)),
    ("feed_forward/w_2", ("mlp/down_proj",)),
)
_NORMS = (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"))
_DROPPED = ("mlp/gate_proj/kernel", "self_attn/q_norm/scale", "self_attn/k_norm/scale")
_NO_COUNTERPART = {"self_attn/fsmn_block/kernel": "FSMN memory block: no LLM counterpart, left as initialised"}


@dataclass(frozen=True)
class LLMInitReport:
    """What `init_encoder_from_llm` did; every path is '/'-joined inside its own tree
    (encoder paths relative to the encoder tree, LLM paths relative to the LLM tree).

    copied:    (encoder path, LLM source) per written tensor, e.g.
               ("encoders/0/self_attn/linear_out/kernel", "model/layers/3/self_attn/o_proj/kernel").
    zeroed:    encoder biases set to zero (the LLM has none).
    skipped:   (encoder path, LLM path or "", reason) per tensor of a mapped block not written:
               shape mismatches under strict=False, GQA k/v under gqa="skip", the FSMN kernel.
    dropped:   LLM tensors of the mapped layers with no encoder counterpart (gate_proj, q/k_norm).
    untouched: every encoder leaf left bit-equal to the input (skipped ones and unmapped blocks).
    """

    copied: tuple[tuple[str, str], ...]
    zeroed: tuple[str, ...]
    skipped: tuple[tuple[str, str, str], ...]
    dropped: tuple[str, ...]
    untouched: tuple[str, ...]

    def summary(self) -> str:
        return (f"LLM init: {len(self.copied)} copied, {len(self.zeroed)} zeroed, {len(self.skipped)} skipped, "
                f"{len(self.dropped)} LLM tensors dropped, {len(self.untouched)} encoder tensors untouched")


# ----------------------------------------------------------------------------- trees


def _unwrap(tree: Mapping) -> Mapping:
    """Drop a lone top-level 'params' wrapper; stacked stacks ([L, ...]) as per-layer children."""
    return unstack_layers(tree["params"] if set(tree) == {"params"} else tree)


def _get(tree: Mapping, path: str):
    node = tree
    for k in path.split("/"):
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def _copy_tree(tree: Mapping) -> dict:
    """Nested plain-dict copy; leaves are the same objects."""
    return {k: _copy_tree(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _leaf_paths(tree: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        p = f"{prefix}{k}"
        out.extend(_leaf_paths(v, p + "/") if isinstance(v, Mapping) else [p])
    return out


def _set(tree: dict, path: str, value) -> None:
    *head, last = path.split("/")
    for k in head:
        tree = tree[k]
    tree[last] = value


def _numbered(node: Mapping, where: str) -> list[str]:
    """Keys '0'..'n-1' of a layer stack, in order; raises on anything else (a stacked tree)."""
    keys = list(node)
    if sorted(map(str, keys)) != sorted(str(i) for i in range(len(keys))):
        raise ValueError(
            f"{where}: expected per-layer children '0', '1', ... (or a stacked 'stacked' child), got keys "
            f"{sorted(keys)}")
    return [str(i) for i in range(len(keys))]


def encoder_block_paths(encoder_params: Mapping) -> list[str]:
    """Global encoder block index -> path: ['encoders0/0', 'encoders/0', ..., 'tp_encoders/0', ...]."""
    enc = _unwrap(encoder_params)
    out = []
    for stack in ENCODER_STACKS:
        if stack in enc:
            out.extend(f"{stack}/{i}" for i in _numbered(enc[stack], f"encoder params '{stack}'"))
    if not out:
        raise ValueError(f"encoder params: no block stack {ENCODER_STACKS} found (top-level keys {sorted(enc)}); "
                         f"pass params['audio_encoder']")
    return out


def llm_layer_paths(llm_params: Mapping) -> list[str]:
    """LLM layer index -> path: ['model/layers/0', ...] (or 'layers/i' for a bare `Qwen3Model` tree)."""
    llm = _unwrap(llm_params)
    for prefix in ("model/layers", "layers"):
        node = _get(llm, prefix)
        if isinstance(node, Mapping):
            return [f"{prefix}/{i}" for i in _numbered(node, f"LLM params '{prefix}'")]
    raise ValueError(f"LLM params: no 'model/layers' found (top-level keys {sorted(llm)}); pass params['llm']")


def _pairs(layer_map) -> list[tuple[int, int]]:
    pairs = list(layer_map.items()) if isinstance(layer_map, Mapping) else [tuple(p) for p in layer_map]
    seen = set()
    for p in pairs:
        if len(p) != 2:
            raise ValueError(f"layer_map: expected (encoder block, LLM layer) pairs, got {p!r}")
        if p[0] in seen:
            raise ValueError(f"layer_map: encoder block {p[0]} is mapped twice")
        seen.add(p[0])
    return [(int(e), int(l)) for e, l in pairs]


# ----------------------------------------------------------------------------- the copy


def init_encoder_from_llm(encoder_params: Mapping, llm_params: Mapping,
                          layer_map: Mapping[int, int] | Sequence[tuple[int, int]], *,
                          strict: bool = True, gqa: str = "raise",
                          encoder_heads: int | None = None) -> tuple[dict, LLMInitReport]:
    """Copy Qwen3 layer weights into SAN-M encoder blocks (mapping table: module docstring).

    encoder_params: `params["audio_encoder"]` (nested dict / FrozenDict; a lone 'params' wrapper
      is accepted). llm_params: `params["llm"]` or an HF-loaded Qwen3 tree (`model/layers/{i}`).
    layer_map: {encoder block index: LLM layer index} or a sequence of such pairs; global encoder
      indices (0 = encoders0/0, then encoders/*, then tp_encoders/*), 0-based LLM layer indices.
    strict: a shape mismatch raises ValueError (encoder path, LLM path, both shapes); False skips
      the tensor (its bias too) and lists it in `report.skipped`.
    gqa: "raise" | "repeat" | "skip" — what to do when k/v_proj are narrower than the fused q/k/v
      slices (Qwen3 GQA), see the module docstring.
    encoder_heads: the encoder's attention_heads; when given, the encoder head_dim
      (output_size / heads) must equal the LLM's (q_norm/scale [hd]) for the q/k/v/o copy.

    Returns (new encoder params: a nested plain dict, same structure, leaves [same shape/dtype];
    LLMInitReport). Untouched leaves are the input's own arrays (per-layer input) or bit-equal copies
    (stacked input, which comes back stacked).
    """
    if gqa not in GQA_MODES:
        raise ValueError(f"init_encoder_from_llm: gqa must be one of {GQA_MODES}, got {gqa!r}")
    enc_in, llm = _unwrap(encoder_params), _unwrap(llm_params)
    blocks, layers = encoder_block_paths(enc_in), llm_layer_paths(llm)
    for e, l in _pairs(layer_map):
        if not 0 <= e < len(blocks):
            raise IndexError(f"layer_map: encoder block index {e} out of range: the encoder has {len(blocks)} "
                             f"blocks (0..{len(blocks) - 1}: {blocks[0]} .. {blocks[-1]})")
        if not 0 <= l < len(layers):
            raise IndexError(f"layer_map: LLM layer index {l} out of range: the LLM has {len(layers)} layers "
                             f"(0..{len(layers) - 1})")

    enc = _copy_tree(enc_in)
    copied, zeroed, skipped, dropped, written = [], [], [], [], set()

    def mismatch(enc_path, llm_path, want, got, why=""):
        msg = (f"init_encoder_from_llm: encoder {enc_path} has shape {tuple(want)} but LLM {llm_path} gives "
               f"{tuple(got)}{why}")
        if strict:
            raise ValueError(msg)
        skipped.append((enc_path, llm_path, msg))

    def put(enc_path, value, source):
        old = _get(enc, enc_path)
        _set(enc, enc_path, jnp.asarray(value).astype(old.dtype))
        written.add(enc_path)
        if source is None:
            zeroed.append(enc_path)
        else:
            copied.append((enc_path, source))

    for e, l in _pairs(layer_map):
        eb, lb = blocks[e], layers[l]
        lnode = _get(llm, lb)
        for sub in _leaf_paths(lnode):
            if any(a in sub.split("/") for a in ("lora_A", "lora_B")):
                raise ValueError(f"init_encoder_from_llm: LLM {lb}/{sub} is a LoRA adapter; fold the adapters into "
                                 f"the base kernels first (funasr_jax.models.lora.fold_lora)")
        dropped.extend(f"{lb}/{s}" for s in _DROPPED if _get(lnode, s) is not None)
        for sub, why in _NO_COUNTERPART.items():
            if _get(enc, f"{eb}/{sub}") is not None:
                skipped.append((f"{eb}/{sub}", "", why))
        for enc_lin, llm_lins in _LINEARS:
            _copy_linear(enc, llm, eb, lb, enc_lin, llm_lins, gqa, encoder_heads, mismatch, put, skipped)
        for enc_norm, llm_norm in _NORMS:
            ep, lp = f"{eb}/{enc_norm}/scale", f"{lb}/{llm_norm}/scale"
            target, src = _get(enc, ep), _get(llm, lp)
            if target is None or src is None:
                raise ValueError(f"init_encoder_from_llm: missing {'encoder ' + ep if target is None else 'LLM ' + lp}")
            if tuple(target.shape) != tuple(src.shape):
                mismatch(ep, lp, target.shape, src.shape)
                continue
            put(ep, src, lp)
            bias = _get(enc, f"{eb}/{enc_norm}/bias")
            if bias is not None:
                put(f"{eb}/{enc_norm}/bias", jnp.zeros(bias.shape, bias.dtype), None)

    untouched = tuple(p for p in _leaf_paths(enc) if p not in written)
    layout = encoder_params["params"] if set(encoder_params) == {"params"} else encoder_params
    return to_layout(enc, layout), LLMInitReport(tuple(copied), tuple(zeroed), tuple(skipped), tuple(dropped),
                                                 untouched)


def _copy_linear(enc, llm, eb, lb, enc_lin, llm_lins, gqa, encoder_heads, mismatch, put, skipped):
    """One encoder Dense (kernel + bias) from one Qwen3 projection, or the fused q/k/v from three."""
    kp, bp = f"{eb}/{enc_lin}/kernel", f"{eb}/{enc_lin}/bias"
    target, bias = _get(enc, kp), _get(enc, bp)
    srcs = [f"{lb}/{n}/kernel" for n in llm_lins]
    ws = [_get(llm, s) for s in srcs]
    if target is None:
        raise ValueError(f"init_encoder_from_llm: encoder {kp} not found")
    for s, w in zip(srcs, ws):
        if w is None:
            raise ValueError(f"init_encoder_from_llm: LLM {s} not found")
    llm_biases = [_get(llm, f"{lb}/{n}/bias") for n in llm_lins]
    src_desc = " ++ ".join(srcs)

    hd_node = _get(llm, f"{lb}/self_attn/q_norm/scale")
    hd = None if hd_node is None else int(hd_node.shape[0])
    if encoder_heads is not None and enc_lin.startswith("self_attn/") and hd is not None:
        width = target.shape[1] // 3 if len(llm_lins) == 3 else target.shape[0]
        if width % encoder_heads or width // encoder_heads != hd:
            mismatch(kp, src_desc, target.shape, [w.shape for w in ws],
                     f" (encoder head_dim {width}/{encoder_heads} != LLM head_dim {hd}: heads would not line up)")
            return

    if len(llm_lins) == 1:
        value, b = ws[0], llm_biases[0]
    else:
        q, k, v = ws
        f = target.shape[1] // 3
        qb, kb, vb = llm_biases
        if k.shape != q.shape or v.shape != q.shape:
            if gqa == "raise":
                mismatch(kp, src_desc, target.shape, [w.shape for w in ws],
                         f" (GQA: k/v_proj are narrower than q_proj; pass gqa='repeat' or gqa='skip')")
                return
            if gqa == "skip":
                if tuple(q.shape) != (target.shape[0], f):
                    mismatch(kp, srcs[0], (target.shape[0], f), q.shape, " (the q slice [:, :F] of the fused kernel)")
                    return
                put(kp, jnp.concatenate([jnp.asarray(q).astype(target.dtype), target[:, f:]], axis=1),
                    f"{srcs[0]} -> [:, :{f}] only")
                skipped.append((f"{kp}[:, {f}:]", f"{srcs[1]} ++ {srcs[2]}",
                                f"GQA k/v_proj {tuple(k.shape)} / {tuple(v.shape)} do not fill the k/v slices "
                                f"[{target.shape[0]}, {f}] each (gqa='skip'): left as initialised"))
                if bias is not None:
                    qbv = jnp.zeros((f,), bias.dtype) if qb is None else jnp.asarray(qb).astype(bias.dtype)
                    put(bp, jnp.concatenate([qbv, bias[f:]]), None if qb is None else f"{lb}/self_attn/q_proj/bias")
                return
            # gqa == "repeat"
            if hd is None or q.shape[1] % hd or k.shape[1] % hd or q.shape[1] % k.shape[1]:
                mismatch(kp, src_desc, target.shape, [w.shape for w in ws],
                         f" (gqa='repeat' needs q/k widths that are multiples of the head dim {hd})")
                return
            g = q.shape[1] // k.shape[1]
            rep = lambda w: jnp.repeat(jnp.asarray(w).reshape(w.shape[0], -1, hd), g, axis=1).reshape(w.shape[0], -1)
            k, v = rep(k), rep(v)
            kb = None if kb is None else jnp.repeat(jnp.asarray(kb).reshape(-1, hd), g, axis=0).reshape(-1)
            vb = None if vb is None else jnp.repeat(jnp.asarray(vb).reshape(-1, hd), g, axis=0).reshape(-1)
            src_desc = f"{srcs[0]} ++ repeat_kv({srcs[1]}, {g}) ++ repeat_kv({srcs[2]}, {g})"
        value = jnp.concatenate([jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)], axis=1)
        b = None if any(x is None for x in (qb, kb, vb)) else jnp.concatenate([jnp.asarray(x) for x in (qb, kb, vb)])

    if tuple(value.shape) != tuple(target.shape):
        mismatch(kp, src_desc, target.shape, value.shape)
        return
    put(kp, value, src_desc)
    if bias is not None:
        if b is not None and tuple(b.shape) == tuple(bias.shape):
            put(bp, b, src_desc.replace("/kernel", "/bias"))
        else:
            put(bp, jnp.zeros(bias.shape, bias.dtype), None)


# ----------------------------------------------------------------------------- configs


def encoder_config_like_llm(llm_cfg: Qwen3Config, base: EncoderConfig) -> EncoderConfig:
    """`base` with blocks of the LLM's shapes: output_size = hidden_size, attention_heads =
    num_attention_heads, linear_units = intermediate_size. Raises ValueError when the LLM's
    heads * head_dim != hidden_size (the SAN-M head dim is output_size / heads)."""
    if llm_cfg.num_attention_heads * llm_cfg.head_dim != llm_cfg.hidden_size:
        raise ValueError(
            f"encoder_config_like_llm: LLM num_attention_heads {llm_cfg.num_attention_heads} * head_dim "
            f"{llm_cfg.head_dim} != hidden_size {llm_cfg.hidden_size}; a SAN-M block's attention width is its d_model")
    return dataclasses.replace(base, output_size=llm_cfg.hidden_size, attention_heads=llm_cfg.num_attention_heads,
                               linear_units=llm_cfg.intermediate_size)


def funasr_config_like_llm(base: FunASRConfig, llm_cfg: Qwen3Config | None = None) -> FunASRConfig:
    """`base` with `llm_cfg` (default base.llm) and an encoder shaped like it
    (`encoder_config_like_llm`); the adaptor's and CTC decoder's encoder_dim follow. Validated."""
    llm_cfg = base.llm if llm_cfg is None else llm_cfg
    enc = encoder_config_like_llm(llm_cfg, base.encoder)
    ctc = dataclasses.replace(base.ctc, decoder=dataclasses.replace(base.ctc.decoder, encoder_dim=enc.output_size))
    return base.replace(encoder=enc, llm=llm_cfg, ctc=ctc,
                        adaptor=dataclasses.replace(base.adaptor, encoder_dim=enc.output_size,
                                                    llm_dim=llm_cfg.hidden_size)).validate()
