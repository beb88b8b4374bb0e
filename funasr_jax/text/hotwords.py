"""Hotword retrieval over the CTC hypothesis (the FunAudio-ASR report's RAG step for hotwords).

Every hotword and every hypothesis is turned into a sequence of *units*:

- Han characters become toneless pinyin syllables (`pypinyin.lazy_pinyin`, `Style.NORMAL`, ü
  written `v`): tones do not count, so 王芳 matches a hypothesis 汪方 exactly. A run of Han
  characters is converted as one phrase, so pypinyin's phrase table resolves polyphones from
  their neighbours (重庆 → chong qing, 银行 → yin hang, 行走 → xing zou).
- Any other run (Latin words, digits) is lower-cased and split by `pieces`: its letters by
  default, or the word pieces of the CTC tokenizer (`HotwordIndex(..., pieces=tok.pieces)`).
  Spaces and punctuation are dropped, so a word matches across the CTC head's spacing.
- A mixed word (AI芯片) is the concatenation of its runs' units.

A hotword w (m units) matches the hypothesis h anywhere: its distance is the approximate-substring
edit distance d(w, h) = min over substrings s of h of Levenshtein(w, s) (insertions, deletions,
substitutions of whole units, cost 1 each), and its score is 1 − d/m. `retrieve` returns the
words scoring ≥ `threshold`, best first: score descending, then more units first, then the
order of the word list — at most `top_k`.

The search is one dynamic programme over the hypothesis, vectorised across all words (numpy,
[n_words, max_units + 1] per hypothesis unit): ~|h| · max_units array operations per query.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pypinyin import Style, lazy_pinyin

from funasr_jax.text.join import CJK_CHARS

__all__ = ["HotwordError", "HotwordIndex", "MAX_HOTWORD_CHARS", "hotword_units", "load_hotwords",
           "sample_distractors"]

MAX_HOTWORD_CHARS = 64  # a longer "hotword" is almost surely a pasted sentence or a broken file
_RUNS = re.compile(rf"[{CJK_CHARS}]+|[^\s{CJK_CHARS}]+")
_HAN = re.compile(rf"[{CJK_CHARS}]")
_WORD_CHARS = re.compile(r"[^\W_]+")  # letters and digits of any script, punctuation dropped


class HotwordError(ValueError):
    """A hotword list or file that cannot be used (the message names the file / line / entry)."""


def letters(text: str) -> list[str]:
    """The default splitter for non-Han runs: lower-cased letters and digits, one unit each."""
    return [c for w in _WORD_CHARS.findall(text.lower()) for c in w]


def hotword_units(text: str, pieces: Callable[[str], Sequence[str]] | None = None) -> list[str]:
    """`text` as matching units: pinyin syllables for Han runs, `pieces` (default `letters`) otherwise."""
    split = pieces or letters
    out: list[str] = []
    for run in _RUNS.findall(text):
        if _HAN.match(run):
            out += lazy_pinyin(run, style=Style.NORMAL, v_to_u=False)
        else:
            clean = " ".join(_WORD_CHARS.findall(run.lower()))
            out += [p for p in split(clean) if p.strip("▁ ")] if clean else []
    return out


@functools.lru_cache(maxsize=1 << 16)
def _cached_units(text: str) -> tuple[str, ...]:
    """`hotword_units` with the default splitter, cached: evaluation rebuilds indexes over one pool."""
    return tuple(hotword_units(text))


@dataclass(frozen=True)
class _Table:
    ids: np.ndarray      # [N, L] unit ids, -2 past each word's end
    lengths: np.ndarray  # [N] units per word (>= 1)


class HotwordIndex:
    """Hotwords ready for retrieval against CTC hypotheses.

    words: the hotword list (order breaks ties); duplicates are kept once, empty entries and
      entries without any unit (punctuation only) raise HotwordError naming them.
    pieces: splitter for non-Han runs (see module docstring); None = letters.
    threshold: default minimum score in [0, 1] for `retrieve`.
    """

    def __init__(self, words: Iterable[str], *, pieces: Callable[[str], Sequence[str]] | None = None,
                 threshold: float = 0.5):
        if not 0.0 <= threshold <= 1.0:
            raise HotwordError(f"threshold must be in [0, 1], got {threshold}")
        self.words: list[str] = list(dict.fromkeys(w.strip() for w in words))
        self.pieces, self.threshold = pieces, float(threshold)
        self._vocab: dict[str, int] = {}
        units = []
        for i, w in enumerate(self.words):
            u = (hotword_units(w, pieces) if pieces is not None else _cached_units(w)) if w else []
            if not u:
                raise HotwordError(f"hotword {i} ({w!r}) has no letters, digits or Han characters to match")
            units.append([self._vocab.setdefault(x, len(self._vocab)) for x in u])
        self.units = units
        n, width = len(units), max((len(u) for u in units), default=1)
        ids = np.full((n, width), -2, np.int32)
        for i, u in enumerate(units):
            ids[i, :len(u)] = u
        self._table = _Table(ids, np.array([len(u) for u in units], np.int32))

    def __len__(self) -> int:
        return len(self.words)

    def distances(self, hypothesis: str) -> np.ndarray:
        """[N] approximate-substring edit distance of every word to `hypothesis` (in units)."""
        h = [self._vocab.get(x, -1) for x in hotword_units(hypothesis, self.pieces)]
        ids, lengths = self._table.ids, self._table.lengths
        n, width = ids.shape
        rows = np.arange(n)
        col = np.broadcast_to(np.arange(width + 1, dtype=np.int32), (n, width + 1)).copy()  # j = 0: i deletions
        best = lengths.copy()
        for unit in h:
            new = np.empty_like(col)
            new[:, 0] = 0  # a match may start anywhere in the hypothesis
            sub = (ids != unit).astype(np.int32)
            for i in range(1, width + 1):
                new[:, i] = np.minimum(np.minimum(col[:, i - 1] + sub[:, i - 1], col[:, i] + 1), new[:, i - 1] + 1)
            col = new
            np.minimum(best, col[rows, lengths], out=best)
        return best

    def scores(self, hypothesis: str) -> np.ndarray:
        """[N] scores 1 − d/m in [0, 1] (can be negative for nothing: clipped at 0)."""
        return np.clip(1.0 - self.distances(hypothesis) / self._table.lengths, 0.0, 1.0)

    def retrieve(self, hypothesis: str, top_k: int = 10, threshold: float | None = None) -> list[tuple[str, float]]:
        """The words matching `hypothesis`, best first, as (word, score) pairs (see module docstring)."""
        if top_k < 0:
            raise HotwordError(f"top_k must be >= 0, got {top_k}")
        if not self.words or top_k == 0:
            return []
        thr = self.threshold if threshold is None else float(threshold)
        s = self.scores(hypothesis)
        keep = np.flatnonzero(s >= thr - 1e-9)
        order = keep[np.lexsort((keep, -self._table.lengths[keep], -s[keep]))][:top_k]
        return [(self.words[i], float(s[i])) for i in order]


def load_hotwords(path: str | os.PathLike, *, max_chars: int = MAX_HOTWORD_CHARS) -> list[str]:
    """A hotword file: UTF-8, one hotword per line; blank lines and lines starting with `#` skipped.

    Raises HotwordError naming the file (and line) for: a missing file, binary content (NUL
    bytes), invalid UTF-8, an entry longer than `max_chars` characters, or no entry at all.
    Duplicates are kept once, in first-seen order.
    """
    p = Path(path)
    if not p.is_file():
        raise HotwordError(f"{p}: no such hotword file")
    data = p.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        raise HotwordError(f"{p}: binary content (NUL byte at offset {nul}); "
                           "expected UTF-8 text, one hotword per line")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise HotwordError(f"{p}:{line}: not UTF-8 (byte offset {e.start}); save the file as UTF-8") from None
    words = []
    for n, raw in enumerate(text.splitlines(), 1):
        w = raw.strip()
        if not w or w.startswith("#"):
            continue
        if len(w) > max_chars:
            raise HotwordError(f"{p}:{n}: entry of {len(w)} characters (at most {max_chars}): {w[:40]!r}…")
        if not hotword_units(w):
            raise HotwordError(f"{p}:{n}: {w!r} has no letters, digits or Han characters to match")
        words.append(w)
    if not words:
        raise HotwordError(f"{p}: no hotwords (only blank lines or # comments)")
    return list(dict.fromkeys(words))


def sample_distractors(pool: Sequence[str], own: Iterable[str], count: int,
                       rng: np.random.Generator) -> list[str]:
    """`count` distinct words of `pool` (in pool order of the draw), never one of `own`.

    Fewer when the pool has fewer eligible words. Deterministic for a given `rng` state.
    """
    own_set = set(own)
    eligible = [w for w in dict.fromkeys(pool) if w not in own_set]
    if count <= 0 or not eligible:
        return []
    pick = rng.choice(len(eligible), size=min(count, len(eligible)), replace=False)
    return [eligible[i] for i in pick]
