"""The CTC first-pass hypothesis in the LLM prompt: manifest field, pipeline, tool, recognizer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.data import CharTokenizer, line, write_corpus

from funasr_jax.data.config import DataConfig, DataError
from funasr_jax.data.datasets import make_train_iterator
from funasr_jax.data.manifest import ManifestError, parse_line, read_manifests

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


def test_manifest_first_pass_field():
    ex = parse_line(line("u", "/a.wav", "ref", 100, first_pass="hyp text"), "m.jsonl", 3)
    assert ex.first_pass == "hyp text"
    assert parse_line(line("u", "/a.wav", "ref", 100), "m.jsonl", 3).first_pass is None
    with pytest.raises(ManifestError, match=r"m.jsonl:7: field 'first_pass' must be a string"):
        parse_line(line("u", "/a.wav", "ref", 100, first_pass=["x"]), "m.jsonl", 7)


def test_pipeline_puts_first_pass_before_instruction(tmp_path):
    path = write_corpus(str(tmp_path), [0.6, 0.9, 1.2, 0.7])
    rows = [json.loads(l) for l in Path(path).read_text(encoding="utf-8").splitlines()]
    with_fp = tmp_path / "fp.jsonl"
    with_fp.write_text("".join(json.dumps({**r, "first_pass": f"第{i}遍 hyp"}, ensure_ascii=False) + "\n"
                               for i, r in enumerate(rows)), encoding="utf-8")
    cfg = DataConfig(train_files=(str(with_fp),), batch_size=2, bucket_frames=(32,), token_multiple=8,
                     first_pass_prompt=True, shuffle=False)
    tok = CharTokenizer()
    b = next(make_train_iterator(cfg, read_manifests([str(with_fp)]), tok))
    for r, i in enumerate(b.example_index):
        prefix = tok.decode(b.input_ids[r, :int(b.audio_start[r])].tolist())
        assert prefix.endswith(f"<|im_start|>user\n一遍解码结果：第{i}遍 hyp\n语音转写：")

    # a manifest without the field is refused at setup, naming file:line
    cfg_plain = DataConfig(train_files=(path,), batch_size=2, bucket_frames=(32,), first_pass_prompt=True)
    with pytest.raises(DataError, match=rf"{path}:1 .*'first_pass'"):
        make_train_iterator(cfg_plain, read_manifests([path]), tok)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny model with the demo tokenizer, saved with first_pass_prompt and a joint
    CTC decoding weight."""
    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path_factory.mktemp("ck")
    save_params(d, init_params(cfg, jax.random.PRNGKey(3)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"), first_pass_prompt=True, ctc_weight=0.4)
    return d


def _small_manifest(folder: Path) -> Path:
    """Four demo test lines with their audio copied next to the manifest (relative paths), plus
    a malformed line."""
    lines = (DEMO / "test.jsonl").read_text(encoding="utf-8").splitlines()
    picked = lines[:2] + lines[-2:]
    (folder / "audio").mkdir(parents=True)
    for l in picked:
        rel = json.loads(l)["messages"][1]["content"].split("!")[1].split("<|endofspeech|>")[0]
        shutil.copy(DEMO / rel, folder / "audio" / Path(rel).name)
    fixed = [l.replace("!audio/test/", "!audio/") for l in picked]
    m = folder / "small.jsonl"
    m.write_text("\n".join(fixed[:2] + ["{not json"] + fixed[2:]) + "\n", encoding="utf-8")
    return m


def test_first_pass_tool_and_prompted_recognizer(tiny, tmp_path):
    from funasr_jax.audio.io import load_audio
    from funasr_jax.infer.first_pass import main as first_pass_main
    from funasr_jax.infer.recognizer import Recognizer, Utterance

    manifest = _small_manifest(tmp_path / "in")
    out_dir = tmp_path / "elsewhere" / "fp"
    assert first_pass_main(["--checkpoint", str(tiny), "--data", str(manifest), "--out-dir", str(out_dir)]) == 0
    out_lines = (out_dir / "small.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(out_lines) == 4  # the malformed line is left out
    src = read_manifests([str(manifest)], on_error="skip")
    got = read_manifests([str(out_dir / "small.jsonl")])
    rec = Recognizer.from_checkpoint(tiny, ctc_weight=0.0)
    assert rec.first_pass_prompt  # recorded in funasr_jax.json
    assert Recognizer.from_checkpoint(tiny).ctc_weight == 0.4
    for a, b in zip(src, got):
        assert os.path.samefile(a.audio_path, b.audio_path)  # relative path rewritten for the new folder
        assert (a.key, a.target, a.instruction, a.language, a.hotwords) == (b.key, b.target, b.instruction,
                                                                          b.language, b.hotwords)
        feats = rec.features(load_audio(a.audio_path))
        assert b.first_pass == rec.decode_ctc([feats])[0]  # one utterance at a time: no batching effects

    # The prompted recognizer equals a plain one given the hand-written first-pass line.
    plain = Recognizer(rec.cfg, rec.params, rec.tokenizer, rec.ctc_vocab, frontend=rec.frontend)
    utts = [Utterance(rec.features(load_audio(e.audio_path)), e.instruction) for e in got]
    manual = [Utterance(u.feats, "一遍解码结果：" + e.first_pass + "\n" + e.instruction) for u, e in zip(utts, got)]
    np.testing.assert_array_equal(rec.decode_llm(utts, max_new_tokens=6), plain.decode_llm(manual, max_new_tokens=6))
    assert plain.decode_llm(utts, max_new_tokens=6) == Recognizer(
        rec.cfg, rec.params, rec.tokenizer, rec.ctc_vocab, frontend=rec.frontend).decode_llm(utts, max_new_tokens=6)


def test_checkpoint_prompt_flag_checked(tiny, tmp_path):
    from funasr_jax.io.checkpoint import CheckpointError, load_model

    d = tmp_path / "ck"
    shutil.copytree(tiny, d)
    meta = json.loads((d / "funasr_jax.json").read_text())
    meta["prompt"] = {"first_pass": "yes"}
    (d / "funasr_jax.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="prompt.first_pass"):
        load_model(d)
    del meta["prompt"]  # checkpoints written before the flag existed: no first pass
    (d / "funasr_jax.json").write_text(json.dumps(meta))
    assert load_model(d).first_pass_prompt is False


def test_joint_decoding_needs_a_shared_vocabulary(tiny, tmp_path):
    import sentencepiece as spm

    from funasr_jax.infer.recognizer import Recognizer
    from funasr_jax.text.tokenizer import CTCVocabulary

    rec = Recognizer.from_checkpoint(tiny)
    with pytest.raises(ValueError, match="ctc_weight needs a model with the CTC branch"):
        Recognizer(rec.cfg, rec.params, rec.tokenizer, None, ctc_weight=0.5)
    with pytest.raises(ValueError, match=r"ctc_weight must lie in \[0, 1\)"):
        Recognizer(rec.cfg, rec.params, rec.tokenizer, rec.ctc_vocab, ctc_weight=1.0)
    other = tmp_path / "other.model"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world", "another sentence"] * 20),
                                   model_prefix=str(other.with_suffix("")), vocab_size=40, hard_vocab_limit=False,
                                   minloglevel=2)
    with pytest.raises(ValueError, match="sentencepiece model"):
        Recognizer(rec.cfg, rec.params, rec.tokenizer, CTCVocabulary(str(other)), ctc_weight=0.5)
    bad = tmp_path / "ck"
    shutil.copytree(tiny, bad)
    meta = json.loads((bad / "funasr_jax.json").read_text())
    meta["decoding"] = {"ctc_weight": 2}
    (bad / "funasr_jax.json").write_text(json.dumps(meta))
    from funasr_jax.io.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="decoding.ctc_weight"):
        Recognizer.from_checkpoint(bad)


def test_scripting_api_transcribes_like_the_cli_recognizer(tmp_path):
    """`funasr_jax.infer.api.transcribe` uses the checkpoint's CMVN, CTC vocabulary and prompt flags."""
    import funasr_jax.api as fa
    from configs.base import model_for_preset
    from funasr_jax.audio.frontend import FrontendConfig
    from funasr_jax.infer.recognizer import Recognizer
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path / "ck"
    save_params(d, init_params(cfg, jax.random.PRNGKey(5)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"), frontend=FrontendConfig(cmvn_file=str(DEMO / "am.mvn")),
                first_pass_prompt=True)
    wav = str(ROOT / "tests" / "fixtures" / "audio" / "zh.flac")
    m = fa.load(d)
    rec = Recognizer.from_checkpoint(d)
    assert rec.cmvn is not None and rec.first_pass_prompt
    assert fa.transcribe(m, [wav], max_new_tokens=5) == rec.transcribe([wav], max_new_tokens=5)
    assert fa.transcribe(m, [wav], mode="ctc") == rec.transcribe([wav], mode="ctc")
