"""Text tokenizers for prompts, LLM targets and CTC labels.

Two LLM vocabularies share one interface (`Tokenizer`):

* `SentencePieceTokenizer` — the tiny vocabulary of the demo corpus (`data/demo/tokenizer.model`),
  with the ChatML strings as user-defined pieces.
* `HFTokenizer` — a Hugging Face `tokenizer.json` such as Qwen3's (151,669 entries; the LLM
  embedding has 151,936 rows, so `vocab_size` here may be smaller than the model's vocabulary).
  Qwen3's own ships with the package: `load_tokenizer("qwen3")` (`QWEN3_TOKENIZER`; built by
  `funasr_jax.text.qwen3_tokenizer`, see there and docs/tokenizer.md).

Both recognise special-token strings (`<|im_start|>`, `<|im_end|>`, ...) inside the text as single
ids, add no BOS/EOS, and use `eos_id == im_end_id` and `pad_id == <|endoftext|>` as Qwen chat does.
`CTCVocabulary` is the CTC label set over a sentencepiece model, blank appended as the last id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from funasr_jax.text.qwen3_tokenizer import bundled_path, load_qwen3_json

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
START_OF_SPEECH = "<|startofspeech|>"
END_OF_SPEECH = "<|endofspeech|>"
CHATML_SPECIALS = (IM_START, IM_END, ENDOFTEXT, START_OF_SPEECH, END_OF_SPEECH)
QWEN3_TOKENIZER = "qwen3"  # load_tokenizer spec (any case) for the bundled Qwen3 tokenizer


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks a required token."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline, training and decoding need from a tokenizer."""

    vocab_size: int
    im_start_id: int
    im_end_id: int
    eos_id: int
    pad_id: int
    special_ids: frozenset[int]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings inside it map to their single ids."""
        ...

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`; special tokens dropped when `skip_special`."""
        ...

    def token_to_id(self, token: str) -> int:
        """Id of one vocabulary entry; TokenizerError if absent."""
        ...


def _check_file(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TokenizerError(f"{what} not found: {path!r}")
    return path


def _check_ids(ids: Iterable[int], vocab_size: int, source: str) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise TokenizerError(f"token ids {bad[:5]} out of range [0, {vocab_size}) for {source}")
    return out


class SentencePieceTokenizer:
    """A sentencepiece model whose ChatML specials are user-defined pieces.

    Decoding is lossless for models trained like `data/demo/tokenizer.model` (identity
    normalisation, no dummy prefix): Chinese comes back without inserted spaces and English words
    keep their single spaces.
    """

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece as spm

        self.path = _check_file(model_path, "sentencepiece model")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(self.path)
        except Exception as e:  # sentencepiece raises OSError / RuntimeError for bad files
            raise TokenizerError(f"cannot load sentencepiece model {self.path!r}: {e}") from e
        self.vocab_size: int = self._sp.get_piece_size()
        present = [t for t in CHATML_SPECIALS if self._has_piece(t)]
        self._special_tokens = tuple(present)
        self._special_re = re.compile("(" + "|".join(map(re.escape, present)) + ")") if present else None
        self.im_start_id = self.token_to_id(IM_START)
        self.im_end_id = self.token_to_id(IM_END)
        self.eos_id = self.im_end_id
        self.pad_id = self.token_to_id(ENDOFTEXT)
        controls = {i for i in range(self.vocab_size) if self._sp.is_control(i)}
        self.special_ids: frozenset[int] = frozenset({self._sp.piece_to_id(t) for t in present} | controls)
        self.unk_id: int = self._sp.unk_id()

    def _has_piece(self, piece: str) -> bool:
        i = self._sp.piece_to_id(piece)
        return self._sp.id_to_piece(i) == piece and not self._sp.is_unknown(i)

    def token_to_id(self, token: str) -> int:
        if not self._has_piece(token):
            raise TokenizerError(f"token {token!r} is not in sentencepiece model {self.path!r}")
        return self._sp.piece_to_id(token)

    def id_to_token(self, i: int) -> str:
        return self._sp.id_to_piece(_check_ids([i], self.vocab_size, self.path)[0])

    def encode(self, text: str) -> list[int]:
        if self._special_re is None:
            return list(self._sp.encode(text))
        ids: list[int] = []
        for part in self._special_re.split(text):
            if not part:
                continue
            if part in self._special_tokens:
                ids.append(self._sp.piece_to_id(part))
            else:
                ids.extend(self._sp.encode(part))
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        ids = _check_ids(ids, self.vocab_size, self.path)
        if skip_special:
            ids = [i for i in ids if i not in self.special_ids]
        return self._sp.decode(ids)

    def pieces(self, text: str) -> list[str]:
        return [self._sp.id_to_piece(i) for i in self.encode(text)]


class HFTokenizer:
    """A Hugging Face `tokenizers` file (e.g. Qwen3's `tokenizer.json`).

    Special tokens are the file's added tokens flagged `special`; `pad_id` is `<|endoftext|>`.
    """

    def __init__(self, tokenizer_json_path: str | os.PathLike):
        from tokenizers import Tokenizer as _HFTok

        path = os.fspath(tokenizer_json_path)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        path = _check_file(path, "tokenizer.json")
        try:
            tok = _HFTok.from_file(path)
        except Exception as e:
            raise TokenizerError(f"cannot load Hugging Face tokenizer {path!r}: {e}") from e
        self._setup(tok, path)

    @classmethod
    def from_json(cls, json_text: str, source: str) -> HFTokenizer:
        """A tokenizer from `tokenizer.json` text held in memory; `source` names it in errors."""
        from tokenizers import Tokenizer as _HFTok

        try:
            tok = _HFTok.from_str(json_text)
        except Exception as e:
            raise TokenizerError(f"cannot load Hugging Face tokenizer {source!r}: {e}") from e
        self = cls.__new__(cls)
        self._setup(tok, source)
        return self

    def _setup(self, tok, source: str) -> None:
        self.path = source
        self._tok = tok
        self.vocab_size: int = tok.get_vocab_size(with_added_tokens=True)
        self.special_ids: frozenset[int] = frozenset(
            i for i, t in tok.get_added_tokens_decoder().items() if t.special)
        self.im_start_id = self.token_to_id(IM_START)
        self.im_end_id = self.token_to_id(IM_END)
        self.eos_id = self.im_end_id
        self.pad_id = self.token_to_id(ENDOFTEXT)

    def token_to_id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise TokenizerError(f"token {token!r} is not in {self.path!r}")
        return i

    def id_to_token(self, i: int) -> str:
        return self._tok.id_to_token(_check_ids([i], self.vocab_size, self.path)[0])

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        ids = _check_ids(ids, self.vocab_size, self.path)
        return self._tok.decode(ids, skip_special_tokens=skip_special)


def decode_generated(tokenizer, tokens, lengths) -> list[str]:
    """Generated rows [B, N] + lengths [B] (EOS included) -> texts: EOS dropped, spaces collapsed."""
    out = []
    for row, k in zip(tokens, lengths):
        ids = [int(t) for t in row[:int(k)] if int(t) != tokenizer.eos_id]
        out.append(" ".join(tokenizer.decode(ids).split()))
    return out


class CTCVocabulary:
    """CTC labels = the pieces of a sentencepiece model, plus blank as the LAST id.

    vocab_size = pieces + 1 (as Fun-ASR's CTC head puts blank at index odim - 1). `decode` drops
    blanks and special pieces but does not merge repeats (that is the CTC decoder's job).
    """

    def __init__(self, model_path: str | os.PathLike | SentencePieceTokenizer):
        self.sp = model_path if isinstance(model_path, SentencePieceTokenizer) else SentencePieceTokenizer(model_path)
        self.blank_id: int = self.sp.vocab_size
        self.vocab_size: int = self.sp.vocab_size + 1

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        ids = _check_ids(ids, self.vocab_size, self.sp.path + " (+CTC blank)")
        return self.sp.decode([i for i in ids if i != self.blank_id], skip_special=True)

    def token_to_id(self, token: str) -> int:
        return self.sp.token_to_id(token)


def qwen3_tokenizer() -> HFTokenizer:
    """Qwen3's tokenizer from the JSON bundled with the package (a package resource; no network)."""
    try:
        text = load_qwen3_json()
    except FileNotFoundError as e:
        raise TokenizerError(str(e)) from e
    return HFTokenizer.from_json(text, str(bundled_path()))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a spec: `"qwen3"` (any case; QWEN3_TOKENIZER) -> the bundled Qwen3
    HFTokenizer; `*.model` -> SentencePieceTokenizer; `tokenizer.json` or a folder holding it ->
    HFTokenizer. (A folder literally named `qwen3` is reached as `./qwen3`.)"""
    p = os.fspath(path)
    if p.lower() == QWEN3_TOKENIZER:
        return qwen3_tokenizer()
    if p.endswith(".model"):
        return SentencePieceTokenizer(p)
    if os.path.basename(p) == "tokenizer.json" or p.endswith(".json"):
        return HFTokenizer(p)
    if os.path.isdir(p):
        if os.path.isfile(os.path.join(p, "tokenizer.json")):
            return HFTokenizer(p)
        raise TokenizerError(f"folder {p!r} holds no tokenizer.json")
    if not os.path.exists(p):
        raise TokenizerError(f"tokenizer file not found: {p!r}")
    raise TokenizerError(f"unrecognised tokenizer file {p!r}: expected a sentencepiece '*.model', "
                         "a 'tokenizer.json' or a folder containing one")
