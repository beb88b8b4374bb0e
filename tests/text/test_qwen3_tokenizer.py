"""The bundled Qwen3 tokenizer against independent references.

* ids published with Hugging Face's Qwen2.5 / Qwen3 tokenizers (chat prompts, `Hello` = 9707, ...)
  and the added-token table of Qwen3's tokenizer_config.json, written out here by hand;
* tiktoken built from the ranks and pre-tokeniser regex that ship in the dashscope wheel (read as
  files: the ranks with tiktoken's own loader, the regex from dashscope's source with `ast`);
* FunASR's own Fun-ASR-Nano prompt code (`get_prompt`, `generate_chatml`, `data_template`,
  `data_load_speech`, called as unbound methods on a stub) over transformers'
  PreTrainedTokenizerFast, for the prompt ids.
"""

import ast
import gzip
import importlib.util
import json
import os
import random
import types
import unicodedata
import zipfile

import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from funasr_jax.text import qwen3_tokenizer as q3
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt, instruction_text
from funasr_jax.text.tokenizer import QWEN3_TOKENIZER, HFTokenizer, TokenizerError, load_tokenizer

# Qwen3's added tokens: id -> (content, special), from its tokenizer_config.json.
QWEN3_ADDED = {
    151643: ("<|endoftext|>", True), 151644: ("<|im_start|>", True), 151645: ("<|im_end|>", True),
    151646: ("<|object_ref_start|>", True), 151647: ("<|object_ref_end|>", True),
    151648: ("<|box_start|>", True), 151649: ("<|box_end|>", True),
    151650: ("<|quad_start|>", True), 151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True), 151653: ("<|vision_end|>", True),
    151654: ("<|vision_pad|>", True), 151655: ("<|image_pad|>", True), 151656: ("<|video_pad|>", True),
    151657: ("<tool_call>", False), 151658: ("</tool_call>", False),
    151659: ("<|fim_prefix|>", False), 151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False), 151662: ("<|fim_pad|>", False),
    151663: ("<|repo_name|>", False), 151664: ("<|file_sep|>", False),
    151665: ("<tool_response>", False), 151666: ("</tool_response>", False),
    151667: ("<think>", False), 151668: ("</think>", False),
}
CHAT_HEAD = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             "你好<|im_end|>\n<|im_start|>assistant\n")
# Token ids printed by the Hugging Face Qwen tokenizers in public examples.
PUBLISHED = {
    "Hello": [9707],
    " world": [1879],
    "你好": [108386],
    CHAT_HEAD: [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
                108386, 151645, 198, 151644, 77091, 198],
    "What is 2 plus 2?": [3838, 374, 220, 17, 5519, 220, 17, 30],
    "What is 2+2?": [3838, 374, 220, 17, 10, 17, 30],
    "类型#上衣*风格#街头*图案#创意*衣样式#卫衣": [31905, 2, 17447, 99741, 9, 104040, 2, 108094, 9, 108108, 2,
                                   102343, 9, 99741, 112453, 2, 99417, 99741],
}


def _dashscope_dir() -> str:
    spec = importlib.util.find_spec("dashscope")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, \
        "dashscope is not installed (it is in the `test` extra: pip install -e '.[test]')"
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def ranks_file():
    path = os.path.join(_dashscope_dir(), "resources", "qwen.tiktoken")
    assert os.path.isfile(path), path
    return path


@pytest.fixture(scope="module")
def pat_str():
    """dashscope's pre-tokeniser regex, read from its source (dashscope itself is not imported)."""
    src = open(os.path.join(_dashscope_dir(), "tokenizers", "qwen_tokenizer.py"), encoding="utf-8").read()
    return next(ast.literal_eval(n.value) for n in ast.parse(src).body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "PAT_STR" for t in n.targets))


@pytest.fixture(scope="module")
def ref(ranks_file, pat_str):
    """tiktoken with dashscope's ranks and regex, and Qwen3's added tokens as specials."""
    return tiktoken.Encoding("qwen3-ref", pat_str=pat_str, mergeable_ranks=load_tiktoken_bpe(ranks_file),
                             special_tokens={c: i for i, (c, _) in QWEN3_ADDED.items()})


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(QWEN3_TOKENIZER)


@pytest.fixture(scope="module")
def doc():
    """The bundled tokenizer JSON, parsed."""
    return json.loads(q3.load_qwen3_json())


def _random_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["hello", "World", "ASR", "Kubernetes", "PyTorch", "it's", "we'LL", "don't", "x", "GPU"]
    punct = list(",.!?;:'\"()[]{}<>/\\-_=+*&^%$#@~`|") + list("，。！？、；：“”‘’（）《》【】…—")
    spaces = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\u3000", "\u00a0"]
    emoji = ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇨🇳", "❤️", "🤖"]

    def piece():
        kind = rng.randrange(6)
        if kind == 0:
            return "".join(chr(rng.randrange(0x4E00, 0x9FA6)) for _ in range(rng.randint(1, 6)))
        if kind == 1:
            return rng.choice(words)
        if kind == 2:
            return str(rng.randrange(10 ** rng.randint(1, 7)))
        if kind == 3:
            return "".join(rng.choice(punct) for _ in range(rng.randint(1, 3)))
        if kind == 4:
            return rng.choice(spaces)
        return rng.choice(emoji)

    return [unicodedata.normalize("NFC", "".join(piece() for _ in range(rng.randint(1, 25))))
            for _ in range(n)]


def test_published_ids(tok):
    for text, ids in PUBLISHED.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids, skip_special=False) == text


def test_added_tokens_ids_and_flags(tok):
    assert tok.vocab_size == 151_669
    for i, (content, special) in QWEN3_ADDED.items():
        assert tok.token_to_id(content) == i, content
        assert tok.id_to_token(i) == content
        assert tok.encode(content) == [i], content
        assert (i in tok.special_ids) == special, content
    assert tok.special_ids == {i for i, (_, s) in QWEN3_ADDED.items() if s}
    assert (tok.im_start_id, tok.im_end_id, tok.eos_id, tok.pad_id) == (151644, 151645, 151645, 151643)
    assert tok.encode("<|startofspeech|>") != [tok.token_to_id("<|im_start|>")]  # not a Qwen token
    with pytest.raises(TokenizerError, match="startofspeech"):
        tok.token_to_id("<|startofspeech|>")


def test_pipeline_is_qwen3s(doc, pat_str):
    """Normaliser, pre-tokeniser, decoder and BPE flags as in Qwen3's tokenizer.json (the regex
    matches dashscope's; Qwen's vocabulary has no multi-digit token, so `\\p{N}` vs `\\p{N}{1,3}`
    would not show in any encoding)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    assert doc["normalizer"] == {"type": "NFC"}
    assert doc["pre_tokenizer"] == {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pat_str}, "behavior": "Isolated", "invert": False}, byte_level]}
    assert doc["decoder"] == byte_level
    model = {k: v for k, v in doc["model"].items() if k not in ("vocab", "merges")}
    assert model == {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    assert [(t["id"], t["content"], t["special"], t["normalized"]) for t in doc["added_tokens"]] == \
        [(i, c, s, False) for i, (c, s) in QWEN3_ADDED.items()]


def test_vocab_is_the_ranks(tok, ranks_file):
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte map, not ours

    byte_char = bytes_to_unicode()
    ranks = load_tiktoken_bpe(ranks_file)
    expected = {"".join(byte_char[b] for b in token): rank for token, rank in ranks.items()}
    assert len(expected) == 151_643
    vocab = tok._tok.get_vocab(with_added_tokens=False)
    assert vocab == expected


def test_matches_tiktoken_and_roundtrips(tok, ref):
    texts = _random_strings(400, seed=0)
    assert len(set(texts)) > 390
    for text in texts:
        ids = tok.encode(text)
        assert ids == ref.encode_ordinary(text), repr(text)
        assert tok.decode(ids) == text
    # long runs: whitespace, digits, repeated CJK and emoji
    for text in [" " * 300, "\n" * 50 + "x", "1234567890" * 20, "好" * 200, "😀" * 40, "a\u0301" * 3]:
        text = unicodedata.normalize("NFC", text)
        assert tok.encode(text) == ref.encode_ordinary(text), repr(text[:20])
        assert tok.decode(tok.encode(text)) == text


def test_special_strings_inside_text(tok, ref):
    rng = random.Random(1)
    contents = [c for c, _ in QWEN3_ADDED.values()]
    for base in _random_strings(60, seed=2):
        cut = sorted(rng.sample(range(len(base) + 1), 2))
        text = base[:cut[0]] + rng.choice(contents) + base[cut[0]:cut[1]] + rng.choice(contents) + base[cut[1]:]
        ids = tok.encode(text)
        assert ids == ref.encode(text, allowed_special="all"), repr(text)
        assert tok.decode(ids, skip_special=False) == text
        stripped = text
        for c, special in QWEN3_ADDED.values():
            if special:
                stripped = stripped.replace(c, "")
        assert tok.decode(ids) == stripped


def test_nfc_normalisation(tok, ref):
    decomposed = "Cafe\u0301 nai\u0308ve Ångstro\u0308m"  # combining accents
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed
    assert tok.encode(decomposed) == tok.encode(composed) == ref.encode_ordinary(composed)


def test_bundled_file_is_reproduced_from_the_wheel_ranks(ranks_file, tmp_path, capsys):
    # the CLI's --from-wheel path, on a wheel-shaped zip holding dashscope's ranks file
    wheel = tmp_path / "dashscope-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(ranks_file, "dashscope/resources/qwen.tiktoken")
    assert q3.main(["--from-wheel", str(wheel), "--out", str(tmp_path / "out")]) == 0
    log = capsys.readouterr().out
    assert "vocab size 151,669" in log and "151,387 merges" in log
    built = (tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8")
    shipped = gzip.decompress(q3.bundled_path().read_bytes()).decode("utf-8")
    assert built == shipped
    # and the folder it wrote is a loadable tokenizer
    assert load_tokenizer(tmp_path / "out").encode(CHAT_HEAD) == PUBLISHED[CHAT_HEAD]


def test_merges_are_consistent(doc):
    vocab, merges = doc["model"]["vocab"], doc["model"]["merges"]
    assert len(merges) == len(vocab) - 256
    merged_ranks = [vocab[a + b] for a, b in (m.split(" ") for m in merges)]
    assert merged_ranks == sorted(merged_ranks) and len(set(merged_ranks)) == len(merged_ranks)
    for m, r in zip(merges, merged_ranks):
        a, b = m.split(" ")
        assert vocab[a] < r and vocab[b] < r, m


def test_specs_and_errors(tmp_path):
    assert isinstance(load_tokenizer("Qwen3"), HFTokenizer)
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(TokenizerError, match="nope"):
        load_tokenizer(missing)
    with pytest.raises(TokenizerError, match="qwen3x"):
        load_tokenizer(tmp_path / "qwen3x")
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(b"SGVsbG8= 0\nnot-base64!! 1\n")
    with pytest.raises(q3.RanksError, match=r"bad\.tiktoken, line 2"):
        q3.read_ranks(bad)
    gap = tmp_path / "gap.tiktoken"
    gap.write_bytes(b"YQ== 0\nYg== 2\n")
    with pytest.raises(q3.RanksError, match="not exactly 0"):
        q3.read_ranks(gap)
    empty_wheel = tmp_path / "x.whl"
    with zipfile.ZipFile(empty_wheel, "w") as z:
        z.writestr("other.txt", "")
    with pytest.raises(q3.RanksError, match="holds no dashscope/resources/qwen.tiktoken"):
        q3.read_ranks_from_wheel(empty_wheel)
    with pytest.raises(q3.RanksError, match="not found"):
        q3.read_ranks_from_wheel(tmp_path / "absent.whl")


@pytest.fixture(scope="module")
def hf_fast(tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("qwen3") / "tokenizer.json"
    path.write_text(q3.load_qwen3_json(), encoding="utf-8")
    return PreTrainedTokenizerFast(tokenizer_file=str(path))


class _StubFrontend:
    """What `data_load_speech` reads of a front end; returns T all-zero 560-dim LFR frames."""
    fs, frame_shift, lfr_n = 16000, 10, 6

    def __init__(self, frames):
        self.frames = frames

    def __call__(self, data, data_len, **kw):
        import torch
        return torch.zeros(1, self.frames, 560), torch.tensor([self.frames])


@pytest.mark.parametrize("hotwords, language, itn", [
    ([], None, True), (["张伟", "Kubernetes"], None, True), ([], "zh", False), (["阿里巴巴"], "en", True)])
def test_prompt_ids_match_funasr(tok, hf_fast, hotwords, language, itn):
    torch = pytest.importorskip("torch")
    from funasr.models.fun_asr_nano.model import FunASRNano

    names = {None: None, "zh": "中文", "en": "英文"}  # FunASR takes the language name itself
    stub = types.SimpleNamespace(use_low_frame_rate=True)
    prompt = FunASRNano.get_prompt(stub, hotwords, names[language], itn)
    chat = FunASRNano.generate_chatml(stub, prompt, torch.zeros(16000))
    contents = FunASRNano.data_template(stub, chat)
    out = FunASRNano.data_load_speech(stub, contents, hf_fast, _StubFrontend(frames=93))
    n_audio = int(out["fake_token_len"][0, 0])

    assert instruction_text(language, hotwords=hotwords, itn=itn) == prompt
    ours = build_prompt(tok, system=DEFAULT_SYSTEM_PROMPT, instruction=prompt, n_audio=n_audio,
                        target=chat[2]["content"])
    assert n_audio == 12
    assert ours.input_ids == out["input_ids"][0].tolist()
    assert ours.labels == out["labels_ids"].tolist()
    assert ours.audio_start == int(out["fbank_beg"][0, 0])
    assert ours.input_ids[:9] == PUBLISHED[CHAT_HEAD][:9]  # <|im_start|>system\nYou are a helpful assistant.
