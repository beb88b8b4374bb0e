"""RL data selection: the subset rules on hand-made cases, long groups, and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from funasr_jax.infer.rl_select import classify, long_groups

ROOT = Path(__file__).resolve().parents[2]


def test_subset_rules_in_order_of_precedence():
    assert classify("", "", "", ()) == "hallucination"  # noise-only clip: kept even when silent
    assert classify("", "嗯嗯", "", ()) == "hallucination"
    assert classify("去公园", "去公园去公园去公园去公园", "去公园", ("公园",)) == "hallucination"  # repeats win
    # LLM 2 errors of 5 (40 %) while the CTC head is exact: a hard case
    assert classify("今天天气好", "今天天汽号", "今天天气好", ()) == "hard"
    # both wrong: not hard (nothing agrees with the reference)
    assert classify("今天天气好", "今天天汽号", "今天天汽号", ()) == "regular"
    assert classify("我在合肥", "我在合肥", "我在合肥", ("合肥",)) == "keyword"
    assert classify("the cat sat down", "the cat sat down", "the cat sat", ()) == "regular"


@dataclass
class Ex:
    target: str
    language: str
    speech_length: int  # 10 ms frames


def test_long_groups_chain_one_language_past_the_threshold():
    exs = [Ex("a", "en", 800), Ex("甲", "zh", 900), Ex("", "en", 5000), Ex("b", "en", 800), Ex("c", "en", 500),
           Ex("乙", "zh", 900), Ex("丙", "zh", 300), Ex("d", "en", 100)]
    # en: 8 + 0.3 + 8 + 0.3 + 5 = 21.6 s > 20 after index 4 (the noise clip, index 2, left out)
    # zh: 9 + 0.3 + 9 + 0.3 + 3 = 21.6 s after index 6; "d" alone is a trailing short group
    assert long_groups(exs, 20.0) == [[0, 3, 4], [1, 5, 6]]


def test_cli_writes_the_manifest_and_counts(tmp_path):
    """On a random tiny model (its outputs are junk: most lines land in hallucination / regular)."""
    import jax

    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params
    from helpers.train import DEMO, small_manifest

    cfg = model_for_preset("tiny")
    ckpt = tmp_path / "model"
    save_params(ckpt, init_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    data = small_manifest(tmp_path, "train", 30)
    out = tmp_path / "rl"
    r = subprocess.run([sys.executable, "-m", "funasr_jax.rl_select", "--checkpoint", str(ckpt), "--data", data,
                        "--out-dir", str(out), "--long-seconds", "8", "--per-subset", "5"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(l) for l in (out / "rl.jsonl").read_text().splitlines()]
    counts = {}
    for o in lines:
        counts[o["rl_subset"]] = counts.get(o["rl_subset"], 0) + 1
    assert all(v <= 5 for v in counts.values()) and counts.get("long", 0) >= 1
    for name in ("hard", "long", "hallucination", "keyword", "regular"):
        assert f"\n{name}" in "\n" + r.stdout
    long_line = next(o for o in lines if o["rl_subset"] == "long")
    wav = out / long_line["messages"][1]["content"].split("!")[1].split("<|endofspeech|>")[0]
    info = sf.info(str(wav))
    assert info.samplerate == 16000 and info.duration > 8.0
    assert r.stdout.strip().splitlines()[-1].startswith(f"wrote {len(lines)} lines")
