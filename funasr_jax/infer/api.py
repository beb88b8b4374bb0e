"""A small scripting API over the model: load, features, encoder / adaptor / LLM outputs, loss.

    import funasr_jax.api as fa
    m = fa.load("Fun-ASR-Nano-2512")            # or a funasr-jax checkpoint / training run dir
    feats, lengths = fa.features(["a.wav", "b.flac"])
    enc, enc_lengths = fa.encoder_output(m, feats, lengths)      # [B, T, 512]
    audio = fa.adaptor_output(m, enc, enc_lengths)                # [B, T, 1024]
    logits = fa.llm_logits(m, batch)                              # [B, L, V], teacher-forced
    loss = fa.llm_loss(m, batch)
    texts = fa.transcribe(m, ["a.wav"])                           # greedy decoding

A `batch` is a `funasr_jax.models.batch.Batch` (what the data pipeline yields), e.g. from
`make_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from funasr_jax.audio.frontend import FrontendConfig, extract_features
from funasr_jax.audio.io import load_audio
from funasr_jax.data.rows import pad_batch, pad_feats
from funasr_jax.infer.recognizer import Context, Recognizer
from funasr_jax.io.checkpoint import LoadedModel, load_model
from funasr_jax.models.batch import Batch
from funasr_jax.models.config import audio_token_count
from funasr_jax.models.funasr import FunASRNano
from funasr_jax.models.losses import llm_cross_entropy
from funasr_jax.text.hotwords import HotwordIndex, load_hotwords
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt, instruction_text

__all__ = [
    "Context",
    "HotwordIndex",
    "adaptor_output",
    "ctc_logits",
    "encoder_output",
    "features",
    "llm_logits",
    "llm_loss",
    "load",
    "load_hotwords",
    "make_batch",
    "transcribe",
]

load = load_model
DEFAULT_FRONTEND = FrontendConfig()  # no CMVN


def _features(audio: Sequence, frontend: FrontendConfig) -> list[np.ndarray]:
    return [extract_features(load_audio(a) if isinstance(a, str) or hasattr(a, "__fspath__")
                             else np.asarray(a, np.float32), frontend) for a in audio]


def features(audio: Sequence, frontend: FrontendConfig = DEFAULT_FRONTEND):
    """Paths or 16 kHz float waveforms -> (feats [B, T, 560] zero-padded, lengths [B]) as numpy."""
    return pad_feats(_features(audio, frontend))


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
               instruction: str | None = None, system: str = DEFAULT_SYSTEM_PROMPT) -> Batch:
    """A teacher-forcing `Batch` for `audio` with optional transcripts (labels all IGNORE_INDEX without)."""
    feats = _features(audio, m.frontend)
    instruction = instruction_text() if instruction is None else instruction
    prompts = [build_prompt(tokenizer, system=system, instruction=instruction, n_audio=int(audio_token_count(len(f))),
                            target=None if targets is None else targets[i]) for i, f in enumerate(feats)]
    return pad_batch(feats, prompts, pad_id=tokenizer.pad_id)


def llm_logits(m: LoadedModel, batch: Batch):
    """Teacher-forced LLM logits [B, L, V] (f32) with the audio rows spliced in."""
    out = FunASRNano(m.cfg).apply({"params": m.params}, batch.on_device_fields().map(jnp.asarray), with_ctc=False)
    return out["logits"]


def llm_loss(m: LoadedModel, batch: Batch) -> float:
    """Mean next-token cross-entropy over the supervised positions (FunASRNano.forward's loss)."""
    return float(llm_cross_entropy(llm_logits(m, batch), jnp.asarray(batch.labels))["loss"])


def transcribe(m: LoadedModel, audio: Sequence, tokenizer=None, *, hotword_top_k: int = 10,
               hotword_threshold: float | None = None, **kw) -> list[str]:
    """Greedy transcripts with the model's front end, prompt and decoding defaults (see
    `Recognizer.transcribe` for options: language, hotwords (a word list or `HotwordIndex`,
    retrieved against each segment's CTC hypothesis), context (`Context`), itn, mode, ...)."""
    rec = Recognizer.from_loaded(m, tokenizer=tokenizer, hotword_top_k=hotword_top_k,
                                 hotword_threshold=hotword_threshold)
    return rec.transcribe(list(audio), **kw)
