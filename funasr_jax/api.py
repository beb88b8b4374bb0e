"""A small scripting API over the model: load, features, encoder / adaptor / LLM outputs, loss.

    import funasr_jax.api as fa
    m = fa.load("Fun-ASR-Nano-2512")            # or a funasr-jax checkpoint / training run dir
    feats, lengths = fa.features(["a.wav", "b.flac"])
    enc, enc_lengths = fa.encoder_output(m, feats, lengths)      # [B, T, 512]
    audio = fa.adaptor_output(m, enc, enc_lengths)                # [B, T, 1024]
    logits = fa.llm_logits(m, batch)                              # [B, L, V], teacher-forced
    loss = fa.llm_loss(m, batch)
    texts = fa.transcribe(m, ["a.wav"])                           # greedy decoding

A `batch` is the dict the data pipeline yields (`feats`, `feat_lengths`, `input_ids`,
`token_lengths`, `audio_start`, `audio_tokens`, `labels`), e.g. from `make_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from funasr_jax.audio import load_audio
from funasr_jax.checkpoint import LoadedModel, load_model
from funasr_jax.frontend import FrontendConfig, extract_features
from funasr_jax.models.config import audio_token_count
from funasr_jax.models.funasr import FunASRNano
from funasr_jax.models.losses import llm_cross_entropy
from funasr_jax.prompt import build_prompt, instruction_text

load = load_model


def features(audio: Sequence, frontend: FrontendConfig = FrontendConfig()):
    """Paths or 16 kHz float waveforms -> (feats [B, T, 560] zero-padded, lengths [B]) as numpy."""
    feats = [extract_features(load_audio(a) if isinstance(a, str) or hasattr(a, "__fspath__")
                              else np.asarray(a, np.float32), frontend) for a in audio]
    t = max(len(f) for f in feats)
    x = np.zeros((len(feats), t, feats[0].shape[1]), np.float32)
    for i, f in enumerate(feats):
        x[i, : len(f)] = f
    return x, np.array([len(f) for f in feats], np.int32)


def _apply(m: LoadedModel, *args, method):
    return FunASRNano(m.cfg).apply({"params": m.params}, *args, method=method)


def encoder_output(m: LoadedModel, feats, lengths):
    """-> (encoder output [B, T, D_enc] f32, lengths [B])."""
    return _apply(m, jnp.asarray(feats), jnp.asarray(lengths), method="encode")


def adaptor_output(m: LoadedModel, enc, enc_lengths):
    """-> adaptor output [B, T, D_llm] (all T rows; the LLM sees the first ceil(T/8))."""
    return _apply(m, enc, enc_lengths, method="adapt")[0]


def ctc_logits(m: LoadedModel, feats, lengths):
    enc, lens = encoder_output(m, feats, lengths)
    return _apply(m, enc, lens, method="ctc_logits")


def make_batch(m: LoadedModel, tokenizer, audio: Sequence, targets: Sequence[str] | None = None,
               instruction: str | None = None, system: str = "You are a helpful assistant."):
    """Build a teacher-forcing batch for `audio` with optional transcripts (labels -100 without)."""
    feats, lengths = features(audio, m.frontend)
    instruction = instruction_text() if instruction is None else instruction
    prompts = [build_prompt(tokenizer, system=system, instruction=instruction, n_audio=int(audio_token_count(int(n))),
                            target=None if targets is None else targets[i]) for i, n in enumerate(lengths)]
    length = max(len(p.input_ids) for p in prompts)
    ids = np.full((len(prompts), length), tokenizer.pad_id, np.int32)
    labels = np.full((len(prompts), length), -100, np.int32)
    for i, p in enumerate(prompts):
        ids[i, : len(p.input_ids)] = p.input_ids
        labels[i, : len(p.labels)] = p.labels
    return {"feats": feats, "feat_lengths": lengths, "input_ids": ids, "labels": labels,
            "token_lengths": np.array([len(p.input_ids) for p in prompts], np.int32),
            "audio_start": np.array([p.audio_start for p in prompts], np.int32),
            "audio_tokens": np.array([p.n_audio for p in prompts], np.int32)}


def llm_logits(m: LoadedModel, batch: dict):
    """Teacher-forced LLM logits [B, L, V] (f32) with the audio rows spliced in."""
    out = FunASRNano(m.cfg).apply(
        {"params": m.params}, jnp.asarray(batch["feats"]), jnp.asarray(batch["feat_lengths"]),
        jnp.asarray(batch["input_ids"]), jnp.asarray(batch["token_lengths"]), jnp.asarray(batch["audio_start"]),
        jnp.asarray(batch["audio_tokens"]), with_ctc=False)
    return out["logits"]


def llm_loss(m: LoadedModel, batch: dict) -> float:
    """Mean next-token cross-entropy over the supervised positions (FunASRNano.forward's loss)."""
    return float(llm_cross_entropy(llm_logits(m, batch), jnp.asarray(batch["labels"]))["loss"])


def transcribe(m: LoadedModel, audio: Sequence, tokenizer=None, **kw) -> list[str]:
    """Greedy transcripts with the model's front end, prompt and decoding defaults (see
    `Recognizer.transcribe` for options)."""
    from funasr_jax.recognizer import Recognizer

    return Recognizer.from_loaded(m, tokenizer=tokenizer).transcribe(list(audio), **kw)
