"""The streaming / long-file demo scripts: latency bookkeeping by hand, and both end to end on a
random tiny model (a few utterances)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.streaming import Partial
from train.long_demo import build_recording, long_figures
from train.stream_demo import appearance_times, stream_figures, word_last_tokens

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


def test_word_ends_and_appearance_times():
    assert word_last_tokens(["\u2581my", "\u2581un", "cle", "\u2581", "你好", "吗", "\u2581ok"]) == [0, 2, 4, 5, 6]
    parts = [Partial("", False, 0.5, 0.1, token_ids=(7,)), Partial("", False, 1.0, 0.1, token_ids=(7, 8, 1)),
             Partial("", False, 1.5, 0.2, token_ids=(7, 8, 9)), Partial("", True, 1.7, 0.3, token_ids=(7, 8, 9, 4))]
    # token 7 is there from the first partial on; 8 from the second; 9 only from the third; 4 at the end
    assert appearance_times(parts, [7, 8, 9, 4]) == pytest.approx([0.6, 1.1, 1.7, 2.0])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from configs.base import model_for_preset
    from funasr_jax.io.checkpoint import save_params
    from funasr_jax.models.funasr import init_params

    cfg = model_for_preset("tiny")
    d = tmp_path_factory.mktemp("ck")
    save_params(d, init_params(cfg, jax.random.PRNGKey(1)), cfg, tokenizer_path=str(DEMO / "tokenizer.model"),
                ctc_tokenizer_path=str(DEMO / "tokenizer.model"))
    return d


def test_demos_end_to_end(ckpt, tmp_path):
    exs = read_manifests([str(DEMO / "test.jsonl")])[:4]
    figs = stream_figures(str(ckpt), exs, chunks=(960.0,), out=tmp_path, tokens_per_second=2.0)
    assert set(figs) == {"offline", "chunk_960"} and (tmp_path / "stream_hyps_960.jsonl").exists()
    assert figs["chunk_960"]["chunks"] >= len(exs) and figs["chunk_960"]["latency_s"]["n"] >= 1
    wave, placed = build_recording([e for e in exs if e.target], 0.1)
    assert all(st <= on < off <= e <= len(wave) for _, st, e, on, off in placed)
    fig = long_figures(str(ckpt), exs, minutes=0.1)
    assert fig["utterances"] == len(placed) and fig["segments"] >= 1 and np.isfinite(fig["rtf"])
