"""A small scripting API over the model: load, features, encoder / adaptor / LLM outputs, loss.

    import funasr_jax.api as fa
    m = fa.load("Fun-ASR-Nano-2512")            # or a funasr-jax checkpoint / training run dir
    feats, lengths = fa.features(["a.wav", "b.flac"])
    enc, enc_lengths = fa.encoder_output(m, feats, lengths)      # [B, T, 512]
    audio = fa.adaptor_output(m, enc, enc_lengths)                # [B, T, 1024]
    logits = fa.llm_logits(m, batch)                              # [B, L, V], teacher-forced
    loss = fa.llm_loss(m, batch)
    texts = fa.transcribe(m, ["a.wav"])                           # greedy decoding (beam=4: beam search)
    for p in fa.stream(m, chunks):                                # streaming: partials, then the final
        print(p.text, p.final)
    segs = fa.transcribe_long(m, "meeting.wav")                   # VAD segments with word times
    open("meeting.srt", "w").write(fa.to_srt(segs))

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
from funasr_jax.audio.vad import VadConfig
from funasr_jax.infer import long_audio
from funasr_jax.infer.recognizer import Context, Recognizer
from funasr_jax.infer.streaming import Partial, StreamConfig, stream_transcribe
from funasr_jax.io.checkpoint import LoadedModel, load_model
from funasr_jax.models.batch import Batch
from funasr_jax.models.config import audio_token_count
from funasr_jax.models.funasr import FunASRNano
from funasr_jax.models.losses import llm_cross_entropy
from funasr_jax.text.hotwords import HotwordIndex, load_hotwords
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt, instruction_text
from funasr_jax.text.subtitles import TimedSegment, to_json_records, to_srt

__all__ = [
    "Context",
    "HotwordIndex",
    "Partial",
    "StreamConfig",
    "TimedSegment",
    "VadConfig",
    "adaptor_output",
    "ctc_logits",
    "encoder_output",
    "features",
    "llm_logits",
    "llm_loss",
    "load",
    "load_hotwords",
    "make_batch",
    "stream",
    "to_json_records",
    "to_srt",
    "transcribe",
    "transcribe_long",
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
               hotword_threshold: float | None = None, beam: int = 1, length_penalty: float = 0.0,
               **kw) -> list[str]:
    """Transcripts with the model's front end, prompt and decoding defaults (greedy; beam > 1:
    beam search). See `Recognizer.transcribe` for options: language, hotwords (a word list or
    `HotwordIndex`, retrieved against each segment's CTC hypothesis), context (`Context`), itn, mode, ..."""
    rec = Recognizer.from_loaded(m, tokenizer=tokenizer, hotword_top_k=hotword_top_k,
                                 hotword_threshold=hotword_threshold, beam=beam, length_penalty=length_penalty)
    return rec.transcribe(list(audio), **kw)


def _hotword_index(hotwords) -> HotwordIndex | None:
    if isinstance(hotwords, HotwordIndex) or hotwords is None:
        return hotwords
    return HotwordIndex(list(hotwords)) if len(hotwords) else None


def stream(m: LoadedModel, chunks, cfg: StreamConfig = StreamConfig(), tokenizer=None, *, language=None,
           hotwords=(), context: Context | None = None):
    """Generator: audio pieces ([n] float32, 16 kHz, any sizes) in, `Partial`s out as each chunk
    of `cfg.chunk_ms` is decoded, the final one last (`infer.streaming`)."""
    rec = Recognizer.from_loaded(m, tokenizer=tokenizer)
    yield from stream_transcribe(rec, chunks, cfg, language=language, hotwords=_hotword_index(hotwords),
                                 context=context)


def transcribe_long(m: LoadedModel, audio, tokenizer=None, *, vad: VadConfig = VadConfig(), language=None,
                    hotwords=(), context: Context | None = None, context_previous: bool = False,
                    timestamps: bool = True, batch_size: int = 8, beam: int = 1) -> list[TimedSegment]:
    """A long recording (path or 16 kHz waveform) -> VAD segments with text and word times
    (`infer.long_audio.transcribe_long`)."""
    rec = Recognizer.from_loaded(m, tokenizer=tokenizer, beam=beam)
    wave = load_audio(audio) if isinstance(audio, str) or hasattr(audio, "__fspath__") else np.asarray(audio, np.float32)
    return long_audio.transcribe_long(rec, wave, vad=vad, language=language, hotwords=_hotword_index(hotwords),
                                      context=context, context_previous=context_previous, timestamps=timestamps,
                                      batch_size=batch_size)
