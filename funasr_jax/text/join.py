"""Joining the transcripts of consecutive audio segments back into one text.

Rule: pieces are stripped and empty ones dropped; two neighbours are joined without a space when
the left one ends and the right one starts with a wide (CJK) character — a Han ideograph, CJK
punctuation (U+3000-303F) or a full-width form (U+FF00-FFEF) — and with one space otherwise.
So "今天" + "天气好" -> "今天天气好", "你好。" + "再见" -> "你好。再见", "hello" + "world" ->
"hello world", "用 Python" + "写" -> "用 Python 写" ("n" is not wide).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CJK_CHARS", "WIDE_CHARS", "is_wide", "join_texts"]

# Han ideographs (CJK Unified + Extension A + Compatibility), as a regex character-class body.
CJK_CHARS = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Characters written without spaces around them in Chinese text: Han + CJK punctuation + full width.
WIDE_CHARS = CJK_CHARS + r"\u3000-\u303f\uff00-\uffef"
_WIDE = re.compile(f"[{WIDE_CHARS}]")


def is_wide(ch: str) -> bool:
    """True for one CJK ideograph, CJK punctuation mark or full-width form."""
    return bool(_WIDE.fullmatch(ch))


def join_texts(pieces: Iterable[str]) -> str:
    """Segment transcripts, in order -> one text (module docstring: no space between two wide
    characters, one space otherwise; empty pieces dropped)."""
    out = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if out and not (is_wide(out[-1]) and is_wide(piece[0])):
            out += " "
        out += piece
    return out
