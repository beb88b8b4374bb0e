"""Manifest parsing: good lines, and every malformed-line case names file:line and the field."""

from __future__ import annotations

import json
import logging
import os

import pytest
from helpers.data import line

from funasr_jax.data.manifest import (
    Example,
    ManifestError,
    ManifestStats,
    read_manifests,
)


def _write(tmp_path, lines, name="m.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def test_good_lines(tmp_path):
    sub = tmp_path / "corpus"
    sub.mkdir()
    good = [
        line("k1", "wav/a.wav", "你好世界", 321, language="zh", hotwords=["阿里", "通义"], subset="demo"),
        line("k2", "/abs/b.wav", "hello", 100, instruction="Speech transcription:"),
        "",  # blank line: ignored
        json.dumps({"messages": [{"role": "user", "content": "<|startofspeech|>!c.flac<|endofspeech|>"},
                                 {"role": "assistant", "content": ""}], "speech_length": [7]}),
    ]
    path = _write(sub, good)
    exs = read_manifests([path])
    assert len(exs) == 3
    a, b, c = exs
    assert a == Example(key="k1", audio_path=os.path.join(str(sub), "wav", "a.wav"),
                        system="You are a helpful assistant.", instruction="语音转写：", target="你好世界",
                        language="zh", hotwords=("阿里", "通义"), subset="demo", speech_length=321,
                        source=path, line=1, text_length=4)
    assert b.audio_path == "/abs/b.wav" and b.instruction == "Speech transcription:" and b.line == 2
    assert b.language is None and b.hotwords == () and b.subset is None
    # defaults: FunASR's system prompt, a key from file:line, list-wrapped speech_length
    assert c.system == "You are a helpful assistant." and c.key == "m.jsonl:4"
    assert c.instruction == "" and c.target == "" and c.speech_length == 7 and c.line == 4
    assert c.where == f"{path}:4"


def _msgs(user="语音转写：<|startofspeech|>!a.wav<|endofspeech|>", assistant="hi"):
    return [{"role": "system", "content": "S"}, {"role": "user", "content": user},
            {"role": "assistant", "content": assistant}]


BAD = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"speech_length": 5}), "'messages'"),
    (json.dumps({"messages": "x", "speech_length": 5}), "'messages'"),
    (json.dumps({"messages": _msgs()[:2], "speech_length": 5}), "'assistant'"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}] + _msgs(), "speech_length": 5}), "role"),
    (json.dumps({"messages": _msgs(user="语音转写：a.wav"), "speech_length": 5}), "speech marker"),
    (json.dumps({"messages": _msgs(user="<|startofspeech|>a.wav<|endofspeech|>"), "speech_length": 5}),
     "'!<audio path>'"),
    (json.dumps({"messages": _msgs(assistant=["x"]), "speech_length": 5}), "content"),
    (json.dumps({"messages": _msgs()}), "'speech_length'"),
    (json.dumps({"messages": _msgs(), "speech_length": "12"}), "'speech_length'"),
    (json.dumps({"messages": _msgs(), "speech_length": 5, "text_length": 1.5}), "'text_length'"),
    (json.dumps({"messages": _msgs(), "speech_length": 5, "language": "fr"}), "'language'"),
    (json.dumps({"messages": _msgs(), "speech_length": 5, "hotwords": "abc"}), "'hotwords'"),
    (json.dumps({"messages": _msgs(), "speech_length": 5, "key": {"a": 1}}), "'key'"),
    (json.dumps({"messages": _msgs(), "speech_length": 5, "subset": 3}), "'subset'"),
]


@pytest.mark.parametrize("bad,field", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_line_raise_names_file_line_field(tmp_path, bad, field):
    path = _write(tmp_path, [line("ok", "a.wav", "t", 10), bad, line("ok2", "b.wav", "t", 10)])
    with pytest.raises(ManifestError) as ei:
        read_manifests([path], on_error="raise")
    msg = str(ei.value)
    assert msg.startswith(f"{path}:2: "), msg
    assert field in msg, msg


def test_bad_lines_skip_warns_and_counts(tmp_path, caplog):
    p1 = _write(tmp_path, [line("a", "a.wav", "t", 10), BAD[0][0], line("b", "b.wav", "t", 10)], "one.jsonl")
    p2 = _write(tmp_path, [BAD[12][0], BAD[6][0], line("c", "c.wav", "t", 10)], "two.jsonl")
    stats = ManifestStats()
    with caplog.at_level(logging.WARNING, logger="funasr_jax.data.manifest"):
        exs = read_manifests([p1, p2], on_error="skip", stats=stats)
    assert [e.key for e in exs] == ["a", "b", "c"]
    assert [(e.source, e.line) for e in exs] == [(p1, 1), (p1, 3), (p2, 3)]
    assert (stats.lines, stats.examples, stats.skipped) == (6, 3, 3)
    per_line = [r.getMessage() for r in caplog.records if "skipping manifest line" in r.getMessage()]
    assert len(per_line) == 3
    assert f"{p1}:2:" in per_line[0] and f"{p2}:1:" in per_line[1] and "'language'" in per_line[1]
    assert f"{p2}:2:" in per_line[2]
    assert any("skipped 3 bad line" in r.getMessage() for r in caplog.records)


def test_missing_manifest_and_bad_mode(tmp_path):
    with pytest.raises(ManifestError, match="nope.jsonl"):
        read_manifests([str(tmp_path / "nope.jsonl")])
    with pytest.raises(ValueError, match="on_error"):
        read_manifests([], on_error="ignore")
