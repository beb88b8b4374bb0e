"""Hotword lists for evaluation and the keyword figures (the report's Table 6: WER, acc, rec).

Keyword recall and accuracy (`funasr_jax.rewards.keyword_scores`, counted in scoring units:
CJK characters and lower-cased words): for each utterance and each of its *reference* hotwords
(the manifest's `hotwords`), matched = min(occurrences in hyp, occurrences in ref);
recall = Σ matched / Σ occurrences in the references; accuracy = Σ matched / Σ occurrences in
the hypotheses. Both are summed over utterances before dividing (micro averages), overall, per
subset and per hotword category.

The list offered to the recognizer for an utterance (`hotword_lists`):
  source "manifest": the utterance's own hotwords plus `distractors` words drawn from `pool`
    (never its own; seeded per utterance index, so every run draws the same lists), shuffled
    together; an utterance without hotwords gets distractors only;
  a file: the same list (the file's words) for every utterance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from funasr_jax.rewards import keyword_scores
from funasr_jax.text.hotwords import HotwordError, HotwordIndex, load_hotwords, sample_distractors

__all__ = ["HotwordPlan", "hotword_indexes", "hotword_lists", "keyword_breakdown", "load_categories"]


@dataclass(frozen=True)
class HotwordPlan:
    """source: "manifest" or a hotword file; distractors: per utterance (manifest source);
    pool: distractor candidates; seed: of the per-utterance draws."""

    source: str = "manifest"
    distractors: int = 0
    pool: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def make(cls, source: str, examples: Sequence, distractors: int = 0, pool_file: str | None = None,
             seed: int = 0) -> HotwordPlan:
        """A plan whose pool is `pool_file`'s words, else every hotword of `examples`."""
        if distractors < 0:
            raise HotwordError(f"--distractors must be >= 0, got {distractors}")
        if source != "manifest" and distractors:
            raise HotwordError("--distractors applies to --hotwords manifest (a file is used as given)")
        pool = load_hotwords(pool_file) if pool_file else list(dict.fromkeys(w for ex in examples for w in ex.hotwords))
        return cls(source, int(distractors), tuple(pool), int(seed))


def hotword_lists(examples: Sequence, plan: HotwordPlan) -> list[list[str]]:
    """The hotword list offered for each example (module docstring)."""
    if plan.source != "manifest":
        words = load_hotwords(plan.source)
        return [list(words) for _ in examples]
    out = []
    for i, ex in enumerate(examples):
        rng = np.random.default_rng([plan.seed, i])
        words = list(ex.hotwords) + sample_distractors(plan.pool, ex.hotwords, plan.distractors, rng)
        out.append([words[j] for j in rng.permutation(len(words))])
    return out


def hotword_indexes(examples: Sequence, plan: HotwordPlan) -> list[HotwordIndex | None]:
    """One `HotwordIndex` per example (None for an empty list); a file's index is built once."""
    lists = hotword_lists(examples, plan)
    if plan.source != "manifest":
        shared = HotwordIndex(lists[0]) if lists else None
        return [shared] * len(lists)
    return [HotwordIndex(w) if w else None for w in lists]


def load_categories(path: str | Path) -> dict[str, str]:
    """`word<TAB>category` lines (UTF-8; `#` comments) -> {word: category}."""
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise HotwordError(f"{path}:{n}: expected 'word<TAB>category', got {line!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out


def _totals(pairs: Iterable[tuple[str, str, Sequence[str]]]) -> dict:
    m = r = h = 0
    for hyp, ref, words in pairs:
        k = keyword_scores(hyp, ref, words)
        m, r, h = m + k["matched"], r + k["in_ref"], h + k["in_hyp"]
    return {"recall": m / r if r else None, "accuracy": m / h if h else None, "matched": m, "in_ref": r, "in_hyp": h}


def keyword_breakdown(rows: Sequence[Mapping], categories: Mapping[str, str] | None = None) -> dict[str, dict]:
    """{"overall" | "subset/<s>" | "category/<c>": keyword totals} over rows with reference hotwords
    (each row: "hyp", "ref", "hotwords", "subset"). Categories group single hotwords."""
    hot = [r for r in rows if r.get("hotwords")]
    out = {"overall": _totals((r["hyp"], r["ref"], r["hotwords"]) for r in hot)}
    for sub in sorted({r.get("subset") for r in hot if r.get("subset")}):
        out[f"subset/{sub}"] = _totals((r["hyp"], r["ref"], r["hotwords"]) for r in hot if r.get("subset") == sub)
    if categories:
        for cat in sorted(set(categories.values())):
            out[f"category/{cat}"] = _totals((r["hyp"], r["ref"], [w for w in r["hotwords"] if categories.get(w) == cat])
                                             for r in hot)
    return out
