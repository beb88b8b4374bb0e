"""The Best-RQ stage in the trainer: the quantiser stays frozen through training and resume, and
its encoder initialises an SFT stage with every encoder tensor matched."""

import jax
import numpy as np

from funasr_jax.io.checkpoint import load_model
from funasr_jax.io.names import flatten
from funasr_jax.models.bestrq import make_quantizer
from helpers.train import tiny_cfg


def test_bestrq_trains_keeps_its_quantiser_and_feeds_sft2(tmp_path):
    from train.loop import initial_params, train

    a = tiny_cfg("bestrq", tmp_path / "a", steps=4)
    first = train(a)
    b = tiny_cfg("bestrq", tmp_path / "b", steps=4)
    assert train(b, stop_after=2).get("interrupted")
    train(b)  # resumes from step 2
    pa, pb = load_model(a.run.out_dir).params, load_model(b.run.out_dir).params
    for (path, x), (_, y) in zip(flatten(pa).items(), flatten(pb).items()):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg="/".join(path))
    q = make_quantizer(a.model.bestrq, a.model.encoder.input_size)
    for name in ("projection", "codebooks"):  # frozen: the seed's draw after 4 steps, resumed or not
        np.testing.assert_array_equal(np.asarray(pa["bestrq_quantizer"][name]), q[name])
    start = load_model(a.run.out_dir)  # trained: the encoder moved away from a fresh init
    fresh, _ = initial_params(a, a.model, jax.random.PRNGKey(a.run.seed))
    assert not np.array_equal(np.asarray(fresh["bestrq_head"]["kernel"]), np.asarray(start.params["bestrq_head"]["kernel"]))
    import json
    from pathlib import Path
    rows = [json.loads(l) for l in (Path(a.run.out_dir) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 4 and all(np.isfinite(r["bestrq_loss"]) and 0 <= r["bestrq_acc"] <= 1 for r in train_rows)
    assert first["steps"] == 4

    sft = tiny_cfg("sft2", tmp_path / "sft", **{"run.init_from": a.run.out_dir})
    assert not sft.model.bestrq.enabled
    from train.loop import merged_model_config
    model_cfg = merged_model_config(sft, start.cfg)
    assert not model_cfg.bestrq.enabled  # the SFT model has no Best-RQ heads
    params, info = initial_params(sft, model_cfg, jax.random.PRNGKey(0), start)
    src, got = flatten(start.params["audio_encoder"]), flatten(params["audio_encoder"])
    assert set(src) == set(got)
    for path, v in src.items():
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(v), err_msg="/".join(path))
    assert "bestrq_head" not in params and info["tensors_loaded"] >= len(src)


def test_encoder_blocks_from_llm_layers_at_stage_start(tmp_path):
    """run.encoder_from_llm: blocks 1.. take layers 0.. of a run's LLM (shapes made to match);
    a mismatched encoder is refused naming the tensor."""
    import pytest

    from train.loop import initial_params, train

    src = tiny_cfg("ctc_warmup", tmp_path / "src", steps=1, **{"run.eval_at_end": False})
    train(src)
    llm = load_model(src.run.out_dir).params["llm"]
    cfg = tiny_cfg("bestrq", tmp_path / "rq", **{"model.encoder.linear_units": 384,
                                                 "run.encoder_from_llm": src.run.out_dir})
    params, info = initial_params(cfg, cfg.model, jax.random.PRNGKey(0))
    assert info["encoder_llm_layers"] == [(1, 0), (2, 1), (3, 2), (4, 3)] and info["encoder_tensors_from_llm"] > 0
    block2 = params["audio_encoder"]["encoders"]["1"]  # global block 2 <- LLM layer 1
    layer1 = llm["model"]["layers"]["1"]
    np.testing.assert_array_equal(np.asarray(block2["self_attn"]["linear_out"]["kernel"]),
                                  np.asarray(layer1["self_attn"]["o_proj"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(block2["feed_forward"]["w_2"]["kernel"]),
                                  np.asarray(layer1["mlp"]["down_proj"]["kernel"]))
    bad = tiny_cfg("bestrq", tmp_path / "bad", **{"run.encoder_from_llm": src.run.out_dir})  # FFN 256 != 384
    with pytest.raises(SystemExit, match="w_1/kernel"):
        initial_params(bad, bad.model, jax.random.PRNGKey(0))


def test_bestrq_config_errors_name_the_field():
    import pytest

    from funasr_jax.configtools import ConfigError
    from train.main import load_config

    with pytest.raises(ConfigError, match="run.encoder_llm_layers"):
        load_config("bestrq", "tiny", ["run.encoder_llm_layers=1-0"])
    with pytest.raises(ConfigError, match="model.bestrq.enabled"):
        load_config("sft4", "tiny", ["stage.bestrq_weight=1.0"])
    with pytest.raises(ConfigError, match="bestrq.mask_prob"):
        load_config("bestrq", "tiny", ["model.bestrq.mask_prob=0"])
    with pytest.raises(ConfigError, match="run.encoder_llm_gqa"):
        load_config("bestrq", "tiny", ["run.encoder_llm_gqa=copy"])
