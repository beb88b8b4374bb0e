"""`convert to-torch` -> `convert from-torch` keeps the whole model, not only its tensors: the
tokenizers, CMVN, the first-pass prompt setting, the CTC weight and the longest segment of the
training run, so the restored model decodes exactly as the original; to-torch never overwrites a
directory silently; without torch the converter says what to install, in one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")
import yaml
from helpers.train import DEMO, small_manifest

from configs.base import model_for_preset
from funasr_jax import convert
from funasr_jax.audio.frontend import FrontendConfig
from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples
from funasr_jax.infer.recognizer import DEFAULT_MAX_SEGMENT_S, Recognizer
from funasr_jax.io.checkpoint import load_model, save_params
from funasr_jax.io import funasr_torch
from funasr_jax.models.funasr import abstract_params
from funasr_jax.text.tokenizer import load_tokenizer
from sharding.paths import flatten, unflatten

TOK = DEMO / "tokenizer.model"
CMVN = DEMO / "am.mvn"
BUCKETS = [16, 24]  # LFR frames: the run's longest bucket is 24 x 60 ms = 1.44 s, so longer clips are cut


def _random_params(cfg, seed=7):
    """Random weights drawn in numpy (1 s; the model's own init compiles for ~30 s here): kernels and
    embeddings N(0, 1/fan_in), norm scales 1, biases 0 — enough for varied, input-dependent output."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, x in flatten(abstract_params(cfg)).items():
        if path[-1] == "scale":
            flat[path] = np.ones(x.shape, x.dtype)
        elif path[-1] == "bias":
            flat[path] = np.zeros(x.shape, x.dtype)
        else:
            fan_in = int(np.prod(x.shape[:-1])) if len(x.shape) > 1 else 1
            flat[path] = (rng.standard_normal(x.shape) / np.sqrt(fan_in)).astype(x.dtype)
    return unflatten(flat)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model as a training run leaves it: sentencepiece tokenizer shared with the CTC head,
    CMVN, first pass in the prompt, joint CTC weight 0.5, buckets in train_config.json."""
    d = tmp_path_factory.mktemp("convert")
    cfg = model_for_preset("tiny")
    params = _random_params(cfg)
    run = d / "run"
    save_params(run, params, cfg, tokenizer_path=str(TOK), ctc_tokenizer_path=str(TOK),
                frontend=FrontendConfig(cmvn_file=str(CMVN)), first_pass_prompt=True, ctc_weight=0.5)
    (run / "train_config.json").write_text(json.dumps({"data": {"bucket_frames": BUCKETS}}))
    examples = read_manifests([small_manifest(d, "test", 8)])
    return run, examples


def _export(run, out, *extra):
    return convert.main(["to-torch", "--checkpoint", str(run), "--out", str(out), "--dtype", "f32", *extra])


def _hyps(path, examples):
    rec = Recognizer.from_checkpoint(path)
    rows, _, _ = evaluate_examples(rec, examples, batch_size=8, max_new_tokens=8, ctc_text=True)
    return rec, [(r["key"], r["hyp"], r.get("first_pass"), r.get("ctc")) for r in rows]


def test_round_trip_restores_a_model_that_decodes_identically(source, tmp_path):
    run, examples = source
    rel, back = tmp_path / "release", tmp_path / "back"
    assert _export(run, rel) == 0
    assert convert.main(["from-torch", "--model-dir", str(rel), "--out", str(back)]) == 0
    a, b = load_model(run), load_model(back)
    assert b.cfg == a.cfg
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert (b.first_pass_prompt, b.ctc_weight) == (a.first_pass_prompt, a.ctc_weight) == (True, 0.5)
    assert Path(b.tokenizer_path).read_bytes() == Path(b.ctc_tokenizer_path).read_bytes() == TOK.read_bytes()
    assert Path(b.frontend.cmvn_file).read_bytes() == CMVN.read_bytes()
    assert b.frontend == dataclasses.replace(a.frontend, cmvn_file=b.frontend.cmvn_file)

    rec_a, hyps_a = _hyps(run, examples)
    rec_b, hyps_b = _hyps(back, examples)
    assert rec_a.max_segment_s == pytest.approx(max(BUCKETS) * a.frontend.lfr_n * a.frontend.frame_shift_ms / 1000)
    assert rec_b.max_segment_s == rec_a.max_segment_s != DEFAULT_MAX_SEGMENT_S
    assert hyps_b == hyps_a
    # the export directory itself serves load_model / transcribe / evaluate with the same settings
    r = load_model(rel)
    assert (r.cfg, r.first_pass_prompt, r.ctc_weight) == (a.cfg, True, 0.5)
    assert Path(r.frontend.cmvn_file).read_bytes() == CMVN.read_bytes()
    rec_r, hyps_r = _hyps(rel, examples)
    assert rec_r.max_segment_s == rec_a.max_segment_s and hyps_r == hyps_a
    assert sum(bool(h) for _, h, _, _ in hyps_a) >= len(hyps_a) // 2  # the hypotheses say something
    # ... and what was restored matters: the same weights and tokenizer without the settings (what
    # a conversion of the tensors alone gave) decode differently
    bare = Recognizer(b.cfg, b.params, load_tokenizer(b.tokenizer_path))
    rows, _, _ = evaluate_examples(bare, examples, batch_size=8, max_new_tokens=8)
    assert [r["hyp"] for r in rows] != [h for _, h, _, _ in hyps_a]

    # what FunASR's loader reads sits next to model.pt under its own names
    conf = yaml.safe_load((rel / "config.yaml").read_text())
    assert conf["frontend_conf"]["cmvn_file"] == "am.mvn" and (rel / "am.mvn").read_bytes() == CMVN.read_bytes()
    assert conf["tokenizer"] == "SentencepiecesTokenizer" and conf["tokenizer_conf"]["bpemodel"] == "bpe.model"
    assert conf["dataset_conf"]["ctc_tokenizer_conf"]["bpemodel"] == "bpe.model"
    assert (rel / "bpe.model").read_bytes() == TOK.read_bytes()
    side = json.loads((rel / funasr_torch.SIDECAR_FILE).read_text())["meta"]
    assert side["decoding"]["max_segment_s"] == pytest.approx(rec_a.max_segment_s)


def test_plain_funasr_directory_and_a_foreign_sidecar(source, tmp_path, capsys):
    """Without the sidecar, from-torch still reads CMVN and tokenizers by FunASR's file names (the
    decoding settings then take their defaults); a sidecar describing another model is refused."""
    run, _ = source
    rel = tmp_path / "release"
    assert _export(run, rel) == 0
    plain = tmp_path / "plain"
    shutil.copytree(rel, plain)
    (plain / funasr_torch.SIDECAR_FILE).unlink()
    assert convert.main(["from-torch", "--model-dir", str(plain), "--out", str(tmp_path / "p")]) == 0
    m = load_model(tmp_path / "p")
    assert Path(m.frontend.cmvn_file).read_bytes() == CMVN.read_bytes()
    assert Path(m.tokenizer_path).read_bytes() == Path(m.ctc_tokenizer_path).read_bytes() == TOK.read_bytes()
    assert (m.first_pass_prompt, m.ctc_weight) == (False, 0.0)

    doc = json.loads((rel / funasr_torch.SIDECAR_FILE).read_text())
    units = doc["meta"]["model"]["encoder"]["linear_units"]
    doc["meta"]["model"]["encoder"]["linear_units"] = units + 8
    (rel / funasr_torch.SIDECAR_FILE).write_text(json.dumps(doc))
    capsys.readouterr()
    assert convert.main(["from-torch", "--model-dir", str(rel), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "audio_encoder_conf.linear_units" in err and str(units) in err and str(units + 8) in err


def test_to_torch_needs_force_for_a_non_empty_directory(source, tmp_path, capsys):
    run, _ = source
    out = tmp_path / "release"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _export(run, out) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "notes.txt" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written
    assert _export(run, out, "--force") == 0
    assert (out / "model.pt").exists() and (out / "am.mvn").exists() and (out / "notes.txt").exists()
    assert _export(run, out) == 2  # an export is not empty either
    # --force clears what an earlier export wrote: a model without CMVN leaves no am.mvn behind
    m = load_model(run)
    bare = tmp_path / "bare"
    save_params(bare, m.params, m.cfg, tokenizer_path=str(TOK))
    assert _export(bare, out, "--force") == 0
    assert not (out / "am.mvn").exists() and (out / "notes.txt").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["frontend_conf"]["cmvn_file"] is None


def test_without_torch_the_converter_says_what_to_install(source, tmp_path, monkeypatch, capsys):
    run, _ = source
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    for argv in (["to-torch", "--checkpoint", str(run), "--out", str(tmp_path / "r")],
                 ["from-torch", "--model-dir", str(tmp_path / "r"), "--out", str(tmp_path / "b")]):
        assert convert.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and funasr_torch.TORCH_INSTALL in err and "PyTorch" in err
