"""The ASR rewards of reinforcement learning (the FunAudio-ASR report, GRPO), and their registry.

Every reward is a pure function `fn(hyp: str, meta: UtteranceMeta) -> float` of one hypothesis
and the utterance's reference + metadata. Texts are compared in scoring units
(`funasr_jax.text.metrics.tokens`: CJK characters and lower-cased words, punctuation dropped), so
one definition covers Chinese (CER), English (WER) and code-switching (MER).

  error          R1 = 1 - error rate, clipped to [0, 1]. An empty reference (a noise-only clip)
                 scores 1 for an empty hypothesis and 0 for any output.
  keyword        R2 = keyword accuracy + keyword recall over the utterance's `hotwords`, in [0, 2]
                 (0 when the utterance has none). With c_h(k) / c_r(k) the non-overlapping
                 occurrences of hotword k (as a unit sequence) in hypothesis / reference and
                 m = sum_k min(c_h(k), c_r(k)):
                   recall   = m / sum_k c_r(k)   (1 when the reference holds none of them)
                   accuracy = m / sum_k c_h(k)   (1 when the hypothesis holds none of them)
                 Recall alone would reward inserting every hotword; accuracy penalises a hotword
                 written where it was not spoken.
  hallucination  R3 = -min(1, span / max(1, |ref|)), span = hallucinated units, the largest of:
                   - repeats: units in runs of one n-gram (n <= 4) written >= 3 times in a row,
                     beyond its first occurrence, minus the same count in the reference (genuine
                     repetitions are not penalised);
                   - length: units beyond LONG_RATIO x |ref| + LONG_SLACK;
                   - noise: every unit when the reference is empty.
  language       R4: -1 when the hypothesis's script does not fit the utterance's `language`
                 (an override, not a term): with s = share of CJK units in a non-empty
                 hypothesis, zh needs s >= 0.5, en needs s < 0.5, cs (Chinese with English words)
                 needs s > 0. Empty hypotheses and unknown languages always match. Its own value
                 is 0 (match) or -1 (mismatch).

`total_reward(components, weights)`: the weighted sum of the additive rewards, replaced by the
override's value (-1) wherever an override reward fires (the report: "if the output language does
not match, the final reward is -1"). Add a reward in one place with `register_reward`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from funasr_jax.text.join import CJK_CHARS
from funasr_jax.text.metrics import score_pair, tokens

LONG_RATIO = 1.5
LONG_SLACK = 2
MAX_NGRAM = 4
MIN_REPEATS = 3
_CJK = re.compile(f"[{CJK_CHARS}]")


class RewardError(ValueError):
    """An unknown reward name or a bad weight (names it)."""


@dataclass(frozen=True)
class UtteranceMeta:
    """What a reward may read about an utterance: reference text, language tag, hotwords."""

    ref: str
    language: str | None = None
    hotwords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reward:
    """fn(hyp, meta) -> float. override: when fn returns a value < 0, the final reward is that value."""

    name: str
    fn: Callable[[str, UtteranceMeta], float]
    override: bool = False
    doc: str = ""


REWARDS: dict[str, Reward] = {}


def register_reward(name: str, fn: Callable[[str, UtteranceMeta], float], *, override: bool = False,
                    doc: str = "") -> Reward:
    """Add (or replace) a reward under `name`; configs then name it in `grpo.rewards`."""
    REWARDS[name] = Reward(name, fn, override, doc or (fn.__doc__ or "").strip().split("\n")[0])
    return REWARDS[name]


def get_reward(name: str) -> Reward:
    if name not in REWARDS:
        raise RewardError(f"unknown reward {name!r} (registered: {', '.join(sorted(REWARDS))})")
    return REWARDS[name]


# --------------------------------------------------------------------------- R1


def error_reward(hyp: str, meta: UtteranceMeta) -> float:
    """R1 = 1 - error rate (CER / WER / MER by script), clipped to [0, 1]."""
    c = score_pair(meta.ref, hyp)
    if c.ref_tokens == 0:
        return 1.0 if c.errors == 0 else 0.0
    return float(np.clip(1.0 - c.errors / c.ref_tokens, 0.0, 1.0))


# --------------------------------------------------------------------------- R2


def count_occurrences(units: Sequence[str], word: Sequence[str]) -> int:
    """Non-overlapping occurrences of the unit sequence `word` in `units` (left to right)."""
    n, k, i, found = len(units), len(word), 0, 0
    if k == 0:
        return 0
    while i + k <= n:
        if list(units[i:i + k]) == list(word):
            found += 1
            i += k
        else:
            i += 1
    return found


def keyword_scores(hyp: str, ref: str, hotwords: Iterable[str]) -> dict[str, float]:
    """{"matched", "in_ref", "in_hyp", "recall", "accuracy"} of the hotwords (module docstring)."""
    h, r = tokens(hyp), tokens(ref)
    matched = in_ref = in_hyp = 0
    for w in dict.fromkeys(hotwords):  # each hotword once, in order
        units = tokens(w)
        ch, cr = count_occurrences(h, units), count_occurrences(r, units)
        matched += min(ch, cr)
        in_ref += cr
        in_hyp += ch
    return {"matched": matched, "in_ref": in_ref, "in_hyp": in_hyp,
            "recall": matched / in_ref if in_ref else 1.0, "accuracy": matched / in_hyp if in_hyp else 1.0}


def keyword_reward(hyp: str, meta: UtteranceMeta) -> float:
    """R2 = keyword accuracy + keyword recall over the utterance's hotwords (0 without hotwords)."""
    if not meta.hotwords:
        return 0.0
    s = keyword_scores(hyp, meta.ref, meta.hotwords)
    return s["accuracy"] + s["recall"]


# --------------------------------------------------------------------------- R3


def repeated_units(units: Sequence[str], max_n: int = MAX_NGRAM, min_repeats: int = MIN_REPEATS) -> int:
    """Units in runs where one n-gram (n <= max_n) occurs >= min_repeats times in a row, beyond
    each run's first occurrence (greedy left to right, longest run at each position)."""
    i, extra, n_units = 0, 0, len(units)
    while i < n_units:
        best = 0  # units covered by the best run starting at i
        best_n = 0
        for n in range(1, max_n + 1):
            gram = units[i:i + n]
            if len(gram) < n:
                break
            reps = 1
            while units[i + reps * n:i + (reps + 1) * n] == gram:
                reps += 1
            if reps >= min_repeats and reps * n > best:
                best, best_n = reps * n, n
        if best:
            extra += best - best_n
            i += best
        else:
            i += 1
    return extra


def hallucinated_span(hyp: str, ref: str) -> int:
    """Hallucinated units of `hyp` against `ref` (module docstring: repeats, length, noise)."""
    h, r = tokens(hyp), tokens(ref)
    if not r:
        return len(h)
    repeats = max(0, repeated_units(h) - repeated_units(r))
    too_long = max(0, len(h) - int(np.ceil(LONG_RATIO * len(r))) - LONG_SLACK)
    return max(repeats, too_long)


def hallucination_reward(hyp: str, meta: UtteranceMeta) -> float:
    """R3 = -min(1, hallucinated span / max(1, reference units))."""
    span = hallucinated_span(hyp, meta.ref)
    return -min(1.0, span / max(1, len(tokens(meta.ref))))


# --------------------------------------------------------------------------- R4


def cjk_share(text: str) -> float | None:
    """Share of CJK characters among the scoring units (None for an empty text)."""
    units = tokens(text)
    if not units:
        return None
    return sum(bool(_CJK.fullmatch(u)) for u in units) / len(units)


def language_matches(hyp: str, language: str | None) -> bool:
    """Whether the hypothesis's script fits `language` (module docstring, R4)."""
    s = cjk_share(hyp)
    if s is None or language not in ("zh", "en", "cs"):
        return True
    return {"zh": s >= 0.5, "en": s < 0.5, "cs": s > 0}[language]


def language_reward(hyp: str, meta: UtteranceMeta) -> float:
    """R4: 0 when the output's script fits the utterance's language, -1 (final reward) when not."""
    return 0.0 if language_matches(hyp, meta.language) else -1.0


register_reward("error", error_reward)
register_reward("keyword", keyword_reward)
register_reward("hallucination", hallucination_reward)
register_reward("language", language_reward, override=True)

DEFAULT_WEIGHTS = (("error", 1.0), ("keyword", 1.0), ("hallucination", 1.0), ("language", 1.0))


# --------------------------------------------------------------------------- totals


def check_weights(weights: Sequence[tuple[str, float]]) -> None:
    """Raise RewardError naming an unknown reward, a repeated one or a negative weight."""
    seen = set()
    for name, w in weights:
        get_reward(name)
        if name in seen:
            raise RewardError(f"reward {name!r} is listed twice")
        seen.add(name)
        if not np.isfinite(w) or w < 0:
            raise RewardError(f"reward {name!r}: weight must be a finite number >= 0, got {w}")
    if not seen:
        raise RewardError("no reward is configured")


def reward_components(hyps: Sequence[str], metas: Sequence[UtteranceMeta],
                      names: Iterable[str]) -> dict[str, np.ndarray]:
    """{reward name: [n] float32} for n hypotheses and their utterances' metadata."""
    if len(hyps) != len(metas):
        raise RewardError(f"{len(hyps)} hypotheses but {len(metas)} utterance records")
    return {n: np.array([get_reward(n).fn(h, m) for h, m in zip(hyps, metas)], np.float32) for n in names}


def total_reward(components: Mapping[str, np.ndarray], weights: Sequence[tuple[str, float]]) -> np.ndarray:
    """Weighted sum of the additive rewards; where an override reward is < 0, its value instead
    (weight 0 switches an override off)."""
    total = None
    overrides = []
    for name, w in weights:
        v = np.asarray(components[name], np.float32)
        if get_reward(name).override:
            if w > 0:
                overrides.append(v)
            continue
        total = w * v if total is None else total + w * v
    n = len(next(iter(components.values()))) if components else 0
    total = np.zeros(n, np.float32) if total is None else total.astype(np.float32)
    for v in overrides:
        total = np.where(v < 0, v, total)
    return total


def score_hypotheses(hyps: Sequence[str], metas: Sequence[UtteranceMeta],
                     weights: Sequence[tuple[str, float]] = DEFAULT_WEIGHTS):
    """(total [n] float32, components {name: [n]}) — what a GRPO step needs from the host."""
    comps = reward_components(hyps, metas, [n for n, _ in weights])
    return total_reward(comps, weights), comps
