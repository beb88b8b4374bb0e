"""Qwen3's tokenizer, built offline from the Qwen byte-level BPE ranks and bundled with the package.

Qwen3 (and Qwen2 / 2.5) tokenise text with byte-level BPE: 151,643 ranked byte strings (ids
0 … 151,642, rank == id) followed by 26 added tokens at ids 151,643 … 151,668 (151,669 in all;
the LLM's embedding has 151,936 rows, the rest unused). The ranks ship, as a `qwen.tiktoken`
file (`base64(token bytes) rank` per line), inside the PyPI wheel of `dashscope`; this module
turns that file into a Hugging Face `tokenizers` JSON:

* vocab: each token's bytes written with the GPT-2 byte → printable-character map, id = rank;
* merges: for each multi-byte token, byte-level BPE over its own bytes using only lower-ranked
  tokens stops at two parts; that pair is the token's merge, listed in rank order;
* NFC normaliser, Qwen's pre-tokeniser regex (`QWEN_PATTERN`, isolated splits, then byte-level),
  byte-level decoder, and the added tokens of Qwen3's `tokenizer.json` (`QWEN3_ADDED_TOKENS`).

How the tokenizer reaches a user: the built JSON is shipped gzip-compressed in the package
(`funasr_jax/text/resources/qwen3_tokenizer.json.gz`, 1.8 MB) and read with
`tokenizers.Tokenizer.from_str` (`load_qwen3_json`). Why: nothing is then downloaded, built or
cached at install or run time, so offline machines and read-only installs have it, and `dashscope`
is not a run-time dependency; 1.8 MB is cheaper than any of those failure modes. This builder only
re-creates the bundled file, and a test checks that a fresh build from the wheel's ranks equals it
(docs/tokenizer.md).

CLI::

    python -m funasr_jax.text.qwen3_tokenizer --from-wheel dashscope-2.0.2-py3-none-any.whl --out DIR
    python -m funasr_jax.text.qwen3_tokenizer --ranks qwen.tiktoken --out DIR [--bundle]

writes `DIR/tokenizer.json` (a folder `load_tokenizer(DIR)` reads); `--bundle` also rewrites the
packaged `.json.gz`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import json
import os
import sys
import time
import zipfile
from importlib import resources

QWEN3_VOCAB_SIZE = 151_669  # ranked tokens + added tokens
NUM_RANKED = 151_643
WHEEL_MEMBER = "dashscope/resources/qwen.tiktoken"
BUNDLED_NAME = "qwen3_tokenizer.json.gz"

# Qwen's pre-tokeniser: contractions, letter runs (with one leading non-letter), single digits,
# punctuation runs (with one leading space and trailing newlines), newline runs, spaces.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# (content, special) from id NUM_RANKED on, as in Qwen3's tokenizer.json. Only the first 14 are
# flagged special (skipped by decode(skip_special_tokens=True)); the tool / FIM / think tags are
# plain added tokens, matched as single ids but kept when decoding.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)


class RanksError(ValueError):
    """A ranks file (or the wheel holding it) is missing or malformed."""


def parse_ranks(data: bytes, source: str) -> dict[bytes, int]:
    """`base64(token) rank` lines -> {token bytes: rank}; ranks must be exactly 0 … n-1."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError(f"expected 2 fields, got {len(fields)}")
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (ValueError, binascii.Error) as e:
            raise RanksError(f"{source}, line {lineno}: not 'base64 rank': {e}") from e
        if token in ranks:
            raise RanksError(f"{source}, line {lineno}: token {token!r} listed twice")
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise RanksError(f"{source}: ranks are not exactly 0 … {len(ranks) - 1}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise RanksError(f"{source}: single bytes {missing[:8]} have no rank (byte-level BPE needs all 256)")
    return ranks


def read_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Ranks from a `qwen.tiktoken` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RanksError(f"ranks file not found: {path!r}")
    with open(path, "rb") as f:
        return parse_ranks(f.read(), path)


def read_ranks_from_wheel(wheel: str | os.PathLike) -> dict[bytes, int]:
    """Ranks read straight out of a dashscope wheel (a zip) without installing it."""
    wheel = os.fspath(wheel)
    if not os.path.isfile(wheel):
        raise RanksError(f"wheel not found: {wheel!r}")
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(WHEEL_MEMBER)
    except KeyError as e:
        raise RanksError(f"{wheel!r} holds no {WHEEL_MEMBER}") from e
    except zipfile.BadZipFile as e:
        raise RanksError(f"{wheel!r} is not a wheel (zip): {e}") from e
    return parse_ranks(data, f"{wheel}:{WHEEL_MEMBER}")


def byte_level_alphabet() -> list[str]:
    """The GPT-2 byte -> character map as a list [256]: printable Latin-1 bytes stand for
    themselves, the other 68 take code points 256, 257, … in byte order (so no token string holds
    a space or control character)."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The BPE merge list implied by the ranks, one pair per multi-byte token, in rank order.

    For token t of rank r: start from its single bytes and repeatedly join the adjacent pair whose
    concatenation has the lowest rank below r, until two parts remain; they are t's merge. Raises
    RanksError for a token this cannot reach (the ranks would not be a BPE vocabulary).
    """
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best, best_rank = i, r
            if best < 0:
                raise RanksError(f"token {token!r} (rank {rank}) is not reachable by merges of lower rank")
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        merges.append((parts[0], parts[1]))
    return merges


def build_tokenizer_json(ranks: dict[bytes, int], *, log=None) -> str:
    """The Hugging Face `tokenizers` JSON text for `ranks` + Qwen3's added tokens (deterministic)."""
    alphabet = byte_level_alphabet()

    def text(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    t0 = time.perf_counter()
    merges = derive_merges(ranks)
    if log:
        log(f"derived {len(merges):,} merges from {len(ranks):,} ranks in {time.perf_counter() - t0:.1f} s")
    n = len(ranks)
    added = [{"id": n + i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": special}
             for i, (content, special) in enumerate(QWEN3_ADDED_TOKENS)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {text(tok): r for tok, r in sorted(ranks.items(), key=lambda kv: kv[1])},
            # Byte-level strings never contain " ", so "a b" is unambiguous (and every tokenizers
            # version reads it).
            "merges": [f"{text(a)} {text(b)}" for a, b in merges],
        },
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)


def bundled_path():
    """The packaged `qwen3_tokenizer.json.gz` (an importlib.resources Traversable)."""
    return resources.files("funasr_jax.text") / "resources" / BUNDLED_NAME


def load_qwen3_json() -> str:
    """The bundled tokenizer JSON text (decompressed, 5.8 MB)."""
    res = bundled_path()
    try:
        return gzip.decompress(res.read_bytes()).decode("utf-8")
    except (OSError, EOFError) as e:  # missing file, truncated or not gzip
        raise FileNotFoundError(f"bundled Qwen3 tokenizer {res} unreadable: {e}; rebuild it with "
                                "`python -m funasr_jax.text.qwen3_tokenizer --from-wheel WHEEL --bundle`") from e


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m funasr_jax.text.qwen3_tokenizer",
                                 description=__doc__.split("\n\n")[0])
    src = ap.add_argument_group("ranks source (one of)")
    src.add_argument("--ranks", help="a qwen.tiktoken file")
    src.add_argument("--from-wheel", help="a dashscope-*.whl; its qwen.tiktoken is read from the zip")
    ap.add_argument("--out", help="folder to write tokenizer.json into")
    ap.add_argument("--bundle", action="store_true", help=f"also rewrite the packaged {BUNDLED_NAME}")
    a = ap.parse_args(argv)
    if (a.ranks is None) == (a.from_wheel is None):
        ap.error("give exactly one of --ranks / --from-wheel")
    if a.out is None and not a.bundle:
        ap.error("nothing to write: give --out DIR and/or --bundle")

    t0 = time.perf_counter()
    try:
        ranks = read_ranks(a.ranks) if a.ranks else read_ranks_from_wheel(a.from_wheel)
    except RanksError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"read {len(ranks):,} ranks from {a.ranks or a.from_wheel} in {time.perf_counter() - t0:.1f} s")
    if len(ranks) != NUM_RANKED:
        print(f"warning: {len(ranks):,} ranks, Qwen3 has {NUM_RANKED:,}; added-token ids shift accordingly")
    text = build_tokenizer_json(ranks, log=print).encode("utf-8")
    vocab = len(ranks) + len(QWEN3_ADDED_TOKENS)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, "tokenizer.json")
        with open(path, "wb") as f:
            f.write(text)
        print(f"wrote {path} ({len(text) / 2**20:.1f} MiB)")
    if a.bundle:
        path = os.fspath(bundled_path())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(gzip.compress(text, compresslevel=9, mtime=0))
        print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    print(f"vocab size {vocab:,} ({len(ranks):,} ranked + {len(QWEN3_ADDED_TOKENS)} added tokens); "
          f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
