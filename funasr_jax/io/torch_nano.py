"""FunASR's own PyTorch `FunASRNano` built for one of our configs (random weights), for benchmarks.

    m = build_torch_nano(cfg, trainable=("audio_encoder", "audio_adaptor", "llm:lora"), llm_dtype="fp32")

The model is what a FunASR user trains: `funasr.models.fun_asr_nano.model.FunASRNano` from the
`config.yaml` our converter writes (`funasr_torch.funasr_config_to_yaml`), the Qwen3 LLM from a
Hugging Face config (`hf_qwen3.qwen3_config_to_hf`) in a temporary folder, FunASR's LoRA
(`llm_conf.use_lora`) when `cfg.llm.lora.rank > 0`, dropout as in `cfg`. Weights are torch's own
initialisation (speed does not depend on values).

torch, transformers and funasr are optional: imported inside the functions; a missing one raises
`TorchUnavailableError` saying what to install.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import tempfile
from pathlib import Path

from funasr_jax.io.funasr_torch import QWEN_DIR, funasr_config_to_yaml
from funasr_jax.io.hf_qwen3 import qwen3_config_to_hf
from funasr_jax.models.config import FunASRConfig

TOP_PARTS = ("audio_encoder", "audio_adaptor", "llm", "ctc_decoder", "ctc")


class TorchUnavailableError(ImportError):
    """torch / transformers / funasr is not importable (says which and how to install it)."""


def require_torch_funasr():
    """Import torch, transformers and FunASR's FunASRNano; raise TorchUnavailableError naming the
    missing one. Returns (torch, FunASRNano class)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    missing = []
    for mod in ("torch", "transformers", "funasr.models.fun_asr_nano.model"):
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - funasr's import chain raises several kinds
            missing.append(f"{mod} ({type(e).__name__}: {e})")
            break
    if missing:
        raise TorchUnavailableError(
            f"the PyTorch comparison needs torch, transformers and funasr; cannot import {missing[0]}. "
            "Install them (`pip install -e .[test]`, CPU torch first) or put FunASR's model code on "
            "PYTHONPATH (`bash tools/fetch_gpu_wheels.sh` writes it to .torchref/)")
    import torch

    # registers SenseVoiceEncoderSmall, the Transformer adaptor and CharTokenizer in FunASR's tables
    importlib.import_module("funasr.models.sense_voice.model")
    importlib.import_module("funasr.models.llm_asr.adaptor")
    importlib.import_module("funasr.tokenizer.char_tokenizer")  # the CTC tokenizer FunASRNano builds
    from funasr.models.fun_asr_nano.model import FunASRNano

    return torch, FunASRNano


def torch_conf(cfg: FunASRConfig, qwen_dir: str, *, llm_dtype: str = "fp32") -> dict:
    """FunASRNano constructor kwargs for `cfg` (config.yaml layout, LLM config at `qwen_dir`)."""
    conf = copy.deepcopy(funasr_config_to_yaml(cfg, llm_dtype))
    conf.pop("model", None)
    e = cfg.encoder
    conf["audio_encoder_conf"].update(dropout_rate=e.dropout_rate, positional_dropout_rate=e.dropout_rate,
                                      attention_dropout_rate=e.attention_dropout_rate)
    conf["audio_adaptor_conf"].update(dropout_rate=cfg.adaptor.dropout_rate)
    conf["llm_conf"]["init_param_path"] = qwen_dir
    lora = cfg.llm.lora
    if lora.rank > 0:
        conf["llm_conf"].update(use_lora=True, lora_conf={
            "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
            "target_modules": list(lora.targets)})
    if cfg.ctc.enabled:
        conf.update(ctc_tokenizer="CharTokenizer", ctc_tokenizer_conf={})
    return conf


def set_trainable(model, trainable) -> dict:
    """requires_grad per our `stage.trainable` prefixes; returns {part: trainable parameter count}.

    Understood: "*", a top-level part (audio_encoder, audio_adaptor, llm, ctc_decoder, ctc) and
    "llm:lora" (only FunASR's lora_A / lora_B). Others raise ValueError naming the prefix.
    """
    for p in trainable:
        if p != "*" and p not in TOP_PARTS and p != "llm:lora":
            raise ValueError(f"stage.trainable: {p!r} has no PyTorch counterpart in the comparison "
                             f"(use '*', 'llm:lora' or one of {TOP_PARTS})")
    counts: dict[str, int] = {}
    for name, prm in model.named_parameters():
        part = name.split(".")[0]
        is_lora = part == "llm" and ("lora_A" in name or "lora_B" in name)
        on = "*" in trainable or part in trainable or (is_lora and "llm:lora" in trainable)
        prm.requires_grad_(on)
        if on:
            counts[part] = counts.get(part, 0) + prm.numel()
    return counts


def build_torch_nano(cfg: FunASRConfig, *, trainable=("*",), llm_dtype: str = "fp32", seed: int = 0,
                     device: str = "cpu"):
    """FunASR's FunASRNano for `cfg` on `device`, in train mode, `trainable` as in `set_trainable`.

    llm_dtype: FunASR's `llm_conf.llm_dtype` ("fp32" | "bf16"): the LLM's weights' dtype and its
    autocast inside `FunASRNano.forward`. Returns (model, {part: trainable params}).
    """
    torch, nano_cls = require_torch_funasr()
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as d:
        qdir = Path(d) / QWEN_DIR
        qdir.mkdir()
        (qdir / "config.json").write_text(json.dumps(qwen3_config_to_hf(cfg.llm)))
        model = nano_cls(**torch_conf(cfg, str(qdir), llm_dtype=llm_dtype))
    counts = set_trainable(model, trainable)
    return model.to(device).train(), counts
