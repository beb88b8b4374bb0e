"""`python -m train.bench --compile-only`: the step the loop compiles, traced, lowered and
compiled from abstract shapes (no parameter allocated, nothing run), each stage timed."""

from __future__ import annotations

import json

import jax
import pytest

from train import bench

# A one-layer-per-stack tiny model keeps the compile short; the mode is what is tested.
SMALL = ["--set", "model.encoder.num_blocks=2", "--set", "model.encoder.tp_blocks=1",
         "--set", "model.llm.num_hidden_layers=2"]


def test_compile_only_reports_each_stage_and_allocates_no_params(tmp_path, monkeypatch, capsys):
    def no_params(*a, **k):
        raise AssertionError("--compile-only allocated parameters")

    monkeypatch.setattr(bench, "random_params", no_params)
    live_before = sum(x.nbytes for x in jax.live_arrays())
    out = tmp_path / "c.json"
    rc = bench.main(["--config", "sft4.py", "--preset", "tiny", "--batch", "2", "--seconds", "1",
                     "--compile-only", "--out", str(out), *SMALL])
    assert rc == 0
    rec = json.loads(out.read_text())
    for k in ("trace_s", "lower_s", "compile_s"):
        assert rec[k] > 0, k
    assert rec["total_s"] == pytest.approx(rec["trace_s"] + rec["lower_s"] + rec["compile_s"], abs=2e-3)
    assert rec["hlo_ops"] > 100 and rec["hlo_chars"] > rec["hlo_lines"] > rec["hlo_ops"]
    assert rec["step"] == "accumulate" and rec["micro_batches"] == 1 and rec["batch"] == 2
    # Nothing of the model's size stayed alive (the tiny model's params alone are ~12 MB in f32).
    assert sum(x.nbytes for x in jax.live_arrays()) - live_before < 1_000_000
    printed = capsys.readouterr().out
    assert "| trace s | lower s | compile s |" in printed


def test_compile_only_refuses_what_it_cannot_time(capsys):
    assert bench.main(["--config", "grpo.py", "--preset", "tiny", "--compile-only", *SMALL]) == 2
    assert "grpo stage" in capsys.readouterr().err
    assert bench.main(["--config", "sft4.py", "--preset", "tiny", "--compile-only", "--compare-torch", *SMALL]) == 2


def test_staged_compile_times_and_sizes_a_function():
    f = jax.jit(lambda x: (x @ x.T).sum())
    compiled, rec = bench.staged_compile(f, jax.ShapeDtypeStruct((8, 4), "float32"))
    assert rec["hlo_ops"] >= 2 and min(rec["trace_s"], rec["lower_s"], rec["compile_s"]) >= 0
    assert float(compiled(jax.numpy.ones((8, 4)))) == 8 * 8 * 4
