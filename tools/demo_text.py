"""Sentence pool and splits of the demo corpus (text only: no audio, fast, deterministic).

Three subsets:
- `free`: sentences from compositional generators (`ZH_GENERATORS`, `EN_GENERATORS`,
  `CS_GENERATORS`) over the word lists of `demo_lexicon`. Each sentence has a *frame*: the
  generator plus which optional constituents it used (e.g. ``zh.do|time|adv|num``). Dev and test
  free sentences come only from frames that never occur in train, so they are new structures, not
  new fillings of training sentences; none is a near-duplicate of a train sentence (checked with
  rapidfuzz, `NEAR_DUPLICATE`).
- `template`: the old template sentences (`demo_templates`), new fillings in dev/test.
- `noise`: noise-only clips, transcript "" (the audio is made by `make_demo_corpus`).

`make_splits(seed, counts)` -> {"train": [Sentence], "dev": [...], "test": [...]}.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

import demo_lexicon as L
import demo_templates as T
import numpy as np

from funasr_jax.text.join import join_texts

NEAR_DUPLICATE = 85.0  # rapidfuzz ratio (0-100) at or above which two sentences count as one
HELD_OUT_FRAMES = 0.3  # share of free-form frames kept out of train (dev/test draw from them)
LANGS = ("zh", "en", "cs")

_CJK = r"\u4e00-\u9fff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[A-Za-z']+")


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def normalize_text(text: str) -> str:
    """No spaces between Chinese characters, single spaces around/between Latin words
    (the library's segment-joining rule, `funasr_jax.text.join.join_texts`, over the tokens)."""
    return join_texts(_TOKEN_RE.findall(text))


@dataclass
class Sentence:
    text: str
    language: str                 # zh | en | cs
    subset: str                   # free | template | noise
    frame: str = ""               # free: generator + optional parts used; template: family
    hotwords: list[str] = field(default_factory=list)


class Draw:
    """Random choices for one sentence; records the optional parts taken (the frame)."""

    def __init__(self, rng: np.random.Generator, name: str):
        self.rng = rng
        self.parts = [name]
        self.hotwords: list[str] = []

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def maybe(self, tag: str, p: float = 0.5) -> bool:
        if self.rng.random() < p:
            self.parts.append(tag)
            return True
        return False

    def choose(self, tag: str, options: list[str]) -> str:
        """One of several named alternatives, recorded in the frame."""
        o = self.pick(options)
        self.parts.append(f"{tag}={o}")
        return o

    def hot(self, word: str) -> str:
        if word not in self.hotwords:
            self.hotwords.append(word)
        return word

    @property
    def frame(self) -> str:
        return "|".join(self.parts)


# ----------------------------------------------------------------------------- Mandarin
def zh_name(d: Draw) -> str:
    given = d.pick(L.ZH_GIVEN) + (d.pick(L.ZH_GIVEN) if d.rng.random() < 0.5 else "")
    return d.hot(d.pick(L.ZH_SURNAMES) + given)


def zh_subject(d: Draw) -> str:
    return zh_name(d) if d.rng.random() < 0.35 else d.pick(L.ZH_PRONOUNS)


def zh_number(d: Draw) -> str:
    r = d.rng.random()
    if r < 0.5:
        return d.pick(["两"] + L.ZH_DIGITS[2:])
    if r < 0.8:
        return d.pick(L.ZH_DIGITS[1:]) + "十" + (d.pick(L.ZH_DIGITS) if d.rng.random() < 0.6 else "")
    return d.pick(L.ZH_DIGITS) + "百" + (d.pick(L.ZH_DIGITS) + "十" if d.rng.random() < 0.5 else "")


def zh_place(d: Draw) -> str:
    return d.hot(d.pick(L.ZH_CITIES)) if d.rng.random() < 0.3 else d.pick(L.ZH_PLACES)


def zh_object(d: Draw, kinds, counted: bool, cs: bool = False) -> str:
    if cs:
        return d.pick(L.ZH_CS_NOUNS)
    noun, mw = d.pick(L.ZH_NOUNS[d.pick(kinds)])
    pre = ""
    if counted and mw:
        pre = zh_number(d) + mw if d.rng.random() < 0.7 else d.pick(["这", "那", "一"]) + mw
    adj = d.pick(L.ZH_ADJ) + "的" if d.maybe("adj", 0.3) else ""
    return pre + adj + noun


def zh_do(d: Draw, cs: bool = False) -> str:
    verb, kinds, le = d.pick(L.ZH_VERBS)
    s = ""
    if d.maybe("time", 0.5):
        s += d.pick(L.ZH_TIMES)
    s += zh_subject(d)
    if d.maybe("adv", 0.4):
        s += d.pick(L.ZH_ADVERBS)
    if d.maybe("at", 0.35):
        s += "在" + zh_place(d)
    s += verb
    if le and d.maybe("le", 0.5):
        s += "了"
    return s + zh_object(d, kinds, counted=d.maybe("num", 0.5), cs=cs and d.maybe("cs", 0.8))


def zh_go(d: Draw, cs: bool = False) -> str:
    s = (d.pick(L.ZH_TIMES) if d.maybe("time", 0.5) else "") + zh_subject(d)
    if d.maybe("modal", 0.6):
        s += d.pick(L.ZH_MODALS)
    s += d.pick(L.ZH_MOTION) + zh_place(d)
    if d.maybe("purpose", 0.6):
        if cs and d.maybe("cs", 0.7):
            s += d.pick(["开", "做", "准备", "讨论"]) + d.pick(L.ZH_CS_NOUNS)
        elif d.maybe("vo", 0.6):
            verb, kinds, _ = d.pick(L.ZH_VERBS)
            s += verb + zh_object(d, kinds, counted=False)
        else:
            s += d.pick(L.ZH_INTRANSITIVE)
    return s


def zh_opinion(d: Draw, cs: bool = False) -> str:
    s = zh_subject(d) + d.pick(L.ZH_THINK)
    if cs and d.maybe("cs", 0.7):
        thing = d.pick(["这个", "那个", "我们的"]) + d.pick(L.ZH_CS_NOUNS)
    else:
        kind = d.pick(list(L.ZH_NOUNS))
        noun, mw = d.pick(L.ZH_NOUNS[kind])
        thing = (d.pick(["这", "那"]) + (mw or "个") if d.maybe("dem", 0.6) else "") + noun
    neg = "不" if d.maybe("neg", 0.25) else ""
    return s + thing + neg + d.pick(L.ZH_DEGREE) + d.pick(L.ZH_ADJ)


def zh_have(d: Draw, cs: bool = False) -> str:
    place = zh_place(d)
    if d.maybe("time", 0.4):
        place = d.pick(L.ZH_TIMES) + place
    verb = d.choose("v", ["有", "没有", "只有", "还有"])
    if cs and d.maybe("cs", 0.6):
        return place + verb + zh_number(d) + "个" + d.pick(L.ZH_CS_NOUNS)
    kind = d.pick(list(L.ZH_NOUNS))
    return place + verb + zh_object(d, (kind,), counted=True)


def zh_question(d: Draw, cs: bool = False) -> str:
    form = d.choose("q", ["ma", "shenme", "zenme", "naer", "duoshao", "shibushi"])
    subj = zh_subject(d)
    verb, kinds, _ = d.pick(L.ZH_VERBS)
    obj = d.pick(L.ZH_CS_NOUNS) if cs and d.maybe("cs", 0.8) else zh_object(d, kinds, counted=False)
    when = d.pick(L.ZH_TIMES) if d.maybe("time", 0.4) else ""
    if form == "ma":
        return when + subj + verb + "了" + obj + "吗"
    if form == "shenme":
        return when + subj + "想" + verb + "什么"
    if form == "zenme":
        return subj + "怎么" + when + "还没" + verb + obj
    if form == "naer":
        return obj + "在哪里"
    if form == "duoshao":
        return "这" + d.pick(["个", "件", "本", "杯"]) + obj + "多少钱"
    return subj + "是不是" + when + verb + "了" + obj


def zh_weather(d: Draw, cs: bool = False) -> str:
    city = d.hot(d.pick(L.ZH_CITIES))
    when = d.pick(L.ZH_TIMES) if d.maybe("time", 0.7) else ""
    s = when + city + ("的天气" if d.maybe("tianqi", 0.5) else "")
    if d.maybe("maybe", 0.4):
        s += d.pick(["可能", "应该", "会"])
    return s + d.pick(L.ZH_WEATHER)


def zh_because(d: Draw, cs: bool = False) -> str:
    """Two clauses joined by a conjunction pair (因为…所以…, 如果…就…)."""
    first, second = d.choose("c", ["因为 所以", "如果 就", "虽然 但是", "只要 就"]).split()
    a = zh_subject(d) + d.pick(L.ZH_DEGREE) + d.pick(L.ZH_ADJ)
    subj = zh_subject(d)
    modal = d.pick(L.ZH_MODALS) if d.maybe("modal", 0.5) else ""
    b = (subj + "就" if second == "就" else second + subj) + modal + d.pick(L.ZH_INTRANSITIVE)
    return first + a + b


def zh_time_event(d: Draw, cs: bool = False) -> str:
    hour = d.pick(L.ZH_DIGITS + ["十", "十一", "十二"]) + "点" + ("半" if d.maybe("half", 0.4) else "")
    pre = d.pick(["早上", "上午", "下午", "晚上"]) if d.maybe("ampm", 0.5) else ""
    what = d.pick(L.ZH_CS_NOUNS) if cs and d.maybe("cs", 0.7) else d.pick(L.ZH_INTRANSITIVE)
    return zh_subject(d) + pre + hour + d.pick(["要", "得", "去", "开始"]) + what


ZH_GENERATORS = {"do": zh_do, "go": zh_go, "opinion": zh_opinion, "have": zh_have, "question": zh_question,
                 "weather": zh_weather, "clause": zh_because, "clock": zh_time_event}
CS_GENERATORS = {"do": zh_do, "go": zh_go, "opinion": zh_opinion, "have": zh_have, "question": zh_question,
                 "clock": zh_time_event}


# ----------------------------------------------------------------------------- English
def en_subject(d: Draw) -> tuple[str, bool]:
    """(subject, is third person singular)."""
    if d.rng.random() < 0.35:
        return d.hot(d.pick(L.EN_NAMES)), True
    s = d.pick(L.EN_SUBJECTS)
    return s, s not in ("I", "you", "we", "they", "the children", "the students", "the police")


def en_np(d: Draw, kinds, plural_ok: bool = True) -> str:
    sing, plur = d.pick(L.EN_NOUNS[d.pick(kinds)])
    adj = d.pick(L.EN_ADJ) + " " if d.maybe("adj", 0.35) else ""
    if plural_ok and d.maybe("num", 0.35):
        return f"{d.pick(L.EN_NUMBERS)} {adj}{plur}"
    det = d.pick(["the", "a", "my", "your", "this", "that", "our", "their"])
    if det == "a" and (adj or sing)[0] in "aeiou":
        det = "an"
    return f"{det} {adj}{sing}"


def en_place(d: Draw) -> str:
    if d.rng.random() < 0.3:
        return "in " + d.hot(d.pick(L.EN_CITIES))
    return f"{d.pick(L.EN_PREPS)} {d.pick(L.EN_PLACES)}"


def en_do(d: Draw) -> str:
    base, past, third, kinds = d.pick(L.EN_VERBS)
    subj, sg = en_subject(d)
    tense = d.choose("t", ["past", "present", "will", "want"])
    verb = {"past": past, "present": third if sg else base, "will": "will " + base,
            "want": ("wants to " if sg else "want to ") + base}[tense]
    adv = d.pick(L.EN_ADVERBS) + " " if tense in ("past", "present") and d.maybe("adv", 0.3) else ""
    s = f"{subj} {adv}{verb} {en_np(d, kinds)}"
    if d.maybe("at", 0.35):
        s += " " + en_place(d)
    if d.maybe("time", 0.4):
        s += " " + d.pick(L.EN_TIMES)
    return s


def en_go(d: Draw) -> str:
    subj, sg = en_subject(d)
    verb = d.choose("v", ["went to", "is going to", "will go to", "walked to", "drove to", "stayed at"])
    if verb == "is going to" and not sg:
        verb = "are going to" if subj != "I" else "am going to"
    place = d.hot(d.pick(L.EN_CITIES)) if d.maybe("city", 0.4) else "the " + d.pick(L.EN_PLACES)
    s = f"{subj} {verb} {place}"
    if d.maybe("purpose", 0.4):
        base, _, _, kinds = d.pick(L.EN_VERBS)
        s += f" to {base} {en_np(d, kinds)}"
    if d.maybe("time", 0.5):
        s += " " + d.pick(L.EN_TIMES)
    return s


def en_opinion(d: Draw) -> str:
    subj, sg = en_subject(d)
    think = d.choose("v", ["think", "know", "said", "heard", "believe"])
    if think in ("think", "know", "believe") and sg:
        think += "s"
    kind = d.pick(list(L.EN_NOUNS))
    sing, _ = d.pick(L.EN_NOUNS[kind])
    be = "was" if think in ("said", "heard") else "is"
    neg = " not" if d.maybe("neg", 0.25) else ""
    very = d.pick(["very ", "really ", "quite ", "too ", ""])
    return f"{subj} {think} that the {sing} {be}{neg} {very}{d.pick(L.EN_ADJ)}"


def en_question(d: Draw) -> str:
    form = d.choose("q", ["did", "where", "howmany", "can", "why", "what"])
    subj, sg = en_subject(d)
    base, _, _, kinds = d.pick(L.EN_VERBS)
    if form == "did":
        return f"did {subj} {base} {en_np(d, kinds)}" + (" " + d.pick(L.EN_TIMES) if d.maybe("time", 0.4) else "")
    if form == "where":
        sing, _ = d.pick(L.EN_NOUNS[d.pick(kinds)])
        return f"where is the {sing}" + (" " + d.pick(["now", "today", "tonight"]) if d.maybe("time", 0.4) else "")
    if form == "howmany":
        _, plur = d.pick(L.EN_NOUNS[d.pick(kinds)])
        aux = "does" if sg else "do"
        return f"how many {plur} {aux} {subj} {base}"
    if form == "can":
        return f"can {subj} {base} {en_np(d, kinds)}" + (" " + en_place(d) if d.maybe("at", 0.4) else "")
    if form == "why":
        aux = "does" if sg else "do"
        adv = d.pick(L.EN_ADVERBS) + " " if d.maybe("adv", 0.4) else ""
        return f"why {aux} {subj} {adv}{base} {en_np(d, kinds)}"
    return f"what did {subj} {base}" + (" " + d.pick(L.EN_TIMES) if d.maybe("time", 0.5) else "")


def en_weather(d: Draw) -> str:
    city = d.hot(d.pick(L.EN_CITIES))
    tense = d.choose("t", ["is", "was", "will be"])
    when = " " + d.pick(L.EN_TIMES) if d.maybe("time", 0.6) else ""
    very = d.pick(["very ", "quite ", ""]) if d.maybe("deg", 0.4) else ""
    return f"it {tense} {very}{d.pick(L.EN_WEATHER)} in {city}{when}"


def en_please(d: Draw) -> str:
    base, _, _, kinds = d.pick(L.EN_VERBS)
    s = d.choose("p", ["please", "could you", "let us", "do not"]) + f" {base} {en_np(d, kinds)}"
    if d.maybe("for", 0.3):
        s += " for " + (d.hot(d.pick(L.EN_NAMES)) if d.rng.random() < 0.6 else d.pick(["me", "us", "them", "her", "him"]))
    if d.maybe("time", 0.4):
        s += " " + d.pick(L.EN_TIMES)
    return s


def en_clause(d: Draw) -> str:
    conj = d.choose("c", ["because", "when", "if", "but", "so"])
    subj, _ = en_subject(d)
    past = d.pick(L.EN_INTRANSITIVE)[1]
    subj2, sg2 = en_subject(d)
    adj = d.pick(L.EN_ADJ)
    be = "was" if sg2 or subj2 == "I" else "were"
    return f"{subj} {past} {conj} {subj2} {be} {adj}"


def en_count(d: Draw) -> str:
    subj, _ = en_subject(d)
    kind = d.pick(["food", "thing", "text", "drink"])
    _, plur = d.pick(L.EN_NOUNS[kind])
    s = f"{subj} {d.choose('v', ['bought', 'sold', 'found', 'ordered', 'lost'])} {d.pick(L.EN_NUMBERS)} {plur}"
    if d.maybe("price", 0.5):
        s += f" for {d.pick(L.EN_NUMBERS[:12])} dollars"
    return s


EN_GENERATORS = {"do": en_do, "go": en_go, "opinion": en_opinion, "question": en_question,
                 "weather": en_weather, "please": en_please, "clause": en_clause, "count": en_count}


# ----------------------------------------------------------------------------- pools and splits
def free_sentence(lang: str, rng: np.random.Generator) -> Sentence:
    gens = {"zh": ZH_GENERATORS, "en": EN_GENERATORS, "cs": CS_GENERATORS}[lang]
    name = list(gens)[int(rng.integers(len(gens)))]
    d = Draw(rng, f"{lang}.{name}")
    text = gens[name](d, True) if lang == "cs" else gens[name](d) if lang == "en" else gens[name](d, False)
    text = normalize_text(text)
    if lang == "cs" and not re.search("[A-Za-z]", text):
        d.parts.append("nocs")  # a code-switched generator that drew no English word
    return Sentence(text, lang, "free", d.frame, [w for w in d.hotwords if w in text])


def template_sentence(lang: str, rng: np.random.Generator) -> Sentence:
    family, tpl = T.TEMPLATES[lang][int(rng.integers(len(T.TEMPLATES[lang])))]
    chosen: dict[str, list[str]] = collections.defaultdict(list)
    hot: list[str] = []

    def sub(m: re.Match) -> str:
        fillers, is_hot = T.SLOTS[m.group(1)]
        while True:
            w = fillers[int(rng.integers(len(fillers)))]
            if w not in chosen[m.group(1)]:
                break
        chosen[m.group(1)].append(w)
        if is_hot and w not in hot:
            hot.append(w)
        return " " + w + " " if w[0].isascii() else w

    return Sentence(normalize_text(re.sub(r"\{([a-z]{2})(\d?)\}", sub, tpl)), lang, "template", family, hot)


def _near_duplicates(cands: list[str], pool: list[str]) -> np.ndarray:
    """[len(cands)] bool: candidate has a rapidfuzz ratio >= NEAR_DUPLICATE to some pool text."""
    from rapidfuzz import fuzz, process

    if not cands or not pool:
        return np.zeros(len(cands), bool)
    scores = process.cdist(cands, pool, scorer=fuzz.ratio, score_cutoff=NEAR_DUPLICATE, workers=1)
    return (scores >= NEAR_DUPLICATE).any(axis=1)


def _draw_unique(make, n: int, seen: set[str], accept=lambda s: True, max_tries: int = 200) -> list[Sentence]:
    out: list[Sentence] = []
    tries = 0
    while len(out) < n:
        s = make()
        tries += 1
        if tries > max_tries * max(n, 1):
            raise RuntimeError(f"could draw only {len(out)} of {n} sentences")
        if s.text in seen or not accept(s) or len(s.text) < 4:
            continue
        seen.add(s.text)
        out.append(s)
    return out


def make_splits(seed: int, counts: dict[str, dict[str, dict[str, int]]],
                max_zh_chars: int = 18, max_en_words: int = 13) -> dict[str, list[Sentence]]:
    """counts[split][subset][lang] -> sentences per split (noise entries are made as "" clips).

    Free-form frames are split first: a HELD_OUT_FRAMES share of the frames seen in a large draw
    (chosen by the seed) may only appear in dev/test, the rest only in train. Dev/test free and
    template sentences that are near-duplicates of a train sentence are redrawn.
    """
    rng = np.random.default_rng(seed)

    def short(s: Sentence) -> bool:
        if s.language == "cs" and "nocs" in s.frame.split("|"):
            return False
        zh = sum(is_cjk(c) for c in s.text)
        en = len(re.findall("[A-Za-z']+", s.text))
        return zh + 1.5 * en <= max_zh_chars + (0 if s.language == "zh" else 2) and en <= max_en_words

    # 1. frames: draw a big sample, hold out a share of the distinct frames per language.
    held: set[str] = set()
    for lang in LANGS:
        frames = sorted({free_sentence(lang, rng).frame for _ in range(6000)})
        order = rng.permutation(len(frames))
        held |= {frames[i] for i in order[: int(round(HELD_OUT_FRAMES * len(frames)))]}

    seen: set[str] = set()
    out: dict[str, list[Sentence]] = {"train": [], "dev": [], "test": []}
    for lang in LANGS:
        n = counts["train"].get("free", {}).get(lang, 0)
        out["train"] += _draw_unique(lambda lang=lang: free_sentence(lang, rng), n, seen,
                                     lambda s: s.frame not in held and short(s))
        n = counts["train"].get("template", {}).get(lang, 0)
        out["train"] += _draw_unique(lambda lang=lang: template_sentence(lang, rng), n, seen, short)
    train_texts = [s.text for s in out["train"]]
    for split in ("dev", "test"):
        for lang in LANGS:
            for subset, make, accept in (
                    ("free", lambda lang=lang: free_sentence(lang, rng), lambda s: s.frame in held and short(s)),
                    ("template", lambda lang=lang: template_sentence(lang, rng), short)):
                n = counts[split].get(subset, {}).get(lang, 0)
                got: list[Sentence] = []
                while len(got) < n:
                    batch = _draw_unique(make, 2 * (n - len(got)), seen, accept)
                    dup = _near_duplicates([s.text for s in batch], train_texts)
                    got += [s for s, bad in zip(batch, dup) if not bad][: n - len(got)]
                out[split] += got
    for split in out:
        out[split] += [Sentence("", lang, "noise", "noise") for lang in LANGS
                       for _ in range(counts[split].get("noise", {}).get(lang, 0))]
    return out


def vocabulary_strings() -> list[str]:
    """Every word of the lexicon and templates: the tokenizer learns them as pieces even where the
    train split happens not to use them, so that no character of the generators' inventory needs
    byte fallback (dev/test coverage is still counted against the train transcripts)."""
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, (list, tuple)):
            for y in x:
                yield from strings(y)
        elif isinstance(x, dict):
            for y in x.values():
                yield from strings(y)

    words = [w for name, v in vars(L).items() if name.isupper() for w in strings(v)]
    words += [w for fillers, _ in T.SLOTS.values() for w in fillers]
    words += [normalize_text(re.sub(r"\{[a-z0-9]+\}", " ", tpl)) for tpls in T.TEMPLATES.values() for _, tpl in tpls]
    return sorted({w for w in words if w.strip()})


def coverage(train: list[str], test: list[str]) -> dict[str, float]:
    """Share of test scoring units seen in train: Chinese characters, English words (tokens)."""
    def units(texts):
        zh = [c for t in texts for c in t if is_cjk(c)]
        en = [w.lower() for t in texts for w in re.findall("[A-Za-z']+", t)]
        return zh, en

    tz, te = units(train)
    sz, se = units(test)
    zs, es = set(tz), set(te)
    return {"zh_chars": sum(c in zs for c in sz) / max(len(sz), 1),
            "en_words": sum(w in es for w in se) / max(len(se), 1),
            "all": (sum(c in zs for c in sz) + sum(w in es for w in se)) / max(len(sz) + len(se), 1)}
