"""Long recordings: voice-activity segmentation, batched segment decoding, timestamps.

    segs = transcribe_long(rec, wave)                       # -> [TimedSegment(start_ms, end_ms, text, words)]
    print(to_srt(segs))

The recording is cut into speech segments of at most `VadConfig.max_segment_s` (30 s; less when
the recognizer's `max_segment_s`, a training run's longest bucket, is shorter) by
WebRTC's voice-activity detector (`audio.vad`), the segments are decoded `batch_size` at a time
(`Recognizer.recognize` on each segment's samples; the energy gate still drops silent ones),
optionally in order with the previous segment's transcript as the prompt's `上文` context (for
models trained with contextual SFT; sequential, so slower), and each segment's text is
force-aligned to the CTC head's posteriors (`decode.align`) for token and word start / end
times in milliseconds from the start of the recording (the posteriors come from the encoder pass
the LLM decoded the segment from: `Recognizer.recognize(ctc_posteriors=True)`). Memory: the
waveform plus one batch of segments' features and posteriors, so a 10-minute file (9.6 M
samples, 38 MB) decodes on a small machine.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from funasr_jax.audio.vad import VadConfig, vad_segments
from funasr_jax.decode.align import AlignmentError, TimedToken, ctc_forced_align, token_times, word_timestamps
from funasr_jax.infer.recognizer import Context, Recognizer, ctc_log_probs, lfr_seconds
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.prompt import instruction_text
from funasr_jax.text.subtitles import TimedSegment

SAMPLE_RATE = 16000


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def merge_byte_pieces(pieces: Sequence[str], times: Sequence[tuple[float, float]]):
    """Runs of sentencepiece byte-fallback pieces (`<0xE4>`) decoded to their UTF-8 text as one
    piece spanning the run's times (invalid bytes become U+FFFD, as the tokenizer decodes them)."""
    out_p, out_t, run, run_t = [], [], bytearray(), None

    def flush():
        nonlocal run, run_t
        if run:
            out_p.append(run.decode("utf-8", errors="replace"))
            out_t.append(run_t)
            run, run_t = bytearray(), None

    for piece, t in zip(pieces, times):
        m = _BYTE_PIECE.match(piece)
        if m:
            run.append(int(m.group(1), 16))
            run_t = t if run_t is None else (run_t[0], t[1])
            continue
        flush()
        out_p.append(piece)
        out_t.append(t)
    flush()
    return out_p, out_t


def segment_words(rec: Recognizer, waves: Sequence[np.ndarray], texts: Sequence[str],
                  offsets_ms: Sequence[float]) -> list[tuple[TimedToken, ...]]:
    """Word timestamps per segment: each text force-aligned (labels = the CTC vocabulary's
    encoding of it) to the CTC posteriors of its waveform; times in ms plus the segment's offset.
    A text the CTC head cannot align (more labels than frames) gets no words: ()."""
    if not rec.has_ctc:
        raise ValueError("timestamps need a model with a CTC head and a CTC vocabulary (forced alignment)")
    out: list[tuple[TimedToken, ...]] = [()] * len(waves)
    todo = [k for k, t in enumerate(texts) if t.strip()]
    if not todo:
        return out
    feats = [rec.features(waves[k]) for k in todo]
    x, lengths = rec.pad_feats(feats)
    logp = np.asarray(ctc_log_probs(rec.model, rec.params, x, lengths))
    for row, k in enumerate(todo):
        out[k] = aligned_words(rec, logp[row, : int(lengths[row])], texts[k], offsets_ms[k], len(waves[k]))
    return out


def aligned_words(rec: Recognizer, logp: np.ndarray, text: str, offset_ms: float,
                  n_samples: int) -> tuple[TimedToken, ...]:
    """`text` force-aligned to one segment's CTC log-posteriors [T, V_ctc] (T LFR frames of 60 ms):
    its words with times in ms plus `offset_ms`, clipped to the segment's `n_samples`; () for an
    empty text or one the CTC head cannot align."""
    if not text.strip():
        return ()
    labels = list(rec.ctc_vocab.encode(text))
    try:
        al = ctc_forced_align(logp, labels, rec.cfg.ctc.blank)
    except AlignmentError:
        return ()
    pieces = [rec.ctc_vocab.sp.id_to_token(i) for i in labels]
    frame_ms = lfr_seconds(1, rec.frontend) * 1000.0
    # the last LFR frame reaches past the audio (LFR pads the end): clip times to the segment
    end_ms = float(offset_ms) + 1000.0 * n_samples / SAMPLE_RATE
    times = [(min(a, end_ms), min(b, end_ms)) for a, b in token_times(al, frame_ms, float(offset_ms))]
    return tuple(word_timestamps(*merge_byte_pieces(pieces, times)))


def _decode_pieces(rec: Recognizer, pieces: Sequence[np.ndarray], offsets_ms: Sequence[float], instruction: str,
                   hotwords: HotwordIndex | None, contexts: Sequence[Context | None], *, timestamps: bool,
                   batch_size: int, max_new_tokens: int) -> list[tuple[str, tuple[TimedToken, ...]]]:
    """(text, words) per VAD segment of one `recognize` call. Words come from the CTC posteriors
    the recognizer kept of the encoder pass it decoded from; a piece it cut into several
    segments (longer than its `max_segment_s`) is aligned from a CTC pass of its own."""
    res = rec.recognize(list(pieces), [instruction] * len(pieces), batch_size=batch_size,
                        max_new_tokens=max_new_tokens, hotwords=[hotwords] * len(pieces), contexts=list(contexts),
                        ctc_posteriors=timestamps)
    if not timestamps:
        return [(t.text, ()) for t in res]
    words: list[tuple[TimedToken, ...]] = [()] * len(pieces)
    apart = []
    for k, (t, piece) in enumerate(zip(res, pieces)):
        post = t.ctc_posteriors
        if len(post) == 1 and (post[0].start, post[0].end) == (0, len(piece)):
            words[k] = aligned_words(rec, post[0].log_probs, t.text, offsets_ms[k], len(piece))
        elif t.text.strip():
            apart.append(k)
    if apart:
        found = segment_words(rec, [pieces[k] for k in apart], [res[k].text for k in apart],
                              [offsets_ms[k] for k in apart])
        for k, w in zip(apart, found):
            words[k] = w
    return [(t.text, w) for t, w in zip(res, words)]


def transcribe_long(rec: Recognizer, wave: np.ndarray, *, vad: VadConfig = VadConfig(), language: str | None = None,
                    itn: bool = True, hotwords: HotwordIndex | None = None, context: Context | None = None,
                    context_previous: bool = False, timestamps: bool = True, batch_size: int = 8,
                    max_new_tokens: int = 256) -> list[TimedSegment]:
    """A long 16 kHz waveform [S] -> its speech segments with text (and word times), in order.
    Segments whose text is empty (noise the VAD let through) are kept with text ""."""
    wave = np.asarray(wave, np.float32)
    if wave.ndim != 1:
        raise ValueError(f"transcribe_long: wave must be 1-D [S] at 16 kHz, got shape {wave.shape}")
    if rec.max_segment_s is not None and rec.max_segment_s < vad.max_segment_s:
        vad = dataclasses.replace(vad, max_segment_s=rec.max_segment_s)  # what the model was trained on
    spans = vad_segments(wave, SAMPLE_RATE, vad)
    instruction = instruction_text(language, (), itn)
    pieces = [wave[a:b] for a, b in spans]
    offsets = [1000.0 * s / SAMPLE_RATE for s, _ in spans]
    kw = dict(timestamps=timestamps and rec.has_ctc, max_new_tokens=max_new_tokens)
    done: list[tuple[str, tuple]] = []
    if context_previous:
        base = context or Context()
        for piece, offset in zip(pieces, offsets):
            ctx = Context(done[-1][0] if done else base.previous, tuple(base.passages))
            done += _decode_pieces(rec, [piece], [offset], instruction, hotwords, [ctx], batch_size=1, **kw)
    else:
        for a in range(0, len(pieces), batch_size):
            group = pieces[a: a + batch_size]
            done += _decode_pieces(rec, group, offsets[a: a + batch_size], instruction, hotwords,
                                   [context] * len(group), batch_size=batch_size, **kw)
    return [TimedSegment(1000.0 * s / SAMPLE_RATE, 1000.0 * e / SAMPLE_RATE, t, w)
            for (s, e), (t, w) in zip(spans, done)]
