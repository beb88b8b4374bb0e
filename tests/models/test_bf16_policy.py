"""The precision policy (`funasr_jax.models.config.PRECISION_POLICY`): nano and full compute in bf16
by default, tiny in f32; master weights, optimizer state and the step's outputs stay f32; norms,
softmax statistics, log-softmax, losses and CTC recursions run in f32 inside a bf16 step.

The step is read from its lowered StableHLO (no run): the ops that carry the f32 parts of the
policy (rsqrt of the norms, log of log-softmax / CTC log-add-exp, the softmax max / sum
reductions) are checked for their element type, and the matmuls for bf16 operands.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.models.batch import Batch
from funasr_jax.models.config import preset, tiny_config
from train.main import load_config
from train.setup import stage_parts


@pytest.mark.parametrize("name,dtype", [("tiny", "float32"), ("nano", "bfloat16"), ("full", "bfloat16")])
def test_preset_compute_dtype(name, dtype):
    assert preset(name).dtype == dtype
    assert load_config("sft4.py", name).model.dtype == dtype


def _batch(cfg, b=2, t=32, length=24, lc=5) -> Batch:
    rng = np.random.default_rng(0)
    labels = np.full((b, length), -100, np.int32)
    labels[:, 16:] = rng.integers(1, cfg.llm.vocab_size, (b, length - 16))
    return Batch(
        feats=jnp.asarray(rng.normal(size=(b, t, cfg.encoder.input_size)), jnp.float32),
        feat_lengths=jnp.asarray([t, t - 7], jnp.int32),
        input_ids=jnp.asarray(rng.integers(1, cfg.llm.vocab_size, (b, length)), jnp.int32),
        token_lengths=jnp.full((b,), length, jnp.int32), audio_start=jnp.full((b,), 2, jnp.int32),
        audio_tokens=jnp.full((b,), 4, jnp.int32), labels=jnp.asarray(labels), weight=jnp.ones((b,), jnp.float32),
        ctc_labels=jnp.asarray(rng.integers(0, cfg.ctc.vocab_size - 1, (b, lc)), jnp.int32),
        ctc_label_lengths=jnp.asarray([lc, lc - 2], jnp.int32))


def _element_type(line: str) -> str:
    """The element type of an op's result (after '->' for a function-type signature)."""
    sig = line.rsplit("->", 1)[-1] if "->" in line else line.rsplit(":", 1)[-1]
    m = re.search(r"x(bf16|f32|f16|i32|i1)>|tensor<(bf16|f32|f16|i32|i1)>", sig)
    return (m.group(1) or m.group(2)) if m else "?"


@pytest.fixture(scope="module")
def bf16_step_text():
    """StableHLO of a whole SFT train step (LLM CE + CTC) of the tiny model computing in bf16."""
    cfg = load_config("sft_full.py", "tiny", ["model.dtype=bfloat16"])
    parts = stage_parts(cfg)
    state = parts.abstract_state(0)
    batch = _batch(cfg.model)
    norm = {"tokens": jnp.ones(()), "utts": jnp.ones(())}
    lowered = jax.jit(parts.steps.train).lower(state, batch, norm)
    out_state, metrics = jax.eval_shape(parts.steps.train, state, batch, norm)
    return cfg, state, out_state, metrics, lowered.as_text()


def test_master_weights_optimizer_state_and_metrics_stay_f32(bf16_step_text):
    _, state, out_state, metrics, _ = bf16_step_text
    for tree in (state["params"], state["opt_state"], out_state["params"], out_state["opt_state"]):
        dtypes = {x.dtype for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}, dtypes
    for k in ("loss", "llm_sum", "ctc_sum", "grad_norm"):
        assert metrics[k].dtype == jnp.float32, k


def test_norms_logs_and_softmax_statistics_run_in_f32(bf16_step_text):
    cfg, _, _, _, text = bf16_step_text
    lines = text.splitlines()
    kinds = {"rsqrt": [], "log": [], "exponential": [], "dot_general": []}
    for line in lines:
        m = re.search(r"stablehlo\.(rsqrt|log|exponential|dot_general)\b", line)
        if m:
            kinds[m.group(1)].append(_element_type(line))
    # every norm (LayerNorm / RMSNorm: rsqrt of the variance), every log (log-softmax, CE, CTC) in f32
    assert kinds["rsqrt"] and set(kinds["rsqrt"]) == {"f32"}, kinds["rsqrt"]
    assert kinds["log"] and set(kinds["log"]) == {"f32"}, kinds["log"]
    # the only bf16 exponentials are the SiLU gates of the LLM's MLP ([.., intermediate_size])
    width = cfg.model.llm.intermediate_size
    bf16_exps = [line for line in lines if "stablehlo.exponential" in line and _element_type(line) == "bf16"]
    assert all(re.search(rf"x{width}xbf16>", line) for line in bf16_exps), bf16_exps[:3]
    assert kinds["exponential"].count("f32") > 0
    # and the matmuls do compute in bf16 (the policy is not satisfied by running everything in f32)
    assert kinds["dot_general"].count("bf16") > 0.6 * len(kinds["dot_general"]), kinds["dot_general"]


def test_f32_model_has_no_bf16():
    cfg = tiny_config()
    from funasr_jax.models.funasr import FunASRNano, init_params

    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    text = jax.jit(lambda p, b: FunASRNano(cfg).apply({"params": p}, b)["logits"]).lower(
        params, _batch(cfg)).as_text()
    assert "bf16" not in text
