"""`model.matmul_precision` reaches every matmul of the model (XLA dots; Pallas kernels are
traced inside the same scope) and is validated by name."""

from __future__ import annotations

import re

import jax
import pytest

from funasr_jax.models.config import tiny_config
from funasr_jax.models.funasr import FunASRNano, dummy_batch, init_params
from funasr_jax.models.qwen3 import Qwen3ForCausalLM


def _dot_precisions(text: str) -> list[str]:
    """The precision_config of every dot_general in a StableHLO module ("DEFAULT" when absent)."""
    out = []
    for line in text.splitlines():
        if "stablehlo.dot_general" in line:
            m = re.search(r"precision = \[(\w+), (\w+)\]", line)
            out.append(m.group(1) if m else "DEFAULT")
    return out


def test_every_model_matmul_uses_the_configured_precision():
    """The whole model (encoder, adaptor, LLM, CTC branch) at "highest" while the caller's
    own setting is "default": the field decides, for every dot."""
    cfg = tiny_config().replace(matmul_precision="highest")
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    batch = dummy_batch(cfg)
    with jax.default_matmul_precision("default"):
        text = jax.jit(lambda p, b: FunASRNano(cfg).apply({"params": p}, b)).lower(params, batch).as_text()
    found = _dot_precisions(text)
    assert len(found) > 20 and set(found) == {"HIGHEST"}, sorted(set(found))


@pytest.mark.parametrize("precision,expected", [("default", "DEFAULT"), ("high", "HIGH"), ("highest", "HIGHEST")])
def test_decoder_module_takes_the_precision_too(precision, expected):
    """The recognizer's standalone LLM (KV-cache decoding) is built with the model's field."""
    cfg = tiny_config()
    lm = Qwen3ForCausalLM(cfg.llm, matmul_precision=precision)
    x = jax.numpy.zeros((1, 4, cfg.llm.hidden_size))
    params = jax.eval_shape(lm.init, jax.random.key(0), x)
    with jax.default_matmul_precision("highest" if precision != "highest" else "default"):
        text = jax.jit(lambda p, x: lm.apply(p, x)).lower(params, x).as_text()
    assert set(_dot_precisions(text)) == {expected}


def test_unknown_precision_names_the_field():
    with pytest.raises(ValueError, match=r"model\.matmul_precision: unknown precision 'fast'"):
        tiny_config().replace(matmul_precision="fast").validate()
