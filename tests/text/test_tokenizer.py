"""funasr_jax.text.tokenizer against sentencepiece itself and transformers' PreTrainedTokenizerFast."""

import json
import os
import re

import pytest
import sentencepiece as spm

from funasr_jax.text.tokenizer import (CTCVocabulary, HFTokenizer, SentencePieceTokenizer, Tokenizer,
                                  TokenizerError, load_tokenizer)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "data", "demo")
SP_MODEL = os.path.join(DEMO, "tokenizer.model")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|startofspeech|>", "<|endofspeech|>"]
HOTWORD_PROMPT = ("请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n"
                  "**上下文信息：**\n\n\n热词列表：[张伟, Kubernetes]\n语音转写：")
CHAT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + HOTWORD_PROMPT + "<|startofspeech|>!audio/test/00001.ogg<|endofspeech|><|im_end|>\n"
        "<|im_start|>assistant\n我们用 PyTorch 训练模型<|im_end|>")


def _corpus_sentences(per_language=15):
    out = {"zh": [], "en": [], "cs": []}
    with open(os.path.join(DEMO, "test.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if len(out[rec["language"]]) < per_language:
                out[rec["language"]].append(rec["messages"][2]["content"])
    return out


@pytest.fixture(scope="module")
def ref():
    return spm.SentencePieceProcessor(model_file=SP_MODEL)


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer(SP_MODEL)


def test_sentencepiece_roundtrip_matches_reference(tok, ref):
    sentences = _corpus_sentences()
    for lang, texts in sentences.items():
        assert texts, lang
        for text in texts:
            ids = tok.encode(text)
            assert ids == ref.encode(text), text
            assert tok.decode(ids) == text == ref.decode(ids)
            if lang == "zh":
                assert " " not in tok.decode(ids)
    assert tok.decode(tok.encode("我们用 PyTorch 训练模型")) == "我们用 PyTorch 训练模型"
    assert isinstance(tok, Tokenizer)


def test_special_tokens_are_single_ids(tok, ref):
    for s in SPECIALS:
        assert tok.encode(s) == [ref.piece_to_id(s)]
        assert ref.id_to_piece(tok.token_to_id(s)) == s
    assert tok.eos_id == tok.im_end_id == ref.piece_to_id("<|im_end|>")
    assert tok.im_start_id == ref.piece_to_id("<|im_start|>")
    assert tok.pad_id == ref.piece_to_id("<|endoftext|>")
    assert {ref.piece_to_id(s) for s in SPECIALS} <= tok.special_ids
    # user-defined pieces are matched by sentencepiece itself: an independent reference
    ids = tok.encode(CHAT)
    assert ids == ref.encode(CHAT)
    assert ids.count(tok.im_start_id) == 3 and ids.count(tok.im_end_id) == 3
    assert tok.decode(ids, skip_special=False) == CHAT
    stripped = CHAT
    for s in SPECIALS:
        stripped = stripped.replace(s, "")
    assert tok.decode(ids) == stripped


def test_prompt_strings_have_no_unknown_or_byte_pieces(tok, ref):
    prompts = ["You are a helpful assistant.", "语音转写：", "语音转写成中文：", "语音转写成英文：",
               "Speech transcription:", "Transcribe speech into Chinese:", HOTWORD_PROMPT, "system", "user",
               "assistant"]
    for p in prompts:
        pieces = [ref.id_to_piece(i) for i in tok.encode(p)]
        assert ref.unk_id() not in tok.encode(p), p
        assert not [x for x in pieces if re.fullmatch(r"<0x[0-9A-F]{2}>", x)], (p, pieces)
    # unseen characters fall back to bytes and still round-trip
    assert tok.decode(tok.encode("鑫犇 Zyxw")) == "鑫犇 Zyxw"


def test_ctc_vocabulary_blank_is_last(ref):
    ctc = CTCVocabulary(SP_MODEL)
    assert ctc.vocab_size == ref.get_piece_size() + 1
    assert ctc.blank_id == ctc.vocab_size - 1 == ref.get_piece_size()
    text = "张伟明天去 Seattle 参加 Google 的会议"
    ids = ctc.encode(text)
    assert ids == ref.encode(text) and ctc.blank_id not in ids
    with_blanks = [ctc.blank_id]
    for i in ids:
        with_blanks += [i, ctc.blank_id]
    assert ctc.decode(with_blanks) == text
    with pytest.raises(ValueError):
        ctc.decode([ctc.vocab_size])


# --------------------------------------------------------------------------- Hugging Face
def _build_qwen_like_tokenizer_json(path):
    from tokenizers import AddedToken, Tokenizer as HFTok, decoders, models, pre_tokenizers, trainers

    t = HFTok(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = ["Please send the Kubernetes report to Alice before Friday", "我们用 PyTorch 训练模型",
              "You are a helpful assistant.", "语音转写：", "张伟明天去杭州参加阿里巴巴的会议"] * 20
    t.train_from_iterator(corpus, trainer)
    t.add_special_tokens([AddedToken(s, special=True, normalized=False)
                          for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    t.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    t.save(str(path))
    return path


def test_hf_tokenizer_matches_transformers(tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = _build_qwen_like_tokenizer_json(tmp_path / "tokenizer.json")
    ours = HFTokenizer(path)
    ref = PreTrainedTokenizerFast(tokenizer_file=str(path), clean_up_tokenization_spaces=False)
    texts = [CHAT, "Please send the Kubernetes report to Alice<|im_end|>", "<think>\n\n</think>\n\n好的",
             "我们用 PyTorch 训练模型"]
    for text in texts:
        ids = ours.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special=False) == ref.decode(ids, skip_special_tokens=False) == text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]:
        assert ours.encode(s) == [ref.convert_tokens_to_ids(s)]
    assert ours.im_end_id == ours.eos_id == ref.convert_tokens_to_ids("<|im_end|>")
    assert ours.pad_id == ref.convert_tokens_to_ids("<|endoftext|>")
    assert ours.vocab_size == len(ref)
    ref_special = {i for i, t in ref.added_tokens_decoder.items() if t.special}
    assert ours.special_ids == ref_special and ref.convert_tokens_to_ids("<think>") not in ref_special
    # a folder holding tokenizer.json loads the same
    assert load_tokenizer(tmp_path).encode(CHAT) == ours.encode(CHAT)


def test_load_tokenizer_dispatch_and_errors(tmp_path):
    assert isinstance(load_tokenizer(SP_MODEL), SentencePieceTokenizer)
    missing = tmp_path / "nope.model"
    with pytest.raises(ValueError, match="nope.model"):
        load_tokenizer(missing)
    bad = tmp_path / "broken.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="broken.model"):
        load_tokenizer(bad)
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(bad_json)
    other = tmp_path / "vocab.txt"
    other.write_text("a\nb\n")
    with pytest.raises(TokenizerError, match="vocab.txt"):
        load_tokenizer(other)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(TokenizerError, match="empty"):
        load_tokenizer(empty_dir)


def test_sentencepiece_without_chatml_specials_is_rejected(tmp_path):
    prefix = str(tmp_path / "plain")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world", "你好世界"] * 10), model_prefix=prefix,
                                   vocab_size=20, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(TokenizerError, match=r"<\|im_start\|>.*plain.model"):
        SentencePieceTokenizer(prefix + ".model")
