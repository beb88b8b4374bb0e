"""The side-by-side benchmarks against FunASR's PyTorch model run, and compare like with like.

Speed is never asserted; what is asserted is that both sides did the same work: the transcription
bench's greedy tokens agree with Hugging Face `generate` on the same (converted) weights, and the
training comparison trains the same number of parameters per part on both sides.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("funasr")


def test_transcription_bench_matches_hf_generate_tokens(tmp_path):
    from funasr_jax import bench

    rec = bench.run("tiny", [2], seconds=1.0, new_tokens=3, repeats=1, warmup=1)
    (ratio,) = rec["ratio"]
    # same weights, greedy on both sides: the tokens are the cross-check that the work is the same
    assert ratio["greedy_token_agreement"] == 1.0
    for row in rec["ours"] + rec["torch"]:
        assert row["batch"] == 2 and row["tokens_per_s"] > 0 and row["rtf"] > 0
    assert "ratio ours/torch" in bench.table(rec)


def test_transcription_bench_bad_flags_name_the_flag(capsys):
    from funasr_jax import bench

    assert bench.main(["--batch", "1,x", "--no-torch"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert bench.main(["--new-tokens", "0", "--no-torch"]) == 2
    assert "--new-tokens" in capsys.readouterr().err


def test_train_bench_compare_torch_same_trainable_set(tmp_path, capsys):
    from train import bench

    out = tmp_path / "tb.json"
    rc = bench.main(["--config", "sft4.py", "--preset", "tiny", "--batch", "2", "--seconds", "1.5",
                     "--steps", "1", "--warmup", "1", "--no-eval", "--compare-torch", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["ratio"]["same_trainable_params"], (rec["trainable_params"], rec["torch"]["trainable_params"])
    assert set(rec["trainable_params"]) == {"audio_encoder", "audio_adaptor", "llm"}  # sft4: LoRA in the LLM
    assert math.isfinite(rec["torch"]["loss"]) and rec["torch"]["batch"] == 2
    assert rec["ratio"]["steps_per_s"] > 0
    assert "ratio ours/torch" in capsys.readouterr().out


def test_set_trainable_rejects_unknown_prefix():
    from funasr_jax.io.torch_nano import set_trainable

    class _M:
        def named_parameters(self):
            return iter(())

    with pytest.raises(ValueError, match="llm/model/layers"):
        set_trainable(_M(), ("llm/model/layers",))
