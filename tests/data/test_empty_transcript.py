"""Noise-only clips (assistant transcript ""): manifest, token counts, plan and batch rows accept them."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
from helpers.data import SR, CharCTC, CharTokenizer, fbank_frames, line, tone

from funasr_jax.data.config import DataConfig
from funasr_jax.data.datasets import load_text_tools, make_train_data
from funasr_jax.data.manifest import ManifestError, read_manifests
from funasr_jax.data.rows import count_tokens
from funasr_jax.models.batch import IGNORE_INDEX

TARGETS = ["alpha bravo", "", "charlie", "", "delta echo foxtrot"]  # rows 1 and 3: noise only


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("noise_rows")
    os.makedirs(d / "wav")
    lines = []
    for i, target in enumerate(TARGETS):
        wav = tone(0.6 + 0.2 * i, 300 + 50 * i, seed=i)
        if not target:
            wav = (0.05 * np.random.default_rng(i).standard_normal(len(wav))).astype(np.float32)
        sf.write(d / "wav" / f"{i}.wav", wav, SR, subtype="PCM_16")
        extra = {"subset": "noise"} if not target else {}
        lines.append(line(f"u{i}", f"wav/{i}.wav", target, fbank_frames(len(wav)), first_pass=target, **extra))
    path = d / "m.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _cfg(path, **kw):
    base = {"train_files": (path,), "batch_size": 4, "bucket_frames": (32,), "token_multiple": 8, "shuffle": False}
    return DataConfig(**{**base, **kw})


def test_manifest_accepts_empty_but_not_missing_or_non_string(manifest, tmp_path):
    exs = read_manifests([manifest])
    assert [e.target for e in exs] == TARGETS and exs[1].subset == "noise" and exs[1].first_pass == ""
    with open(manifest, encoding="utf-8") as f:
        good = json.loads(f.readline())
    no_assistant = {**good, "messages": good["messages"][:2]}
    not_string = {**good, "messages": good["messages"][:2] + [{"role": "assistant", "content": None}]}
    for obj, field in [(no_assistant, "no 'assistant' message: an unlabelled line"), (not_string, "messages[2].content")]:
        p = tmp_path / "bad.jsonl"
        p.write_text(json.dumps(good) + "\n" + json.dumps(obj) + "\n", encoding="utf-8")
        with pytest.raises(ManifestError, match=rf"^{re.escape(str(p))}:2: .*{re.escape(field)}"):
            read_manifests([str(p)])


@pytest.mark.parametrize("first_pass_prompt", [False, True])
def test_batch_rows_of_empty_transcripts(manifest, first_pass_prompt):
    tok, ctc = CharTokenizer(), CharCTC()
    exs = read_manifests([manifest])
    cfg = _cfg(manifest, first_pass_prompt=first_pass_prompt)
    _, target, ctc_n = count_tokens(cfg, exs, tok, ctc)
    assert target.tolist() == [len(t) + 1 for t in TARGETS] and ctc_n[[1, 3]].tolist() == [0, 0]
    td = make_train_data(cfg, exs, tok, ctc, num_epochs=1)
    assert len(td.kept) == len(TARGETS)
    seen = set()
    for b in td.iterator():
        for r in np.flatnonzero(b.weight > 0):
            i = int(b.example_index[r])
            seen.add(i)
            scored = b.labels[r][b.labels[r] != IGNORE_INDEX]
            assert tok.decode(scored.tolist()) == TARGETS[i] + "<|im_end|>"
            assert int(b.ctc_label_lengths[r]) == len(ctc.encode(TARGETS[i]))
            if not TARGETS[i]:
                assert scored.tolist() == [tok.im_end_id] and b.ctc_label_lengths[r] == 0
                assert not b.ctc_labels[r].any() and b.feat_lengths[r] > 0 and b.weight[r] == 1.0
    assert seen == set(range(len(TARGETS)))


def test_batch_of_only_empty_transcripts(manifest):
    tok, ctc = CharTokenizer(), CharCTC()
    exs = [e for e in read_manifests([manifest]) if not e.target]
    b = next(make_train_data(_cfg(manifest, batch_size=2), exs, tok, ctc, num_epochs=1).iterator())
    assert b.ctc_labels.shape == (2, 8) and b.ctc_label_lengths.tolist() == [0, 0]
    assert [(row != IGNORE_INDEX).sum() for row in b.labels] == [1, 1]


DEMO = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "demo")


def test_demo_noise_rows_with_real_tokenizers():
    files = tuple(os.path.join(DEMO, f"{s}.jsonl") for s in ("dev", "test"))
    exs = [e for e in read_manifests(files) if not e.target][:4]
    if not exs:
        pytest.skip("the demo corpus has no empty-transcript rows")
    cfg = DataConfig(train_files=files, tokenizer=os.path.join(DEMO, "tokenizer.model"),
                     ctc_tokenizer=os.path.join(DEMO, "tokenizer.model"), batch_size=4, bucket_frames=(64, 96, 128),
                     shuffle=False)
    tok, ctc = load_text_tools(cfg)
    for b in make_train_data(dataclasses.replace(cfg, noise_dir=os.path.join(DEMO, "noise")), exs, tok, ctc,
                             num_epochs=1).iterator():
        for r in np.flatnonzero(b.weight > 0):
            assert b.labels[r][b.labels[r] != IGNORE_INDEX].tolist() == [tok.im_end_id]
            assert b.ctc_label_lengths[r] == 0
