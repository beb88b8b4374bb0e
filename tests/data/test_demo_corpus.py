"""The committed demo corpus (data/demo): manifests, audio, splits, tokenizer, size."""

import json
import os
import re

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "data", "demo")
SPLITS = ("train", "dev", "test")
INSTRUCTIONS = {"语音转写：", "语音转写成中文：", "语音转写成英文：", "Speech transcription:",
                "Transcribe speech into Chinese:"}
USER_RE = re.compile(r"^(.*?)<\|startofspeech\|>!(.+?)<\|endofspeech\|>$", re.S)
CJK = r"\u4e00-\u9fff"


@pytest.fixture(scope="module")
def manifests():
    out = {}
    for split in SPLITS:
        with open(os.path.join(DEMO, f"{split}.jsonl"), encoding="utf-8") as f:
            out[split] = [json.loads(line) for line in f if line.strip()]
    return out


def test_manifest_format(manifests):
    keys = set()
    for split, recs in manifests.items():
        for r in recs:
            assert r["key"] not in keys
            keys.add(r["key"])
            roles = [m["role"] for m in r["messages"]]
            assert roles == ["system", "user", "assistant"], r["key"]
            assert r["messages"][0]["content"] == "You are a helpful assistant."
            m = USER_RE.match(r["messages"][1]["content"])
            assert m and m.group(1) in INSTRUCTIONS, r["messages"][1]["content"]
            assert m.group(2).startswith(f"audio/{split}/")
            assert r["language"] in ("zh", "en", "cs")
            assert isinstance(r["speech_length"], int) and isinstance(r["text_length"], int)
            assert r["subset"] in ("names", "places", "companies", "tech", "meeting")


def test_counts_and_languages(manifests):
    assert len(manifests["train"]) >= 1900
    assert 150 <= len(manifests["dev"]) and 150 <= len(manifests["test"])
    for split, recs in manifests.items():
        assert {r["language"] for r in recs} == {"zh", "en", "cs"}, split


def test_splits_have_disjoint_sentences(manifests):
    texts = {s: [r["messages"][2]["content"] for r in recs] for s, recs in manifests.items()}
    for s in SPLITS:
        assert len(set(texts[s])) == len(texts[s]), f"duplicate sentence in {s}"
    train = set(texts["train"])
    assert not train & set(texts["dev"])
    assert not train & set(texts["test"])
    assert not set(texts["dev"]) & set(texts["test"])


def test_transcript_normalisation_and_hotwords(manifests):
    for recs in manifests.values():
        for r in recs:
            t = r["messages"][2]["content"]
            assert re.fullmatch(rf"[{CJK}A-Za-z ]+", t), t
            assert t == t.strip() and "  " not in t, t
            assert not re.search(rf"[{CJK}] [{CJK}]", t), t
            if r["language"] == "zh":
                assert re.fullmatch(rf"[{CJK}]+", t), t
            if r["language"] == "en":
                assert re.fullmatch(r"[A-Za-z ]+", t), t
            if r["language"] == "cs":
                assert re.search(rf"[{CJK}]", t) and re.search("[A-Za-z]", t), t
            for w in r["hotwords"]:
                assert w in t, (w, t)


def test_audio_decodes_at_16k_matching_speech_length(manifests):
    for split, recs in manifests.items():
        for r in recs:
            rel = USER_RE.match(r["messages"][1]["content"]).group(2)
            path = os.path.join(DEMO, rel)
            assert os.path.isfile(path), path
            data, sr = sf.read(path, dtype="float32")
            assert sr == 16000 and data.ndim == 1, path
            dur = len(data) / sr
            assert 0.8 <= dur <= 6.0, (path, dur)
            # Kaldi 25 ms / 10 ms frames: about one per 10 ms
            assert abs(dur * 100 - r["speech_length"]) <= 3, (path, dur, r["speech_length"])
            assert 0.05 < np.abs(data).max() <= 1.0, path


def test_tokenizer_covers_transcripts(manifests):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DEMO, "tokenizer.model"))
    assert 1000 <= sp.get_piece_size() <= 2000
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    for recs in manifests.values():
        for r in recs:
            t = r["messages"][2]["content"]
            ids = sp.encode(t)
            assert sp.unk_id() not in ids and not byte_ids & set(ids), t
            assert sp.decode(ids) == t
            assert r["text_length"] == len(ids)


def test_noise_files():
    names = sorted(os.listdir(os.path.join(DEMO, "noise")))
    assert {"white.ogg", "pink.ogg", "brown.ogg", "babble.ogg", "hum.ogg"} <= set(names)
    for n in names:
        data, sr = sf.read(os.path.join(DEMO, "noise", n), dtype="float32")
        assert sr == 16000 and data.ndim == 1
        assert 5.0 <= len(data) / sr <= 10.0, n
        assert np.sqrt(np.mean(data ** 2)) > 0.01, n


def test_total_size_at_most_20_mib():
    total = 0
    for d, _, files in os.walk(DEMO):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    assert total <= 20 * 2 ** 20, total
    assert os.path.isfile(os.path.join(DEMO, "README.md"))
