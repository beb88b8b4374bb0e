"""The README's first command, shortened: every stage of the chain runs and the scores print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_chain_runs(tmp_path):
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "train.quickstart", "--out", str(out), "--scale", "0.001",
                        "--eval-utts", "6", "--rl", "--hotwords", "--set", "data.bucket_frames=[96]"],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quickstart: test error rate" in r.stdout
    scores = json.loads((out / "test_scores.json").read_text())
    results = scores["results"]
    assert set(results) == {"joint", "llm", "ctc"} and results["joint"]["ctc_weight"] == 0.5
    assert all(v["utterances"] == 6 for v in results.values())
    for v in results.values():  # noise-only clips are counted apart from the error rates
        assert v["noise_only"]["utterances"] + v["breakdown"]["overall"]["utterances"] == 6
        assert set(v["per_subset"]) <= {"free", "template"}
    assert 0.0 < scores["coverage"]["free"]["coverage"] <= 1.0
    assert {"ctc_seed", "ctc_warmup", "first_pass", "llm_text", "sft_llm", "test_decode"} <= set(scores["timing"])
    # the first-pass manifests cover the training split and the LLM stage trained on them
    train_lines = (ROOT / "data" / "demo" / "train.jsonl").read_text().splitlines()
    fp = (out / "first_pass" / "train.jsonl").read_text().splitlines()
    assert len(fp) == len(train_lines) and all("first_pass" in json.loads(l) for l in fp[:5])
    seed_cfg = json.loads((out / "ctc_seed" / "train_config.json").read_text())
    assert seed_cfg["data"]["max_train_utts"] == 96 and seed_cfg["run"]["init_from"] is None
    warm_cfg = json.loads((out / "ctc_warmup" / "train_config.json").read_text())
    assert warm_cfg["data"]["max_train_utts"] == 0 and warm_cfg["run"]["init_from"] == str(out / "ctc_seed")
    text_cfg = json.loads((out / "llm_text" / "train_config.json").read_text())
    assert text_cfg["data"]["text_only"] and text_cfg["data"]["first_pass_noise"] > 0
    assert text_cfg["run"]["init_from"] == str(out / "ctc_warmup") and text_cfg["stage"]["trainable"] == ["llm"]
    cfg = json.loads((out / "sft_llm" / "train_config.json").read_text())
    assert cfg["data"]["train_files"] == [str(out / "first_pass" / "train.jsonl")]
    # --set reaches every stage, after the quickstart's own settings (one bucket: one compile per stage)
    assert all(c["data"]["bucket_frames"] == [96] for c in (seed_cfg, warm_cfg, text_cfg, cfg))
    assert cfg["run"]["init_from"] == str(out / "llm_text")
    meta = json.loads((out / "sft_llm" / "funasr_jax.json").read_text())
    assert meta["prompt"]["first_pass"] is True
    rows = [json.loads(l) for l in (out / "test_hyps_joint.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("first_pass" in r for r in rows)
    # --rl: GRPO from sft_llm, then the same three decodings, before / after printed
    rl = scores["rl"]
    assert set(rl["results"]) == {"joint", "llm", "ctc"} and len(rl["reward_first_last"]) == 2
    assert all({"recall", "accuracy"} <= set(v["keywords"]) for v in rl["results"].values())
    grpo_cfg = json.loads((out / "grpo" / "train_config.json").read_text())
    assert grpo_cfg["stage"]["kind"] == "grpo" and grpo_cfg["run"]["init_from"] == str(out / "sft_llm")
    assert "test split before / after GRPO" in r.stdout and "| llm | noise-only clips with output |" in r.stdout
    # --hotwords: hotword SFT from sft_llm, then without / with 0, 100, 1000 distractors
    hot = scores["hotwords"]["figures"]
    assert list(hot) == ["without", "with_0", "with_100", "with_1000"]
    assert all(f["utterances"] == 6 and "overall" in f["keywords"] for f in hot.values())
    hw_cfg = json.loads((out / "hotword_sft" / "train_config.json").read_text())
    assert hw_cfg["data"]["hotword_prompt"] and hw_cfg["run"]["init_from"] == str(out / "sft_llm")
    assert "test split without / with hotwords" in r.stdout


def test_quickstart_pretrain_chain_runs(tmp_path):
    """--pretrain: bestrq -> aed_seed -> aed replace the CTC stages; the AED decoder is scored too."""
    out = tmp_path / "qs"
    r = subprocess.run([sys.executable, "-m", "train.quickstart", "--out", str(out), "--scale", "0.001",
                        "--eval-utts", "4", "--pretrain", "--set", "data.bucket_frames=[96]"],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    scores = json.loads((out / "test_scores.json").read_text())
    assert set(scores["results"]) == {"joint", "llm", "ctc", "aed"}
    assert scores["results"]["aed"]["utterances"] == 4
    assert {"bestrq", "aed_seed", "aed", "llm_text", "sft_llm"} <= set(scores["timing"])
    assert "ctc_seed" not in scores["timing"]
    chain = {name: json.loads((out / name / "train_config.json").read_text()) for name in ("bestrq", "aed_seed", "aed",
                                                                                          "llm_text")}
    assert chain["bestrq"]["run"]["init_from"] is None and chain["bestrq"]["model"]["bestrq"]["enabled"]
    assert chain["aed_seed"]["run"]["init_from"] == str(out / "bestrq")
    assert chain["aed_seed"]["data"]["max_train_utts"] == 96 and chain["aed_seed"]["stage"]["aed_weight"] > 0
    assert chain["aed"]["run"]["init_from"] == str(out / "aed_seed")
    assert chain["llm_text"]["run"]["init_from"] == str(out / "aed")
    assert "AED decoder of" in r.stdout
