"""Prompt construction vs a hand-tokenized expectation and vs FunASR's own data code."""

from __future__ import annotations

import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import soundfile as sf

from funasr_jax.audio.frontend import FrontendConfig, extract_features
from funasr_jax.models.config import audio_token_count
from funasr_jax.text.prompt import build_prompt, instruction_text
from helpers.data import SR, CharTokenizer, line, tone

START, END = 3001, 3002


def c(s):
    return [ord(x) + 10 for x in s]


def test_instruction_text_literals():
    assert instruction_text() == "语音转写："
    assert instruction_text("zh") == "语音转写成中文："
    assert instruction_text("en", itn=False) == "语音转写成英文，不进行文本规整："
    assert instruction_text("粤语") == "语音转写成粤语："
    assert instruction_text("cs") == "语音转写："
    assert instruction_text(None, ["阿里巴巴", "通义"]) == (
        "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n"
        "**上下文信息：**\n\n\n热词列表：[阿里巴巴, 通义]\n语音转写：")


def test_instruction_text_matches_funasr_get_prompt():
    from funasr.models.fun_asr_nano.model import FunASRNano

    for hot in ([], ["a"], ["阿里巴巴", "Qwen", "通义"]):
        for lang_code, lang_name in ((None, None), ("zh", "中文"), ("en", "英文"), ("ja", "日文")):
            for itn in (True, False):
                ref = FunASRNano.get_prompt(None, hot, lang_name, itn)
                assert instruction_text(lang_code, hot, itn) == ref
                assert instruction_text(lang_name, hot, itn) == ref


def test_build_prompt_hand_tokenized():
    tok = CharTokenizer()
    p = build_prompt(tok, system="You are a helpful assistant.", instruction="语音转写：", n_audio=4,
                     target="hi there")
    prefix = [START] + c("system\nYou are a helpful assistant.") + [END] + c("\n") + [START] + c("user\n语音转写：")
    suffix = [END] + c("\n") + [START] + c("assistant\n")
    target = c("hi there") + [END]
    assert p.input_ids == prefix + [0] * 4 + suffix + target
    assert p.labels == [-100] * (len(prefix) + 4 + len(suffix)) + target
    assert p.audio_start == len(prefix) and p.n_audio == 4 and p.num_target == len(target)
    # inference form: no target, prev_text continues the assistant turn, unsupervised
    q = build_prompt(tok, system="S", instruction="", n_audio=0, prev_text="abc")
    assert q.input_ids == [START] + c("system\nS") + [END] + c("\n") + [START] + c("user\n") + suffix + c("abc")
    assert q.labels == [-100] * len(q.input_ids) and q.audio_start == 17
    # empty transcript (noise-only audio): only <|im_end|> is supervised
    e = build_prompt(tok, system="S", instruction="", n_audio=2, target="")
    assert e.labels[-1] == END and e.num_target == 1 and e.input_ids[-1] == END
    with pytest.raises(ValueError, match="n_audio"):
        build_prompt(tok, system="S", instruction="", n_audio=-1)


@pytest.fixture(scope="module")
def funasr_bits():
    import funasr.datasets.fun_asr_datasets.datasets  # noqa: F401  (registers the classes)
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.fun_asr_nano.model import FunASRNano
    from funasr.register import tables

    fe = WavFrontend(fs=SR, window="hamming", n_mels=80, frame_length=25, frame_shift=10,
                     lfr_m=7, lfr_n=6, cmvn_file=None)
    return tables.dataset_classes["FunASR"], fe, FunASRNano


@pytest.mark.parametrize("seconds,instruction,target", [
    (1.0, "语音转写：", "hello world"),
    (2.37, instruction_text("zh", ["阿里"]), "开饭时间早上九点至下午五点。"),
    (0.51, "Speech transcription:", "x"),
], ids=["plain", "hotwords-zh", "short"])
def test_build_prompt_matches_funasr_training_dataset(tmp_path, funasr_bits, seconds, instruction, target):
    dataset_cls, fe, _ = funasr_bits
    wav = tone(seconds)
    sf.write(tmp_path / "a.wav", wav, SR, subtype="FLOAT")
    (tmp_path / "m.jsonl").write_text(
        line("a", str(tmp_path / "a.wav"), target, 1 + (len(wav) - 400) // 160, instruction=instruction) + "\n",
        encoding="utf-8")
    tok = CharTokenizer()
    ds = dataset_cls(str(tmp_path / "m.jsonl"), index_ds="FunASR", frontend=fe, tokenizer=tok,
                     min_source_length=0)
    ref = ds[0]
    t = extract_features(wav, FrontendConfig()).shape[0]
    assert t == int(ref["speech_lengths"][0][0])
    n = audio_token_count(t)
    p = build_prompt(tok, system="You are a helpful assistant.", instruction=instruction, n_audio=n, target=target)
    assert p.input_ids == ref["input_ids"].tolist()
    assert p.labels == ref["labels_ids"].tolist()
    assert [p.audio_start] == ref["fbank_beg"].tolist()
    assert [p.n_audio] == ref["fake_token_len"].tolist()


def test_build_prompt_matches_funasr_inference_prev_text(tmp_path, funasr_bits):
    _, fe, nano = funasr_bits
    wav = tone(1.7, 300.0)
    sf.write(tmp_path / "b.wav", wav, SR, subtype="FLOAT")
    instruction = instruction_text("en", itn=False)
    contents = {"system": ["You are a helpful assistant."],
                "user": [f"{instruction}<|startofspeech|>!{tmp_path / 'b.wav'}<|endofspeech|>"],
                "assistant": ["null"]}
    tok = CharTokenizer()
    ref = nano.data_load_speech(types.SimpleNamespace(use_low_frame_rate=True), contents, tok, fe,
                                prev_text="already said ")
    n = audio_token_count(extract_features(wav).shape[0])
    p = build_prompt(tok, system="You are a helpful assistant.", instruction=instruction, n_audio=n,
                     prev_text="already said ")
    assert p.input_ids == ref["source_ids"][0].tolist()
    assert [p.audio_start] == ref["fbank_beg"][0].tolist() and [n] == ref["fake_token_len"][0].tolist()
    full = build_prompt(tok, system="You are a helpful assistant.", instruction=instruction, n_audio=n,
                        prev_text="already said ", target="null")
    assert full.input_ids == ref["input_ids"][0].tolist()
    assert full.labels == ref["labels_ids"].tolist()
