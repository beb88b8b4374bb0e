"""Unlabelled manifests (no assistant message) and audio lists for Best-RQ: read only when asked
for, named by file:line otherwise; the Best-RQ stage trains on them, an SFT stage refuses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from funasr_jax.audio.frontend import num_fbank_frames
from funasr_jax.audio.io import AudioError
from funasr_jax.data.audio_list import read_audio_list, write_unlabelled_manifest
from funasr_jax.data.manifest import ManifestError, read_manifests
from helpers.data import tone
from helpers.train import DEMO, tiny_cfg


def _list(tmp_path, lines):
    p = tmp_path / "wav.scp"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_audio_list_writes_unlabelled_lines(tmp_path):
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.wav", tone(0.8), 16000, subtype="PCM_16")
    sf.write(tmp_path / "y.flac", tone(0.65, seed=2), 8000)  # 1.3 s at 8 kHz: resampled to 16 kHz on reading
    lst = _list(tmp_path, ["# comment", "utt_x a/x.wav", "", str(tmp_path / "y.flac")])
    assert [k for k, _, _ in read_audio_list(lst)] == ["utt_x", "y"]
    info = write_unlabelled_manifest([lst], tmp_path / "out" / "u.jsonl")
    assert info["utterances"] == 2 and abs(info["seconds"] - 2.1) < 0.01
    with pytest.raises(ManifestError, match=r"u\.jsonl:1: .*unlabelled"):
        read_manifests(tmp_path / "out" / "u.jsonl")  # a reader that needs transcripts stops, naming the line
    ex = read_manifests(tmp_path / "out" / "u.jsonl", labelled=False)
    assert [e.target for e in ex] == [None, None]
    assert ex[0].audio_path == str(tmp_path / "a" / "x.wav")
    assert ex[0].speech_length == num_fbank_frames(int(0.8 * 16000))
    assert ex[1].speech_length == num_fbank_frames(int(round(1.3 * 16000)))


def test_audio_list_errors_name_the_line(tmp_path):
    with pytest.raises(AudioError, match=r"wav\.scp:2: "):
        write_unlabelled_manifest([_list(tmp_path, ["k0 " + str(next((DEMO / "audio" / "train").glob("*.ogg"))),
                                                    "k2 nothere.wav"])], tmp_path / "o.jsonl")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"wav\.scp:1: "):
        write_unlabelled_manifest([_list(tmp_path, ["e empty.wav"])], tmp_path / "o.jsonl")
    with pytest.raises(ManifestError, match=r"wav\.scp:2: key 'a' repeats line 1"):
        read_audio_list(_list(tmp_path, ["a x.wav", "a y.wav"]))
    with pytest.raises(ManifestError, match="piped"):
        read_audio_list(_list(tmp_path, ["a sox x.wav -t wav - |"]))


def _unlabelled_demo(tmp_path, n=24) -> str:
    lst = _list(tmp_path, [str(p) for p in sorted((DEMO / "audio" / "train").glob("*.ogg"))[:n]])
    return write_unlabelled_manifest([lst], tmp_path / "unlabelled.jsonl")["out"]


def test_bestrq_trains_on_unlabelled_audio_and_sft_refuses_it(tmp_path):
    from train.loop import train

    manifest = _unlabelled_demo(tmp_path)
    cfg = tiny_cfg("bestrq", tmp_path / "rq", steps=2, **{"data.train_files": manifest})
    assert not cfg.data.require_transcripts
    out = train(cfg)
    assert out["steps"] == 2
    rows = [json.loads(l) for l in (tmp_path / "rq" / "bestrq" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["bestrq_loss"]) for r in rows if r["split"] == "train")
    sft = tiny_cfg("sft2", tmp_path / "sft", steps=1, **{"data.train_files": manifest, "data.on_error": "raise"})
    with pytest.raises(ManifestError, match=r"unlabelled\.jsonl:1: .*unlabelled"):
        train(sft)
