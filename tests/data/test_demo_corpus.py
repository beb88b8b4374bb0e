"""The committed demo corpus (data/demo): manifests, audio, splits, coverage, tokenizer, size.

The split checks are independent of the generator: exact and near-duplicate sentences are found
with rapidfuzz over all (dev|test) x train pairs, coverage is recounted from the manifests.
"""

import collections
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf
from rapidfuzz import fuzz, process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "data", "demo")
TOOLS = os.path.join(ROOT, "tools")
SPLITS = ("train", "dev", "test")
SUBSETS = ("free", "template", "noise")
INSTRUCTIONS = {"语音转写：", "语音转写成中文：", "语音转写成英文：", "Speech transcription:",
                "Transcribe speech into Chinese:"}
USER_RE = re.compile(r"^(.*?)<\|startofspeech\|>!(.+?)<\|endofspeech\|>$", re.DOTALL)
CJK = r"\u4e00-\u9fff"


def text(r):
    return r["messages"][2]["content"]


@pytest.fixture(scope="module")
def manifests():
    out = {}
    for split in SPLITS:
        with open(os.path.join(DEMO, f"{split}.jsonl"), encoding="utf-8") as f:
            out[split] = [json.loads(line) for line in f if line.strip()]
    return out


@pytest.fixture(scope="module")
def summary():
    with open(os.path.join(DEMO, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


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
            assert r["subset"] in SUBSETS, r["key"]
            assert (text(r) == "") == (r["subset"] == "noise"), r["key"]
            assert r["frame"], r["key"]


def test_every_split_has_every_subset_and_language(manifests):
    assert len(manifests["train"]) >= 3000
    assert len(manifests["dev"]) >= 150 and len(manifests["test"]) >= 250
    for split, recs in manifests.items():
        got = collections.Counter((r["subset"], r["language"]) for r in recs)
        for subset in SUBSETS:
            for lang in ("zh", "en", "cs"):
                assert got[(subset, lang)] > 0, (split, subset, lang)
    test_free = sum(r["subset"] == "free" for r in manifests["test"])
    assert test_free >= 200


def test_no_test_or_dev_sentence_or_near_duplicate_in_train(manifests):
    texts = {s: [text(r) for r in recs if text(r)] for s, recs in manifests.items()}
    for s in SPLITS:
        assert len(set(texts[s])) == len(texts[s]), f"duplicate sentence in {s}"
    train = texts["train"]
    for s in ("dev", "test"):
        assert not set(train) & set(texts[s])
        scores = process.cdist(texts[s], train, scorer=fuzz.ratio, workers=1)
        worst = scores.max(axis=1)
        i = int(worst.argmax())
        assert worst[i] < 85, (s, texts[s][i], train[int(scores[i].argmax())], worst[i])
    assert not set(texts["dev"]) & set(texts["test"])


def test_free_dev_test_frames_never_occur_in_train(manifests):
    train_frames = {r["frame"] for r in manifests["train"] if r["subset"] == "free"}
    assert len(train_frames) >= 200
    for s in ("dev", "test"):
        frames = {r["frame"] for r in manifests[s] if r["subset"] == "free"}
        assert frames and not frames & train_frames, s


def _units(texts):
    zh = [c for t in texts for c in t if re.match(f"[{CJK}]", c)]
    en = [w.lower() for t in texts for w in re.findall(r"[A-Za-z']+", t)]
    return zh, en


def test_coverage_figure(manifests, summary):
    """Share of test scoring units (Chinese characters, English words) seen in train, recounted here
    and compared with the figure in summary.json and README.md."""
    zh_train, en_train = (set(u) for u in _units([text(r) for r in manifests["train"]]))
    with open(os.path.join(DEMO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for s in ("dev", "test"):
        for subset in ("free", "template"):
            zh, en = _units([text(r) for r in manifests[s] if r["subset"] == subset])
            seen_zh = sum(c in zh_train for c in zh)
            seen_en = sum(w in en_train for w in en)
            cov = {"zh_chars": seen_zh / len(zh), "en_words": seen_en / len(en),
                   "all": (seen_zh + seen_en) / (len(zh) + len(en))}
            for k, v in cov.items():
                assert summary["coverage"][f"{s}/{subset}"][k] == pytest.approx(v, abs=1e-4), (s, subset, k)
            assert cov["zh_chars"] >= 0.97 and cov["en_words"] >= 0.9, (s, subset, cov)
            fig = summary["coverage"][f"{s}/{subset}"]
            assert f"| {s}/{subset} | {100 * fig['zh_chars']:.1f} % | {100 * fig['en_words']:.1f} % |" in readme


def test_transcript_normalisation_and_hotwords(manifests):
    for recs in manifests.values():
        for r in recs:
            t = text(r)
            if r["subset"] == "noise":
                assert t == "" and r["hotwords"] == []
                continue
            assert re.fullmatch(rf"[{CJK}A-Za-z' ]+", t), t
            assert t == t.strip() and "  " not in t, t
            assert not re.search(rf"[{CJK}] [{CJK}]", t), t
            if r["language"] == "zh":
                assert re.fullmatch(rf"[{CJK}]+", t), t
            if r["language"] == "en":
                assert re.fullmatch(r"[A-Za-z' ]+", t), t
            if r["language"] == "cs":
                assert re.search(rf"[{CJK}]", t) and re.search("[A-Za-z]", t), t
            for w in r["hotwords"]:
                assert w in t, (w, t)


def test_audio_decodes_at_16k_matching_speech_length(manifests):
    for split, recs in manifests.items():
        for r in recs[:: 3 if split == "train" else 1]:
            rel = USER_RE.match(r["messages"][1]["content"]).group(2)
            path = os.path.join(DEMO, rel)
            assert os.path.isfile(path), path
            data, sr = sf.read(path, dtype="float32")
            assert sr == 16000 and data.ndim == 1, path
            dur = len(data) / sr
            assert 0.8 <= dur <= 5.5, (path, dur)  # the tiny preset's largest bucket is 5.76 s
            assert abs(dur * 100 - r["speech_length"]) <= 3, (path, dur, r["speech_length"])
            peak = np.abs(data).max()
            if r["subset"] == "noise":
                assert peak <= 1.0, path
            else:
                assert 0.1 < peak <= 1.0, path


def test_tokenizer_covers_transcripts(manifests):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DEMO, "tokenizer.model"))
    assert 1000 <= sp.get_piece_size() <= 2000
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    for recs in manifests.values():
        for r in recs:
            t = text(r)
            ids = sp.encode(t)
            assert sp.unk_id() not in ids and not byte_ids & set(ids), t
            assert sp.decode(ids) == t
            assert r["text_length"] == len(ids)


def test_tokenizer_spells_unseen_english_words():
    """A word that occurs nowhere in the corpus still encodes losslessly, without bytes or unk."""
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DEMO, "tokenizer.model"))
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    for w in ("quizzical", "zebras jump", "Zanzibarian"):
        ids = sp.encode(w)
        assert sp.decode(ids) == w and sp.unk_id() not in ids and not byte_ids & set(ids), w
        assert len(ids) > 1


def test_prompt_phrases_are_single_pieces(manifests):
    """The fixed parts of every training prompt (system prompt, role names, the instructions, the
    first-pass label) are one piece each, and whole prompts still round-trip."""
    from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, FIRST_PASS_LABEL

    sp = spm.SentencePieceProcessor(model_file=os.path.join(DEMO, "tokenizer.model"))
    for phrase in (DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant", FIRST_PASS_LABEL, *INSTRUCTIONS):
        assert len(sp.encode(phrase)) == 1, phrase
    r = manifests["train"][0]
    prompt = (f"<|im_start|>system\n{r['messages'][0]['content']}<|im_end|>\n<|im_start|>user\n{FIRST_PASS_LABEL}"
              f"{text(r)}\n{r['messages'][1]['content']}<|im_end|>\n<|im_start|>assistant\n{text(r)}<|im_end|>")
    ids = sp.encode(prompt)
    assert sp.decode(ids) == prompt
    # a transcript that merely contains a phrase's words is still spelt losslessly
    for t in ("the user said you are a helpful assistant", "system user assistant"):
        assert sp.decode(sp.encode(t)) == t


def test_sentences_regenerate_deterministically(manifests):
    """The generator's text pool for seed 0 (no audio needed) is exactly the committed split, twice."""
    sys.path.insert(0, TOOLS)
    try:
        import demo_text
        import make_demo_corpus
    finally:
        sys.path.remove(TOOLS)
    a = demo_text.make_splits(0, make_demo_corpus.COUNTS)
    b = demo_text.make_splits(0, make_demo_corpus.COUNTS)
    for s in SPLITS:
        got = sorted((x.text, x.subset, x.language, x.frame) for x in a[s])
        assert got == sorted((x.text, x.subset, x.language, x.frame) for x in b[s])
        assert got == sorted((text(r), r["subset"], r["language"], r["frame"]) for r in manifests[s]), s
    other = demo_text.make_splits(1, make_demo_corpus.scaled_counts(0.05))
    assert {x.text for x in other["test"] if x.text} != {x.text for x in a["test"] if x.text}


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng / sox not installed (apt-get install espeak-ng sox)")
def test_audio_regenerates_deterministically(manifests):
    """A few committed files equal a fresh synthesis of their planned job (same decoded samples)."""
    sys.path.insert(0, TOOLS)
    try:
        import make_demo_corpus as mdc
    finally:
        sys.path.remove(TOOLS)
    plan = mdc.plan_jobs(mdc.make_splits(0, mdc.COUNTS), 0)
    by_key = {f"{split}_{i:05d}": job for split, i, _, job, _ in plan}
    picked = [r for r in manifests["test"] if r["subset"] == "free"][:4]  # Opus drops brown noise's lowest band
    for r in picked:
        x = mdc.synthesize(by_key[r["key"]])
        rel = USER_RE.match(r["messages"][1]["content"]).group(2)
        ref, _ = sf.read(os.path.join(DEMO, rel), dtype="float32")
        assert len(ref) == len(x), r["key"]
        # the committed file went through Opus; compare the decoded signal's envelope
        e_ref = np.sqrt(np.convolve(ref ** 2, np.ones(800) / 800, "valid"))
        e_new = np.sqrt(np.convolve(x ** 2, np.ones(800) / 800, "valid"))
        assert np.abs(e_ref - e_new).max() < 0.05 + 0.1 * e_new.max(), r["key"]


def test_noise_files():
    names = sorted(os.listdir(os.path.join(DEMO, "noise")))
    assert {"white.ogg", "pink.ogg", "brown.ogg", "babble.ogg", "hum.ogg"} <= set(names)
    for n in names:
        data, sr = sf.read(os.path.join(DEMO, "noise", n), dtype="float32")
        assert sr == 16000 and data.ndim == 1
        assert 5.0 <= len(data) / sr <= 10.0, n
        assert np.sqrt(np.mean(data ** 2)) > 0.01, n


def test_total_size_at_most_25_mib():
    total = 0
    for d, _, files in os.walk(DEMO):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    assert total <= 25 * 2 ** 20, total
    assert os.path.isfile(os.path.join(DEMO, "README.md"))
