"""Long recordings: VAD segments decoded in batches, word times inside their segments, the CLIs'
--timestamps / --srt / --stream / --beam output, and over-long files refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

from funasr_jax.audio.io import AudioError, load_audio
from funasr_jax.audio.vad import vad_segments
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.long_audio import transcribe_long
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.text.prompt import instruction_text
from funasr_jax.text.subtitles import parse_srt
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="module")
def long_wave():
    exs = [e for e in read_manifests([str(DEMO / "test.jsonl")]) if e.subset != "noise"][:3]
    parts = []
    for e in exs:
        parts += [np.zeros(16000, np.float32), load_audio(e.audio_path)]
    return np.concatenate(parts + [np.zeros(8000, np.float32)])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path_factory.mktemp("ck")
    save_params(d, init_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    return d


def test_segments_are_the_vad_segments_decoded_one_by_one(ckpt, long_wave):
    rec = Recognizer.from_checkpoint(str(ckpt), tokens_per_second=2.0)
    segs = transcribe_long(rec, long_wave, batch_size=2)
    spans = vad_segments(long_wave)
    assert len(segs) == len(spans) == 3
    alone = [rec.recognize([long_wave[a:b]], [instruction_text()], batch_size=1)[0].text for a, b in spans]
    assert [s.text for s in segs] == alone  # batching segments does not change their text
    for s, (a, b) in zip(segs, spans):
        assert (s.start_ms, s.end_ms) == (a / 16, b / 16)
        assert s.words and all(s.start_ms <= w.start_ms < w.end_ms <= s.end_ms for w in s.words)
        assert "".join(w.text for w in s.words).replace(" ", "") == s.text.replace(" ", "")


def test_cli_timestamps_srt_stream_beam_and_limits(ckpt, long_wave, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, long_wave, 16000)
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), str(path), "--timestamps", "--json",
            "--srt", str(tmp_path / "srt"), "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert len(out["segments"]) == 3 and all(seg["words"] for seg in out["segments"])
    cues = parse_srt((tmp_path / "srt" / "long.srt").read_text())
    assert [c.text for c in cues] == [s["text"] for s in out["segments"] if s["text"].strip()]
    assert [round(c.start_ms) for c in cues] == [round(s["start_ms"]) for s in out["segments"] if s["text"].strip()]
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), str(path), "--stream", "--chunk-ms", "2000",
            "--json", "--max-new-tokens", "4", "--beam", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert lines[-1]["final"] and not any(x["final"] for x in lines[:-1])
    assert lines[-1]["audio_s"] == pytest.approx(len(long_wave) / 16000, abs=1e-3)
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), str(path), "--max-audio-s", "5")
    assert r.returncode == 2 and "long.wav" in r.stderr and "exceeds the limit of 5 s" in r.stderr
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), str(path), "--stream", "--chunk-ms", "0")
    assert r.returncode == 2 and "chunk_ms" in r.stderr
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), str(path), "--beam", "3", "--json",
            "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr[-2000:]


def test_load_audio_refuses_long_files_before_decoding(tmp_path):
    path = tmp_path / "hour.flac"
    with sf.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        for _ in range(60):
            f.write(np.zeros(8000 * 65, np.float32))  # 65 minutes of 8 kHz silence
    with pytest.raises(AudioError, match=r"hour.flac: 1\.08 h of audio exceeds the limit of 3600 s"):
        load_audio(path, max_seconds=3600)


def test_api_stream_and_long(ckpt, long_wave):
    import funasr_jax.api as fa

    m = fa.load(str(ckpt))
    segs = fa.transcribe_long(m, long_wave)
    assert len(segs) == 3 and fa.to_srt(segs).startswith("1\n")
    parts = list(fa.stream(m, [long_wave[:20000], long_wave[20000:]], fa.StreamConfig(chunk_ms=3000)))
    assert parts[-1].final and len(parts) == int(len(long_wave) // 48000) + 1
