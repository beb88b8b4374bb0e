"""Error-rate scoring against a brute-force edit distance, and the evaluate / transcribe CLIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from funasr_jax.text import metrics

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


def levenshtein(a, b) -> int:
    """Plain O(len(a) * len(b)) dynamic programme: the independent reference."""
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


@pytest.mark.parametrize("ref,hyp,units", [
    ("张伟明天去杭州", "张伟明天去航州", list("张伟明天去杭州")),
    ("Please send the report", "please send a report today", ["please", "send", "the", "report"]),
    ("我们用PyTorch训练模型", "我们用 pytorch 训练了模型", ["我", "们", "用", "pytorch", "训", "练", "模", "型"]),
])
def test_error_counts_match_brute_force(ref, hyp, units):
    c = metrics.score_pair(ref, hyp)
    assert metrics.tokens(ref) == units
    assert c.errors == levenshtein(metrics.tokens(ref), metrics.tokens(hyp))
    assert c.ref_tokens == len(units)
    assert c.substitutions + c.deletions + c.insertions == c.errors


def test_empty_reference_scores_insertions_and_breakdown():
    assert metrics.score_pair("", "a b c").errors == 3
    assert metrics.score_pair("", "").errors == 0
    rows = [{"ref": "你好世界", "hyp": "你好", "language": "zh", "subset": "a"},
            {"ref": "hello big world", "hyp": "hello world", "language": "en", "subset": "a"},
            {"ref": "", "hyp": "noise", "language": "en", "subset": "b"}]
    table = metrics.breakdown(rows)
    assert table["language/zh"]["metric"] == "cer" and table["language/zh"]["rate"] == pytest.approx(0.5)
    assert table["language/en"]["metric"] == "wer" and table["language/en"]["errors"] == 2
    assert table["overall"]["errors"] == 2 + 1 + 1 and table["overall"]["ref_tokens"] == 7
    assert table["subset/b"]["rate"] == 1.0  # no reference tokens: the raw insertion count


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny model saved as a checkpoint with the demo tokenizer."""
    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path_factory.mktemp("ck")
    save_params(d, init_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    return d


def test_evaluate_cli(tiny_checkpoint, tmp_path):
    lines = (DEMO / "test.jsonl").read_text().splitlines()
    objs = [json.loads(l) for l in lines]

    def first(pred):
        return next(l for l, o in zip(lines, objs) if pred(o))

    # one speech line per language, and a noise-only clip (reference ""), when the corpus has one
    picked = [first(lambda o, lang=lang: o.get("language") == lang and o["messages"][-1]["content"])
              for lang in ("zh", "en", "cs")]
    has_noise = any(not o["messages"][-1]["content"] for o in objs)
    picked.append(first(lambda o: not o["messages"][-1]["content"]) if has_noise else lines[-1])
    manifest = tmp_path / "sub.jsonl"
    # relative audio paths resolve against the manifest's folder: point them back at the corpus
    fixed = [l.replace("!audio/", f"!{DEMO}/audio/") for l in picked]
    manifest.write_text("\n".join(fixed) + "\n{not json\n")
    out = tmp_path / "hyps.jsonl"
    cmd = [sys.executable, "-m", "funasr_jax.evaluate", "--checkpoint", str(tiny_checkpoint), "--data",
           str(manifest), "--out", str(out), "--max-new-tokens", "4", "--json"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and f"{manifest}:5" in r.stderr  # malformed line named by file:line
    r = subprocess.run(cmd + ["--on-error", "skip"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 4 and summary["utterances"] == 4
    speech = [x for x in rows if metrics.tokens(x["ref"])]  # noise-only rows are not in the error rates
    recomputed = sum(levenshtein(metrics.tokens(x["ref"]), metrics.tokens(x["hyp"])) for x in speech)
    assert summary["breakdown"]["overall"]["errors"] == recomputed
    assert summary["breakdown"]["overall"]["utterances"] == len(speech) == 4 - has_noise
    assert summary["noise_only"]["utterances"] == int(has_noise)
    assert {"language/zh", "language/en", "language/cs"} <= set(summary["breakdown"])


def test_transcribe_cli(tiny_checkpoint, tmp_path):
    wav = ROOT / "tests" / "fixtures" / "audio" / "zh.flac"
    bad = ROOT / "tests" / "fixtures" / "audio" / "truncated.wav"
    r = subprocess.run([sys.executable, "-m", "funasr_jax.transcribe", "--checkpoint", str(tiny_checkpoint),
                        str(wav), str(bad), "--json", "--max-new-tokens", "3"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "truncated.wav" in r.stderr
    out = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(out) == 1 and out[0]["path"] == str(wav) and isinstance(out[0]["text"], str)
    r = subprocess.run([sys.executable, "-m", "funasr_jax.transcribe", "--checkpoint", str(tmp_path / "nope"),
                        str(wav)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "nope" in r.stderr
