"""Error rates through jiwer: CER for Chinese, WER for English, mixed error rate for code-switching.

Scoring units ("tokens"): for `zh` every CJK character; for `en` every word; for `cs` (and any
mixed text) CJK characters and English words together — so one scorer covers all three, and a
pure-Chinese or pure-English line reduces to CER or WER. Punctuation is dropped and Latin text
lower-cased before scoring. An empty reference scores the number of inserted tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import jiwer

from funasr_jax.text.join import CJK_CHARS as _CJK

_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation (Unicode P* / S* classes), collapse spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" and c not in "'" else c for c in text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Scoring units: CJK characters and whitespace-separated non-CJK words."""
    return _TOKEN.findall(normalize(text))


@dataclass
class ErrorCounts:
    errors: int = 0  # substitutions + deletions + insertions
    ref_tokens: int = 0
    utterances: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    def add(self, other: "ErrorCounts") -> None:
        for f in ("errors", "ref_tokens", "utterances", "substitutions", "deletions", "insertions"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    @property
    def rate(self) -> float:
        """errors / reference tokens; with no reference tokens, the raw error (insertion) count."""
        return self.errors / self.ref_tokens if self.ref_tokens else float(self.errors)


def score_pair(ref: str, hyp: str) -> ErrorCounts:
    r, h = tokens(ref), tokens(hyp)
    if not r:
        return ErrorCounts(errors=len(h), ref_tokens=0, utterances=1, insertions=len(h))
    if not h:
        return ErrorCounts(errors=len(r), ref_tokens=len(r), utterances=1, deletions=len(r))
    out = jiwer.process_words(" ".join(r), " ".join(h))
    return ErrorCounts(errors=out.substitutions + out.deletions + out.insertions, ref_tokens=len(r),
                       utterances=1, substitutions=out.substitutions, deletions=out.deletions,
                       insertions=out.insertions)


def error_rate(refs: Iterable[str], hyps: Iterable[str]) -> float:
    total = ErrorCounts()
    for r, h in zip(refs, hyps, strict=True):
        total.add(score_pair(r, h))
    return total.rate


def breakdown(rows: Iterable[dict]) -> dict[str, dict]:
    """rows: dicts with `ref`, `hyp` and optional `language`, `subset`.

    Returns {"overall": {...}, "language/zh": {...}, "subset/names": {...}, ...}, each with
    rate, errors, ref_tokens, utterances, sub/del/ins, and the metric name (cer/wer/mer).
    """
    groups: dict[str, ErrorCounts] = defaultdict(ErrorCounts)
    for row in rows:
        c = score_pair(row["ref"], row["hyp"])
        groups["overall"].add(c)
        if row.get("language"):
            groups[f"language/{row['language']}"].add(c)
        if row.get("subset"):
            groups[f"subset/{row['subset']}"].add(c)
    metric = {"language/zh": "cer", "language/en": "wer", "language/cs": "mer"}
    return {k: {"metric": metric.get(k, "mer"), "rate": v.rate, "errors": v.errors,
                "ref_tokens": v.ref_tokens, "utterances": v.utterances, "substitutions": v.substitutions,
                "deletions": v.deletions, "insertions": v.insertions}
            for k, v in sorted(groups.items())}


def vocabulary_coverage(train_texts: Iterable[str], test_texts: Iterable[str]) -> dict:
    """Share of the test scoring units (CJK characters, lower-cased words; `tokens`) that occur
    in the training texts: {"tokens": n, "seen": k, "coverage": k / n} (coverage 1.0 when n = 0)."""
    seen_units = {u for t in train_texts for u in tokens(t)}
    units = [u for t in test_texts for u in tokens(t)]
    seen = sum(u in seen_units for u in units)
    return {"tokens": len(units), "seen": seen, "coverage": seen / len(units) if units else 1.0}
