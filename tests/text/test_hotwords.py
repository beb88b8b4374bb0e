"""Hotword retrieval against a brute-force search; pinyin units; hotword files; distractors."""

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from funasr_jax.text.hotwords import (
    HotwordError,
    HotwordIndex,
    hotword_units,
    load_hotwords,
    sample_distractors,
)


def _brute_force(index: HotwordIndex, hyp: str, top_k: int, threshold: float):
    """Every substring of the hypothesis's units against every word, rapidfuzz's Levenshtein."""
    h = hotword_units(hyp)
    scored = []
    for pos, w in enumerate(index.words):
        u = hotword_units(w)
        d = min(Levenshtein.distance(u, h[a:b]) for a in range(len(h) + 1) for b in range(a, len(h) + 1))
        s = max(0.0, 1.0 - d / len(u))
        if s >= threshold - 1e-9:
            scored.append((-s, -len(u), pos, w, s))
    return [(w, s) for *_, w, s in sorted(scored)[:top_k]]


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    han = "王芳汪方黄刘李张合肥成都重庆银行长江海南京市"  # homophones on purpose: many ties
    latin = "abcdeilnorstu"

    def word():
        kind = rng.integers(3)
        zh = "".join(rng.choice(list(han), rng.integers(1, 5)))
        en = "".join(rng.choice(list(latin), rng.integers(2, 7)))
        return zh if kind == 0 else en if kind == 1 else en + zh
    words = list(dict.fromkeys(word() for _ in range(60)))
    index = HotwordIndex(words)
    for _ in range(8):
        hyp = " ".join(word() for _ in range(rng.integers(1, 6)))
        for top_k, thr in ((5, 0.6), (50, 0.0), (3, 1.0)):
            got = index.retrieve(hyp, top_k=top_k, threshold=thr)
            want = _brute_force(index, hyp, top_k, thr)
            assert [w for w, _ in got] == [w for w, _ in want], hyp
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want])


def test_pinyin_polyphones_and_mixed_words():
    assert hotword_units("重庆") == ["chong", "qing"]
    assert hotword_units("银行") == ["yin", "hang"]
    assert hotword_units("行走") == ["xing", "zou"]
    assert hotword_units("绿色") == ["lv", "se"]  # ü as v, tones dropped
    assert hotword_units("AI芯片") == ["a", "i", "xin", "pian"]
    assert hotword_units("Hua-Wei 5G") == list("huawei5g")
    pieces = lambda t: ["▁" + t[:2], t[2:]]  # noqa: E731 - a stand-in word-piece splitter
    assert hotword_units("Dublin", pieces) == ["▁du", "blin"]


def test_tones_do_not_count_and_words_match_anywhere():
    index = HotwordIndex(["王芳", "合肥", "Dublin", "Seattle"])
    assert index.retrieve("昨天我见到汪方了") == [("王芳", 1.0)]
    got = dict(index.retrieve("we flew to dablin and then to seatle"))
    assert set(got) == {"Dublin", "Seattle"} and got["Dublin"] == pytest.approx(5 / 6)
    assert index.retrieve("") == [] and index.retrieve("完全无关的句子") == []


def test_bad_word_lists_are_named():
    with pytest.raises(HotwordError, match="hotword 1 .*'!!!'"):
        HotwordIndex(["合肥", "!!!"])
    with pytest.raises(HotwordError, match="threshold"):
        HotwordIndex(["合肥"], threshold=1.5)


def test_hotword_files(tmp_path):
    good = tmp_path / "hot.txt"
    good.write_text("# names\n王芳\n\n  Dublin  \n王芳\n#合肥\n", encoding="utf-8")
    assert load_hotwords(good) == ["王芳", "Dublin"]
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(HotwordError, match="bin.txt: binary content"):
        load_hotwords(binary)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(HotwordError, match="latin1.txt:2: not UTF-8"):
        load_hotwords(latin1)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n# only comments\n   \n")
    with pytest.raises(HotwordError, match="empty.txt: no hotwords"):
        load_hotwords(empty)
    long = tmp_path / "long.txt"
    long.write_text("合肥\n" + "很长" * 40 + "\n")
    with pytest.raises(HotwordError, match="long.txt:2: entry of 80 characters"):
        load_hotwords(long)
    with pytest.raises(HotwordError, match="no such hotword file"):
        load_hotwords(tmp_path / "missing.txt")


def test_distractors_are_deterministic_and_never_the_utterances_own():
    pool = [f"词{i}" for i in range(50)] + ["合肥", "王芳"]
    a = sample_distractors(pool, ["合肥", "王芳"], 20, np.random.default_rng(7))
    b = sample_distractors(pool, ["合肥", "王芳"], 20, np.random.default_rng(7))
    assert a == b and len(a) == len(set(a)) == 20 and not {"合肥", "王芳"} & set(a)
    assert len(sample_distractors(pool, pool[:45], 20, np.random.default_rng(0))) == 7
    assert sample_distractors(pool, [], 0, np.random.default_rng(0)) == []


def test_hotwords_cli_retrieves_and_benches(tmp_path, capsys):
    from funasr_jax import hotwords as cli

    f = tmp_path / "hot.txt"
    f.write_text("合肥\n王芳\n", encoding="utf-8")
    assert cli.main(["--hotwords", str(f), "我在汪方家"]) == 0
    assert capsys.readouterr().out.strip() == "1.000\t王芳"
    out = tmp_path / "bench.json"
    assert cli.main(["--bench", "50", "--out", str(out)]) == 0
    import json

    (row,) = json.loads(out.read_text())
    assert row["hotwords"] == 50 and row["ours_ms"] > 0
    assert len(cli.random_hotwords(300)) == 300
