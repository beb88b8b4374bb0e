"""Writes the demo corpus's hotword side files (run from the repository root; deterministic):

  data/demo/hotwords/categories.tsv   every hotword of the demo manifests <TAB> its category
                                      (names | places | companies | tech), for per-category
                                      keyword figures (`evaluate --hotword-categories`);
  data/demo/hotwords/distractors.txt  a distractor pool of >= 1,200 words for the demo's hotword
                                      figures: the corpus's hotwords plus more synthetic names,
                                      cities and terms of the same shapes (`--distractor-pool`).

    python tools/demo_hotword_lists.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import demo_lexicon as L  # noqa: E402
import demo_templates as T  # noqa: E402

PLACES = set(T.ZH_CITIES) | set(T.EN_CITIES) | set(L.ZH_CITIES) | set(L.EN_CITIES)
COMPANIES = set(T.ZH_COMPANIES) | set(T.EN_COMPANIES)
TECH = set(T.ZH_TECH) | set(T.EN_TECH)
EXTRA_EN_NAMES = ["Aaron", "Abigail", "Adrian", "Amelia", "Arthur", "Ava", "Caleb", "Carla", "Connor",
                  "Diana", "Dylan", "Elena", "Felix", "Fiona", "Gavin", "Helen", "Ian", "Ivy", "Jason",
                  "Kate", "Leo", "Lily", "Mason", "Mia", "Nathan", "Nora", "Oscar", "Paula", "Quinn",
                  "Rose", "Sean", "Tara", "Victor", "Wendy", "Xavier", "Yvonne", "Zack", "Zoe"]
EXTRA_PLACES = ["Hamburg", "Rome", "Milan", "Geneva", "Brussels", "Warsaw", "Seoul", "Osaka", "Dubai",
                "Cairo", "Lima", "Bogota", "Montreal", "Phoenix", "Dallas", "Atlanta", "Portland",
                "珠海", "佛山", "东莞", "常州", "南通", "温州", "绍兴", "烟台", "洛阳", "桂林", "丽江", "大理"]


def category(word: str) -> str:
    if word in PLACES:
        return "places"
    if word in COMPANIES:
        return "companies"
    if word in TECH:
        return "tech"
    return "names"


def main() -> int:
    out = ROOT / "data" / "demo" / "hotwords"
    out.mkdir(parents=True, exist_ok=True)
    words: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        for line in (ROOT / "data" / "demo" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            words.update(dict.fromkeys(json.loads(line).get("hotwords") or []))
    (out / "categories.tsv").write_text("".join(f"{w}\t{category(w)}\n" for w in words), encoding="utf-8")
    rng = random.Random(13)
    pool = dict(words)
    pool.update(dict.fromkeys(sorted(PLACES | COMPANIES | TECH) + EXTRA_EN_NAMES + EXTRA_PLACES))
    while len(pool) < 1200:
        given = "".join(rng.choice(L.ZH_GIVEN) for _ in range(rng.choice((1, 2))))
        pool[rng.choice(L.ZH_SURNAMES) + given] = None
    header = "# demo distractor pool: corpus hotwords + synthetic words of the same shapes (tools/demo_hotword_lists.py)\n"
    (out / "distractors.txt").write_text(header + "".join(f"{w}\n" for w in pool), encoding="utf-8")
    print(f"{len(words)} corpus hotwords, {len(pool)} distractor-pool words -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
