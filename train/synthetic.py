"""Synthetic batches and random params shaped like the PyTorch anchor's (for the bench, planner, tests).

Shapes (as FunASR's PyTorch training benchmark uses them): LFR frames T of `seconds` of 16 kHz
audio (`funasr_jax.audio.frontend`: fbank 25/10 ms snip_edges, then LFR 7/6), N =
audio_token_count(T) audio rows, LLM tokens L = round_up(23 prompt + N + text + 5, 16) with
text = 100 tokens for >= 30 s, else 30; CTC labels = the text tokens.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.audio.frontend import num_fbank_frames, num_lfr_frames
from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID, IGNORE_INDEX, Batch
from funasr_jax.models.config import audio_token_count
from funasr_jax.models.stack import stacked_depth
from sharding.paths import path_str

PROMPT_TOKENS = 23
SPECIAL_TOKENS = 5



def lfr_frames(seconds: float) -> int:
    """LFR frames (60 ms) of `seconds` of 16 kHz audio: fbank 25/10 ms snip_edges, then LFR 7/6."""
    return num_lfr_frames(num_fbank_frames(int(round(seconds * 16000))))


def anchor_shapes(seconds: float, text_tokens: int | None = None) -> dict:
    t = lfr_frames(seconds)
    n = int(audio_token_count(t))
    text = text_tokens if text_tokens is not None else (100 if seconds >= 30 else 30)
    used = PROMPT_TOKENS + n + text + SPECIAL_TOKENS
    return {"lfr_frames": t, "audio_tokens": n, "text_tokens": text, "llm_tokens": -(-used // 16) * 16,
            "used_tokens": used}


def synthetic_batch(model_cfg, batch: int, seconds: float, *, text_tokens: int | None = None, seed: int = 0,
                    ctc: bool = True) -> Batch:
    """A `Batch` of numpy arrays like the data pipeline's, random ids and features."""
    s = anchor_shapes(seconds, text_tokens)
    t, n, text, length, used = s["lfr_frames"], s["audio_tokens"], s["text_tokens"], s["llm_tokens"], s["used_tokens"]
    rng = np.random.default_rng(seed)
    v = model_cfg.llm.vocab_size
    ids = rng.integers(1, v, (batch, length)).astype(np.int32)
    ids[:, used:] = 0
    ids[:, PROMPT_TOKENS:PROMPT_TOKENS + n] = AUDIO_PLACEHOLDER_ID
    labels = np.full((batch, length), IGNORE_INDEX, np.int32)
    tgt = slice(PROMPT_TOKENS + n, used)
    labels[:, tgt] = ids[:, tgt]
    out = Batch(
        feats=rng.standard_normal((batch, t, model_cfg.encoder.input_size)).astype(np.float32),
        feat_lengths=np.full((batch,), t, np.int32),
        input_ids=ids, labels=labels,
        token_lengths=np.full((batch,), used, np.int32),
        audio_start=np.full((batch,), PROMPT_TOKENS, np.int32),
        audio_tokens=np.full((batch,), n, np.int32),
        weight=np.ones((batch,), np.float32),
        example_index=np.arange(batch, dtype=np.int32),
        audio_seconds=np.full((batch,), seconds, np.float32),
    )
    if ctc and model_cfg.ctc.enabled:
        vc = model_cfg.ctc.vocab_size
        blank = model_cfg.ctc.blank
        lab = rng.integers(0, vc - 1, (batch, text)).astype(np.int32)
        lab[lab >= blank] += 1 if blank < vc - 1 else 0
        out = out.replace(ctc_labels=lab, ctc_label_lengths=np.full((batch,), min(text, t // 2), np.int32))
    return out


def random_params(abstract, shardings=None, seed: int = 0):
    """Random f32 params with the shapes of `abstract`, made on device(s) by one cheap jit.

    Kernels ~ N(0, 1/fan_in), embeddings N(0, 0.02), norm scales 1, biases and lora_B 0.
    (Far faster to compile than the model's own `init`, which traces the whole model.)
    """
    leaves = jax.tree_util.tree_leaves_with_path(abstract)
    treedef = jax.tree_util.tree_structure(abstract)

    def make(key):
        keys = jax.random.split(key, len(leaves))
        out = []
        for k, (path, x) in zip(keys, leaves):
            p = path_str(path)
            if p.endswith("scale"):
                out.append(jnp.ones(x.shape, x.dtype))
            elif p.endswith("bias") or "lora_B" in p:
                out.append(jnp.zeros(x.shape, x.dtype))
            elif p.endswith("embedding"):
                out.append(0.02 * jax.random.normal(k, x.shape, x.dtype))
            else:
                fan_in = math.prod(x.shape[stacked_depth(p):-1]) or 1  # per layer: not the [L] axis
                out.append(jax.random.normal(k, x.shape, x.dtype) / math.sqrt(fan_in))
        return jax.tree_util.tree_unflatten(treedef, out)

    fn = jax.jit(make, out_shardings=shardings) if shardings is not None else jax.jit(make)
    # rbg keys lower to one RngBitGenerator op per leaf: much faster to compile than threefry.
    return fn(jax.random.key(seed, impl="rbg"))
