"""The streaming decoder: one chunk = offline, stable prefixes, flushing, bucketed compiles, errors."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.data import tone

from funasr_jax.decode import generate
from funasr_jax.infer import recognizer as recognizer_mod
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.infer.streaming import StreamConfig, StreamError, StreamingDecoder, stream_chunks, stream_transcribe
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SR = 16000


@pytest.fixture(scope="module")
def model():
    from configs.base import model_for_preset
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    return cfg, init_params(cfg, jax.random.PRNGKey(5))


def make_rec(model, **kw):
    cfg, params = model
    tok = str(DEMO / "tokenizer.model")
    return Recognizer(cfg, params, load_tokenizer(tok), CTCVocabulary(tok), tokens_per_second=6.0, **kw)


def wave(seconds=2.6):
    parts = [tone(0.7, 220, 1), tone(0.6, 330, 2), tone(0.7, 500, 3), tone(seconds - 2.0, 180, 4)]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5])
def test_one_chunk_equals_offline(model, ctc_weight):
    rec = make_rec(model, ctc_weight=ctc_weight)
    w = wave()
    offline = rec.transcribe([w], batch_size=1)[0]
    dec = StreamingDecoder(rec, StreamConfig(chunk_ms=1000.0 * len(w) / SR + 100))
    assert dec.feed(w) == []  # no chunk boundary crossed
    final = dec.finish()
    assert final.final and final.text == offline and final.stable_tokens == 0
    assert offline  # a random model babbles up to its token bound: the comparison is not "" == ""


@pytest.mark.parametrize("ctc_weight,rollback", [(0.0, 2), (0.5, 3)])
def test_partials_keep_their_stable_prefix(model, ctc_weight, rollback):
    rec = make_rec(model, ctc_weight=ctc_weight)
    cfg = StreamConfig(chunk_ms=480.0, rollback_tokens=rollback)
    parts = list(stream_transcribe(rec, stream_chunks(wave(), 3000), cfg))
    assert parts[-1].final and sum(p.final for p in parts) == 1
    assert len(parts) == 6  # 2.6 s: five full 480 ms chunks, then the 200 ms rest flushed by finish()
    for a, b in zip(parts, parts[1:]):
        stable = a.token_ids[:max(0, len(a.token_ids) - rollback)]
        assert b.token_ids[:len(stable)] == stable
        assert b.stable_tokens == len(stable)
        assert b.audio_s > a.audio_s
    np.testing.assert_allclose(parts[-1].audio_s, 2.6, atol=1e-3)
    # the forced prefix is really decoded from: the final text is the tokenizer's text of its ids
    assert parts[-1].text == " ".join(rec.tokenizer.decode(list(parts[-1].token_ids)).split())


def compiled() -> tuple[int, ...]:
    """How many shapes the recognizer's jitted encoder, adaptor and generator have compiled."""
    return (recognizer_mod.encoder_outputs._cache_size(), recognizer_mod.embeds_from_encoder._cache_size(),
            generate._greedy._cache_size())


def test_no_recompile_per_chunk(model):
    """A second stream of the same length compiles nothing new: shapes are bucketed."""
    rec = make_rec(model)
    cfg = StreamConfig(chunk_ms=240.0, rollback_tokens=2)
    list(stream_transcribe(rec, [wave(2.0)], cfg))
    sizes = compiled()
    parts = list(stream_transcribe(rec, [wave(2.0)[::-1].copy()], cfg))
    assert len(parts) >= 8
    assert compiled() == sizes


def test_silence_zero_length_feeds_and_mid_chunk_stop(model):
    rec = make_rec(model)
    dec = StreamingDecoder(rec, StreamConfig(chunk_ms=300.0))
    assert dec.feed(np.zeros(0, np.float32)) == []
    silent = dec.feed(np.zeros(int(0.65 * SR), np.float32))
    assert [p.text for p in silent] == ["", ""]  # two full chunks of digital silence: gated, no model run
    final = dec.finish()  # 50 ms left over: flushed
    assert final.final and final.text == "" and final.audio_s == pytest.approx(0.65)


def test_segments_are_committed_at_max_segment(model):
    rec = make_rec(model)
    parts = list(stream_transcribe(rec, [wave(2.6)], StreamConfig(chunk_ms=500.0, max_segment_s=1.0)))
    closed = [p for p in parts if p.segment_final and not p.final]
    assert len(closed) == 2  # at 1.0 s and 2.0 s
    for p in closed:
        later = parts[parts.index(p) + 1:]
        assert all(q.text.startswith(p.text.rstrip()[: max(0, len(p.text) - 1)]) for q in later)


def test_bad_input_is_named(model):
    rec = make_rec(model)
    with pytest.raises(StreamError, match="chunk_ms"):
        StreamConfig(chunk_ms=0)
    with pytest.raises(StreamError, match="rollback_tokens"):
        StreamConfig(rollback_tokens=-1)
    with pytest.raises(StreamError, match="max_segment_s"):
        StreamConfig(chunk_ms=720, max_segment_s=0.5)
    with pytest.raises(StreamError, match="mode"):
        StreamingDecoder(rec, mode="ctc")
    dec = StreamingDecoder(rec)
    with pytest.raises(StreamError, match="1-D"):
        dec.feed(np.zeros((2, 100), np.float32))
    with pytest.raises(StreamError, match="NaN"):
        dec.feed(np.full(10, np.nan, np.float32))
    dec.finish()
    with pytest.raises(StreamError, match="after finish"):
        dec.feed(np.zeros(10, np.float32))
    with pytest.raises(StreamError, match="chunk_samples"):
        list(stream_chunks(np.zeros(10), 0))


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5])
def test_forcing_a_greedy_prefix_continues_the_greedy_hypothesis(model, ctc_weight):
    """Forcing the first k tokens of the greedy hypothesis H (prompt + CTC state) makes the
    decoder continue with exactly H[k:]: the forced prefix is decoded from, not just prepended."""
    from funasr_jax.infer.recognizer import Utterance
    from funasr_jax.text.prompt import instruction_text

    rec = make_rec(model, ctc_weight=ctc_weight)
    feats = rec.features(wave())
    full = rec.generate_ids([Utterance(feats, instruction_text())])[0][0]
    assert len(full) >= 6
    for k in (1, 4):
        cont = rec.generate_ids([Utterance(feats, instruction_text(), prefix_ids=tuple(full[:k]))])[0][0]
        assert cont == full[k:]
    other = rec.generate_ids([Utterance(feats, instruction_text(), prefix_ids=(full[1], full[0]))])[0][0]
    assert other != full[2:]  # a different forced prefix changes what follows
