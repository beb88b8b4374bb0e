"""Hotword and contextual prompts for training (hotword SFT and contextual SFT; DataConfig docs).

`PromptContexts(cfg, examples).of(i)` is the `PromptContext` of example i: the hotwords its
prompt lists, the previous segment's transcript and the context passages, all put into the
instruction by `prompt.with_context`. Each is drawn once per example from (cfg.seed, i), not per
epoch, so the token planner (`rows.count_tokens`) counts exactly the prompts the loader builds.

Hotwords (cfg.hotword_prompt): with probability hotword_none_share no list; with
hotword_own_drop_share a list of distractors only; otherwise the utterance's own hotwords plus
U{0..hotword_distractors} distractors from the pool (never its own: `sample_distractors`),
shuffled. With a manifest `first_pass` the list is searched with it and only the retrieved
words (best first, ≤ hotword_top_k, score ≥ hotword_threshold) are listed, as the recognizer
does at inference — plus, with hotword_keep_own, the own words it missed (then shuffled);
without one, own words first then distractors, capped at hotword_top_k. With probability
hotword_mask_share the listed own words are given simulated errors wherever they occur in the
first pass (`PromptContext.first_pass`), so the list, not the first pass, has them right.

Context (cfg.context_prompt): examples of one `subset` in manifest order form conversations of
context_chain utterances; a later utterance of a conversation gets the previous one's reference
transcript with probability context_previous_share (at inference: the previous segment's
hypothesis, or any text the user passes). Passages: a relevant one containing the utterance's
hotwords (when it has any) and context_irrelevant relevant passages of other utterances whose
hotwords do not overlap its own, shuffled. They come from `PASSAGE_TEMPLATES` filled with the
keywords unless cfg.context_passages_file (JSONL {"key", "passages"}) has the key: that file is
the hook for passages written by an LLM or any other tool.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from funasr_jax.data.augment import TextUnits, corrupt_text
from funasr_jax.data.config import DataConfig
from funasr_jax.data.manifest import Example, ManifestError
from funasr_jax.text.hotwords import HotwordIndex, load_hotwords, sample_distractors

__all__ = ["PASSAGE_TEMPLATES", "PromptContext", "PromptContexts", "load_passages"]

HOTWORD_TAG, CONTEXT_TAG, MASK_TAG = 0x486F74, 0x437478, 0x4D736B  # separate random streams per purpose

PASSAGE_TEMPLATES = {
    "zh": ["相关资料：本次讨论涉及{kw}。", "备注：请留意{kw}的相关信息。", "会议记录中提到了{kw}。"],
    "en": ["Background: the discussion mentions {kw}.", "Note: see the details about {kw}.",
           "The meeting notes refer to {kw}."],
}


@dataclass(frozen=True)
class PromptContext:
    """What `prompt.with_context` puts into one example's instruction."""

    hotwords: tuple[str, ...] = ()
    previous: str = ""
    passages: tuple[str, ...] = ()
    first_pass: str | None = None  # replaces the manifest's first pass (hotword spans masked)


def load_passages(path: str | Path) -> dict[str, list[str]]:
    """A passages file: one JSON object {"key": str, "passages": [str, ...]} per line."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not JSON ({e.msg})") from None
        key, passages = (obj.get("key"), obj.get("passages")) if isinstance(obj, dict) else (None, None)
        if not isinstance(key, str) or not isinstance(passages, list) or not all(isinstance(p, str) for p in passages):
            raise ManifestError(f"{path}:{n}: expected {{\"key\": str, \"passages\": [str, ...]}}")
        out[key] = passages
    return out


class PromptContexts:
    """The per-example prompt contexts of a training set (module docstring)."""

    def __init__(self, cfg: DataConfig, examples: Sequence[Example]):
        self.cfg, self.examples = cfg, list(examples)
        self.active = bool(cfg.hotword_prompt or cfg.context_prompt)
        self._cache: dict[int, PromptContext] = {}
        if cfg.hotword_prompt:
            self._units = TextUnits.of(ex.target for ex in self.examples)
            self.pool = (load_hotwords(cfg.hotword_pool_file) if cfg.hotword_pool_file
                         else list(dict.fromkeys(w for ex in self.examples for w in ex.hotwords)))
        self._file = load_passages(cfg.context_passages_file) if cfg.context_passages_file else {}
        self._prev: dict[int, int] = {}
        if cfg.context_prompt:
            by_subset = defaultdict(list)
            for i, ex in enumerate(self.examples):
                by_subset[ex.subset].append(i)
            for idx in by_subset.values():
                for p, i in enumerate(idx):
                    if p % cfg.context_chain:
                        self._prev[i] = idx[p - 1]
            self._with_hotwords = [i for i, ex in enumerate(self.examples) if ex.hotwords]

    def of(self, i: int) -> PromptContext:
        if not self.active:
            return PromptContext()
        if i not in self._cache:
            words = self._hotwords(i)
            self._cache[i] = PromptContext(words, *self._context(i), first_pass=self._masked_first_pass(i, words))
        return self._cache[i]

    def _masked_first_pass(self, i: int, listed: Sequence[str]) -> str | None:
        """With probability hotword_mask_share, example i's first pass with every occurrence of
        its listed own hotwords given simulated errors (`augment.corrupt_text` at rate 1): the
        LLM must take those words from the list, as when the CTC head misses a name; else None."""
        cfg, ex = self.cfg, self.examples[i]
        own = [w for w in ex.hotwords if w in listed and ex.first_pass and w in ex.first_pass]
        if not (cfg.hotword_prompt and cfg.hotword_mask_share > 0 and own):
            return None
        rng = np.random.default_rng([cfg.seed, i, MASK_TAG])
        if rng.random() >= cfg.hotword_mask_share:
            return None
        text = ex.first_pass
        for w in sorted(own, key=len, reverse=True):
            text = text.replace(w, corrupt_text(w, 1.0, rng, self._units) or "")
        return text

    # ------------------------------------------------------------------ hotwords

    def _hotwords(self, i: int) -> tuple[str, ...]:
        cfg, ex = self.cfg, self.examples[i]
        if not cfg.hotword_prompt:
            return ()
        rng = np.random.default_rng([cfg.seed, i, HOTWORD_TAG])
        u = rng.random()
        if u < cfg.hotword_none_share:
            return ()
        own = [] if u < cfg.hotword_none_share + cfg.hotword_own_drop_share else list(ex.hotwords)
        n = int(rng.integers(0, cfg.hotword_distractors + 1))
        distractors = sample_distractors(self.pool, ex.hotwords, n, rng)
        if ex.first_pass is None:
            words = (own + distractors)[:cfg.hotword_top_k]
            return tuple(words[j] for j in rng.permutation(len(words)))
        words = own + distractors
        words = [words[j] for j in rng.permutation(len(words))]
        if not words:
            return ()
        found = [w for w, _ in HotwordIndex(words, threshold=cfg.hotword_threshold).retrieve(ex.first_pass,
                                                                                               cfg.hotword_top_k)]
        if cfg.hotword_keep_own:
            missed = [w for w in own if w not in found]
            found = (missed + [w for w in found if w not in missed])[:cfg.hotword_top_k]
            found = [found[j] for j in rng.permutation(len(found))]
        return tuple(found)

    # ------------------------------------------------------------------ previous segment, passages

    def relevant_passage(self, i: int, rng: np.random.Generator) -> str | None:
        """Example i's passage containing its hotwords (file first, else a template), or None."""
        ex = self.examples[i]
        if ex.key in self._file and self._file[ex.key]:
            return self._file[ex.key][0]
        if not ex.hotwords:
            return None
        lang = "en" if ex.language == "en" else "zh"
        sep = ", " if lang == "en" else "、"
        templates = PASSAGE_TEMPLATES[lang]
        return templates[int(rng.integers(len(templates)))].format(kw=sep.join(ex.hotwords))

    def _context(self, i: int) -> tuple[str, tuple[str, ...]]:
        cfg, ex = self.cfg, self.examples[i]
        if not cfg.context_prompt:
            return "", ()
        rng = np.random.default_rng([cfg.seed, i, CONTEXT_TAG])
        previous = ""
        if i in self._prev and rng.random() < cfg.context_previous_share:
            previous = self.examples[self._prev[i]].target
        passages = []
        own = self.relevant_passage(i, rng)
        if own is not None:
            passages.append(own)
        mine = set(ex.hotwords)
        others = [j for j in self._with_hotwords if j != i and not mine & set(self.examples[j].hotwords)]
        if others and cfg.context_irrelevant:
            for j in rng.choice(len(others), size=min(cfg.context_irrelevant, len(others)), replace=False):
                p = self.relevant_passage(others[int(j)], rng)
                if p is not None:
                    passages.append(p)
        return previous, tuple(passages[j] for j in rng.permutation(len(passages)))
