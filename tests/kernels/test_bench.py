"""kernels.bench as the one-call GPU check uses it: the order of its rows (production shapes and the
implementations that matter first), the JSON rewritten after every row (a run stopped from outside
keeps what it finished), and `--budget-s` (no row starts after it; the rest listed as not run).
The rows themselves are stand-ins here (no kernel runs); `tests/kernels/test_attention.py::
test_bench_smoke` runs the real thing at tiny shapes."""

from __future__ import annotations

import json
import time

import pytest

from kernels import bench


def test_gpu_plan_puts_production_shapes_and_main_implementations_first():
    order = [(s.label, impl) for s, impl in bench.plan(smoke=False)]
    production = {s.label for s in bench.shapes(False)["production"]}
    assert {"enc_32x30", "llm_32x30", "ctc_32x30"} == production
    main = set(bench.ATTENTION_MAIN + bench.CTC_MAIN)
    first = order[:len(bench.ATTENTION_MAIN) * 2 + len(bench.CTC_MAIN)]
    assert {label for label, _ in first} == production and {impl for _, impl in first} <= main
    # every main row comes before every extra row; within a shape, the order of the main tuple
    last_main = max(i for i, (_, impl) in enumerate(order) if impl in main)
    assert all(impl not in main for _, impl in order[last_main + 1:])
    assert [impl for label, impl in order if label == "llm_32x30"][:4] == ["ours", "cudnn", "xla", "torch_sdpa"]
    assert [impl for label, impl in order if label == "ctc_32x30"][:3] == ["ours", "xla", "torch"]
    # production shapes are those of the nano 32 x 30 s batch
    enc, llm, ctc = bench.shapes(False)["production"]
    assert (enc.b, enc.t, enc.hq, enc.d, enc.causal) == (32, 500, 4, 128, False)
    assert (llm.b, llm.t, llm.hq, llm.hkv, llm.d, llm.causal) == (32, 192, 16, 8, 128, True)
    assert (ctc.b, ctc.t, ctc.vocab) == (32, 500, 60515)
    assert bench.plan(False, only="ctc") == [(s, i) for s, i in bench.plan(False) if isinstance(s, bench.CTCShape)]


@pytest.fixture
def fake_rows(monkeypatch, tmp_path):
    """Rows that take `delay` seconds and record how many rows the JSON held when they started."""
    out = tmp_path / "kb.json"
    seen = []

    def fake(s, impl, *args, delay=0.0, **kw):
        seen.append(len(json.loads(out.read_text())["rows"]) if out.exists() else 0)
        time.sleep(fake.delay)
        if impl == "torch_sdpa":
            raise bench.Unavailable("no torch here")   # unavailable: no row
        return dict(op="x", label=s.label, impl=impl, ran=impl, fwd_ms=1.0, fwdbwd_ms=2.0)

    fake.delay = 0.0
    monkeypatch.setattr(bench, "attention_row", fake)
    monkeypatch.setattr(bench, "ctc_row", fake)
    monkeypatch.setattr(bench, "_attention_inputs", lambda s, smoke: None)
    monkeypatch.setattr(bench, "_ctc_inputs", lambda s: None)
    return out, seen, fake


def test_json_is_rewritten_after_every_row(fake_rows):
    out, seen, _ = fake_rows
    rows = bench.run(smoke=False, iters=1, out=str(out), meta={"device": "test"})
    planned = bench.plan(False)
    assert len(rows) == len([1 for _, impl in planned if impl != "torch_sdpa"])
    # each row started with every earlier row already on disk
    assert seen == sorted(seen) and seen[-1] == len(rows) - 1 and seen[0] == 0
    data = json.loads(out.read_text())
    assert data["done"] is True and data["not_run"] == [] and data["meta"] == {"device": "test"}
    assert [(r["label"], r["impl"]) for r in data["rows"]] == [(s.label, i) for s, i in planned if i != "torch_sdpa"]
    assert all(r["speedup_of_ours_fwd"] == 1.0 for r in data["rows"])


def test_budget_stops_starting_rows_and_lists_the_rest(fake_rows):
    out, seen, fake = fake_rows
    fake.delay = 0.05
    bench.run(smoke=False, iters=1, budget_s=0.12, out=str(out))
    data = json.loads(out.read_text())
    done = [(r["label"], r["impl"]) for r in data["rows"]]
    assert 2 <= len(done) <= 3, done
    planned = [f"{s.label} {i}" for s, i in bench.plan(False)]
    assert data["not_run"] == planned[len(seen):] and data["done"] is True
    assert done == [tuple(p.split()) for p in planned[:len(done)]]    # the first rows of the plan
