"""Streaming recognition: audio fed in chunks, partial transcripts as they change, a final one.

    stream = StreamingDecoder(rec, StreamConfig(chunk_ms=720))
    for samples in microphone_chunks():          # any sizes, 16 kHz float32
        for p in stream.feed(samples):
            print(p.text)                          # partial
    final = stream.finish()                        # flushes a last short chunk

How a chunk is decoded: every time `chunk_ms` more audio has arrived, the features of the audio
so far (the current segment) are computed again and the encoder re-runs over all of it — the
SAN-M encoder's FSMN memory looks ahead as well as back, so an incremental encoder would not
reproduce what the model was trained on; re-running costs O(segment length) per chunk, bounded
by `max_segment_s`. The LLM then continues from the *stable prefix* of the previous partial:
its tokens minus the last `rollback_tokens` (the words at the edge of the audio are the ones the
next chunk can still change), forced after the assistant header (`Utterance.prefix_ids`), with
joint CTC decoding continuing from that prefix too. The CTC first pass and hotword retrieval run
at each chunk as in offline decoding (`Recognizer.generate_ids`). Shapes are bucketed (frames
to `Recognizer.frame_bucket`, tokens to `token_bucket`), so a stream compiles once per bucket,
not once per chunk.

Guarantees (tests/infer/test_streaming.py): a stream fed as a single chunk gives the offline
result; a partial's tokens, except its last `rollback_tokens`, are a prefix of every later
partial's of the same segment. A segment that reaches `max_segment_s` is closed: its text is
committed and later chunks start a new segment (with the committed text as the `上文` context
when `context_previous` is set). Audio whose every frame stays below the recognizer's energy
gate gives "" without running the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from funasr_jax.audio.activity import frame_grid, frame_levels_db, is_silent
from funasr_jax.infer.recognizer import Context, Recognizer, Utterance
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.join import join_texts
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, instruction_text

SAMPLE_RATE = 16000


class StreamError(ValueError):
    """Bad streaming input or configuration (names the value)."""


@dataclass(frozen=True)
class StreamConfig:
    """chunk_ms: audio per decode step (FunASR's release re-decodes every 720 ms);
    rollback_tokens: tokens at the end of a partial the next chunk may rewrite (the release rolls
    back 8 characters); max_segment_s: a segment is closed and committed at this length (None:
    the recognizer's `max_segment_s`); context_previous: a new segment's prompt carries the
    committed text of the previous one (only for models trained with contextual SFT)."""

    chunk_ms: float = 720.0
    rollback_tokens: int = 5
    max_segment_s: float | None = None
    context_previous: bool = False
    max_new_tokens: int = 128

    def __post_init__(self):
        if not (isinstance(self.chunk_ms, (int, float)) and self.chunk_ms >= 60.0 and math.isfinite(self.chunk_ms)):
            raise StreamError(f"StreamConfig.chunk_ms must be >= 60 ms (one LFR frame), got {self.chunk_ms!r}")
        if int(self.rollback_tokens) < 0:
            raise StreamError(f"StreamConfig.rollback_tokens must be >= 0, got {self.rollback_tokens!r}")
        if self.max_segment_s is not None and not self.max_segment_s * 1000.0 >= self.chunk_ms:
            raise StreamError(f"StreamConfig.max_segment_s must cover at least one chunk ({self.chunk_ms} ms), "
                              f"got {self.max_segment_s!r}")
        if int(self.max_new_tokens) < 1:
            raise StreamError(f"StreamConfig.max_new_tokens must be >= 1, got {self.max_new_tokens!r}")


@dataclass(frozen=True)
class Partial:
    """One streaming result. text: committed segments + the current hypothesis; final: the
    stream has ended (or, with `segment_final`, a segment was closed); audio_s: seconds of audio
    decoded so far; compute_s: wall seconds this decode step took; stable_tokens: how many of the
    current segment's tokens were forced from the previous partial."""

    text: str
    final: bool
    audio_s: float
    compute_s: float = 0.0
    stable_tokens: int = 0
    segment_final: bool = False
    token_ids: tuple[int, ...] = ()


@dataclass
class _Segment:
    samples: list = field(default_factory=list)
    n: int = 0
    ids: tuple[int, ...] = ()  # the current segment's last hypothesis

    def wave(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)


class StreamingDecoder:
    """Chunked decoding with a `Recognizer` (module docstring). Not thread-safe; one per stream."""

    def __init__(self, rec: Recognizer, cfg: StreamConfig = StreamConfig(), *, instruction: str | None = None,
                 language: str | None = None, system: str = DEFAULT_SYSTEM_PROMPT,
                 hotwords: HotwordIndex | None = None, context: Context | None = None, mode: str = "llm"):
        if mode != "llm":
            raise StreamError(f"streaming decodes with the LLM (mode 'llm'), got mode={mode!r}")
        self.rec, self.cfg = rec, cfg
        self.instruction = instruction if instruction is not None else instruction_text(language, (), True)
        self.system, self.hotwords, self.context = system, hotwords, context or Context()
        self.chunk = int(round(cfg.chunk_ms * SAMPLE_RATE / 1000.0))
        max_s = cfg.max_segment_s if cfg.max_segment_s is not None else rec.max_segment_s
        self.max_samples = None if max_s is None else max(self.chunk, int(max_s * SAMPLE_RATE))
        self._grid = frame_grid(SAMPLE_RATE, rec.frontend.frame_length_ms, rec.frontend.frame_shift_ms)
        self._committed: list[str] = []
        self._seg = _Segment()
        self._pending = 0  # samples of the current segment not yet decoded
        self._total = 0
        self._text = ""
        self._finished = False

    # ------------------------------------------------------------------ decoding one step

    def _utterance(self, feats: np.ndarray, prefix: tuple[int, ...]) -> Utterance:
        previous = self.context.previous
        if self.cfg.context_previous and self._committed:
            previous = join_texts(self._committed)[-200:]
        return Utterance(feats, self.instruction, self.system, hotwords=self.hotwords, previous=previous,
                         passages=tuple(self.context.passages), prefix_ids=prefix)

    def _decode(self) -> tuple[tuple[int, ...], int, float]:
        """Decode the current segment: (its token ids, forced prefix length, seconds taken)."""
        t0 = time.perf_counter()
        wave = self._seg.wave()
        if self.rec.gate_dbfs is not None and is_silent(frame_levels_db(wave, self._grid), self.rec.gate_dbfs):
            return (), 0, time.perf_counter() - t0
        k = int(self.cfg.rollback_tokens)
        prefix = self._seg.ids[:max(0, len(self._seg.ids) - k)]
        feats = self.rec.features(wave)
        limit = int(self.rec.token_limits([len(feats)], self.cfg.max_new_tokens)[0])
        prefix = prefix[:max(0, limit - 1)]  # leave room for at least one new token (EOS)
        new, _ = self.rec.generate_ids([self._utterance(feats, prefix)], self.cfg.max_new_tokens)
        return tuple(prefix) + tuple(new[0]), len(prefix), time.perf_counter() - t0

    def _text_of(self, ids) -> str:
        return " ".join(self.rec.tokenizer.decode(list(ids)).split())

    def _step(self, final: bool) -> Partial:
        ids, n_forced, dt = self._decode()
        self._seg.ids = ids
        self._pending = 0
        seg_text = self._text_of(ids)
        text = join_texts(self._committed + [seg_text])
        seg_final = final or (self.max_samples is not None and self._seg.n >= self.max_samples)
        if seg_final and not final:
            self._committed.append(seg_text)
            self._seg = _Segment()
        self._text = text
        return Partial(text, final, self._total / SAMPLE_RATE, dt, n_forced, seg_final, tuple(ids))

    # ------------------------------------------------------------------ public API

    def feed(self, samples) -> list[Partial]:
        """Append audio ([n] float32 in [-1, 1] at 16 kHz; any n >= 0); returns the partials of
        every chunk completed by it (in order; [] when no chunk boundary was crossed)."""
        if self._finished:
            raise StreamError("feed() after finish(): start a new StreamingDecoder for a new stream")
        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise StreamError(f"feed: samples must be 1-D [n] at 16 kHz, got shape {x.shape}")
        if x.size and not np.all(np.isfinite(x)):
            raise StreamError("feed: samples contain NaN or infinity")
        out = []
        while x.size:
            room = self.chunk - self._pending
            if self.max_samples is not None:
                room = min(room, self.max_samples - self._seg.n)
            take, x = x[:room], x[room:]
            self._seg.samples.append(take)
            self._seg.n += take.size
            self._pending += take.size
            self._total += take.size
            at_cap = self.max_samples is not None and self._seg.n >= self.max_samples
            if self._pending >= self.chunk or at_cap:
                out.append(self._step(final=False))
        return out

    def finish(self) -> Partial:
        """Decode what is left (a last short chunk too) and return the final transcript."""
        if self._finished:
            raise StreamError("finish() called twice")
        self._finished = True
        if self._pending or (self._seg.n and not self._seg.ids):
            return self._step(final=True)
        return Partial(self._text, True, self._total / SAMPLE_RATE, 0.0, 0, True, tuple(self._seg.ids))

    @property
    def text(self) -> str:
        """The latest transcript (committed segments + current hypothesis)."""
        return self._text


def stream_chunks(wave: np.ndarray, chunk_samples: int) -> Iterator[np.ndarray]:
    """A waveform as consecutive pieces of `chunk_samples` (the last one shorter)."""
    if chunk_samples < 1:
        raise StreamError(f"stream_chunks: chunk_samples must be >= 1, got {chunk_samples}")
    for a in range(0, len(wave), chunk_samples):
        yield wave[a: a + chunk_samples]


def stream_transcribe(rec: Recognizer, chunks: Iterable, cfg: StreamConfig = StreamConfig(), **kw) -> Iterator[Partial]:
    """Generator over a stream of audio pieces: yields each partial as it is decoded and, last,
    the final result (`Partial.final`). kw: `StreamingDecoder` options (language, hotwords, ...)."""
    dec = StreamingDecoder(rec, cfg, **kw)
    for piece in chunks:
        yield from dec.feed(piece)
    yield dec.finish()
