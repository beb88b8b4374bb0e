"""The recognizer puts hotwords retrieved from each segment's CTC hypothesis into its prompt,
in FunASR's format; the CLIs and the API take hotwords and context."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from helpers.data import tone

from funasr_jax.infer import recognizer as R
from funasr_jax.infer.recognizer import Context, Recognizer, Utterance
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
HEADER = "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"


@pytest.fixture(scope="module")
def parts():
    from configs.base import model_for_preset
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    tok = load_tokenizer(str(DEMO / "tokenizer.model"))
    return cfg, init_params(cfg, jax.random.PRNGKey(3)), tok, CTCVocabulary(str(DEMO / "tokenizer.model"))


def _captured(monkeypatch, rec, utts, ctc_texts):
    seen = []
    real = R.build_prompt

    def capture(tokenizer, **kw):
        seen.append(kw["instruction"])
        return real(tokenizer, **kw)
    monkeypatch.setattr(R, "build_prompt", capture)
    monkeypatch.setattr(rec, "_ctc_texts", lambda logp, lengths: list(ctc_texts))
    rec.decode_llm_with_first_pass(utts, max_new_tokens=2)
    return seen


def test_retrieved_hotwords_go_into_the_release_prompt(parts, monkeypatch):
    cfg, params, tok, ctc = parts
    rec = Recognizer(cfg, params, tok, ctc, hotword_top_k=2)
    feats = rec.features(tone(0.6, 300))
    index = HotwordIndex(["Dublin", "合肥", "王芳", "成都"])
    utts = [Utterance(feats, "语音转写：", hotwords=index), Utterance(feats, "语音转写："),
            Utterance(feats, "语音转写：", hotwords=index, previous="上一句", passages=("资料一",))]
    seen = _captured(monkeypatch, rec, utts, ["我在合肥见到汪方和程度", "合肥", "什么都没有"])
    # 合肥 and 王芳 (homophone 汪方) score 1.0; 成都 (程度) too, but top_k = 2 keeps list order
    assert seen[0] == HEADER + "热词列表：[合肥, 王芳]\n语音转写："
    assert seen[1] == "语音转写："  # no index: no header
    assert seen[2] == HEADER + "上文：上一句\n资料一\n语音转写："  # nothing retrieved: context only


def test_without_a_ctc_branch_the_list_is_pasted_as_given(parts, monkeypatch):
    cfg, params, tok, _ = parts
    no_ctc = dataclasses.replace(cfg, ctc=dataclasses.replace(cfg.ctc, enabled=False))
    rec = Recognizer(no_ctc, params, tok, None, hotword_top_k=3)
    feats = rec.features(tone(0.6, 300))
    seen = _captured(monkeypatch, rec, [Utterance(feats, "语音转写：", hotwords=HotwordIndex(["合肥", "王芳"]))], [])
    assert seen == [HEADER + "热词列表：[合肥, 王芳]\n语音转写："]
    with pytest.raises(ValueError, match="no CTC branch.*hotword_top_k=3"):
        rec.decode_llm_with_first_pass([Utterance(feats, "x", hotwords=HotwordIndex(list("甲乙丙丁")))], 2)


def test_transcribe_and_evaluate_clis_with_hotwords(tmp_path):
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params
    from configs.base import model_for_preset
    from helpers.train import small_manifest

    cfg = model_for_preset("tiny")
    ckpt = tmp_path / "ckpt"
    save_params(ckpt, init_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    hot = tmp_path / "hot.txt"
    hot.write_text("# test\n合肥\nDublin\n", encoding="utf-8")
    audio = str(DEMO / "audio" / "test" / "00000.ogg")
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), "--hotwords", str(hot), "--hotword", "王芳",
            "--context", "上一句", "--passage", "资料", "--max-new-tokens", "3", "--json", audio)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1])["path"] == audio
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\x00\x01")
    r = run("funasr_jax.transcribe", "--checkpoint", str(ckpt), "--hotwords", str(bad), audio)
    assert r.returncode == 2 and "bad.txt: binary content" in r.stderr
    data = small_manifest(tmp_path, "test", 6)
    cats = tmp_path / "cats.tsv"
    cats.write_text("合肥\tplaces\n", encoding="utf-8")
    r = run("funasr_jax.evaluate", "--checkpoint", str(ckpt), "--data", data, "--hotwords", "manifest",
            "--distractors", "5", "--hotword-categories", str(cats), "--max-new-tokens", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert set(out) == {"without", "with"}
    for side in out.values():
        assert side["utterances"] == 6 and {"overall", "category/places"} <= set(side["keywords"])
    r = run("funasr_jax.evaluate", "--checkpoint", str(ckpt), "--data", data, "--hotwords", "manifest",
            "--max-new-tokens", "3")
    assert r.returncode == 0 and "rec with" in r.stdout


def test_api_transcribe_takes_hotwords_and_context(parts):
    cfg, params, tok, ctc = parts
    rec = Recognizer(cfg, params, tok, ctc)
    out = rec.transcribe([tone(0.5, 220)], hotwords=["合肥"], context=Context("上一句"), max_new_tokens=2)
    assert len(out) == 1 and isinstance(out[0], str)
