"""FunASR's Fun-ASR-Nano release <-> ours: `config.yaml`, `model.pt` state dicts, whole directories.

A Fun-ASR model directory holds `config.yaml`, `model.pt` (a flat state dict or
`{"state_dict": ...}`, optional `module.` prefix, bf16 or f32 tensors) and `Qwen3-0.6B/config.json`.
Names convert by `funasr_jax.io.names` (rename + transpose); anything missing, unexpected or
mis-shaped is listed in one error. The release on Hugging Face lacks the CTC tensors:
`allow_missing=("ctc",)` (the default) initialises them randomly, with a warning.
torch is imported only inside the functions that need it (an optional dependency).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import jax
import numpy as np

from funasr_jax.io.hf_qwen3 import qwen3_config_from_hf
from funasr_jax.io.names import (
    CheckpointError,
    flatten,
    params_from_state_dict,
    state_dict_from_params,
    to_numpy,
    unflatten,
)
from funasr_jax.models.config import AdaptorConfig, CTCConfig, EncoderConfig, FunASRConfig, LoraConfig
from funasr_jax.models.funasr import abstract_params, init_params
from funasr_jax.models.lora import fold_lora

CTC_PREFIXES = ("ctc_decoder.", "ctc.")
QWEN_DIR = "Qwen3-0.6B"


def funasr_config_from_yaml(conf: dict, model_dir: Path, state_dict=None) -> FunASRConfig:
    """A Fun-ASR `config.yaml` (parsed) -> FunASRConfig; CTC vocab from the tensors if present."""
    def pick(d, keys, where):
        d = d or {}
        unknown_ok = {k: d[k] for k in keys if k in d}
        return unknown_ok

    enc = conf.get("audio_encoder_conf") or {}
    e = pick(enc, ["output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks",
                   "kernel_size"], "audio_encoder_conf")
    if "sanm_shfit" in enc:
        e["sanm_shift"] = enc["sanm_shfit"]
    encoder = EncoderConfig(input_size=conf.get("input_size", 560), **e)
    ad = conf.get("audio_adaptor_conf") or {}
    a = pick(ad, ["downsample_rate", "ffn_dim", "llm_dim", "n_layer", "attention_heads"], "audio_adaptor_conf")
    llm_conf = conf.get("llm_conf") or {}
    qdir = Path(llm_conf.get("init_param_path") or QWEN_DIR)
    if not qdir.is_absolute():
        qdir = model_dir / qdir
    qfile = qdir / "config.json"
    if not qfile.exists():
        raise CheckpointError(f"{model_dir}: the LLM config {qfile} is missing (llm_conf.init_param_path)")
    llm = qwen3_config_from_hf(json.loads(qfile.read_text()), str(qfile))
    if llm_conf.get("use_lora"):
        llm = dataclasses.replace(llm, lora=LoraConfig(rank=int(llm_conf.get("lora_rank", 16)),
                                             alpha=float(llm_conf.get("lora_alpha", 32)),
                                             dropout=float(llm_conf.get("lora_dropout", 0.05)),
                                             targets=tuple(llm_conf.get("lora_target_modules", ("q_proj", "v_proj")))))
    adaptor = AdaptorConfig(encoder_dim=encoder.output_size, **{**a, "llm_dim": llm.hidden_size})
    cd = conf.get("ctc_decoder_conf") or {}
    ctc_vocab = int(conf.get("ctc_vocab_size", 60515))
    if state_dict is not None and "ctc.ctc_lo.weight" in state_dict:
        ctc_vocab = int(state_dict["ctc.ctc_lo.weight"].shape[0])
    ctc = CTCConfig(
        enabled=conf.get("ctc_decoder") is not None or (state_dict is not None and "ctc.ctc_lo.weight" in state_dict),
        decoder=AdaptorConfig(encoder_dim=encoder.output_size,
                              **pick(cd, ["downsample_rate", "ffn_dim", "llm_dim", "n_layer", "attention_heads"], "ctc_decoder_conf")),
        vocab_size=ctc_vocab,
        blank_id=int((conf.get("ctc_conf") or {}).get("blank_id", -1)),
        detach_encoder=bool(conf.get("detach_ctc_decoder", True)),
    )
    return FunASRConfig(encoder=encoder, adaptor=adaptor, llm=llm, ctc=ctc)


def funasr_config_to_yaml(cfg: FunASRConfig, llm_dtype="bf16") -> dict:
    e, a, c = cfg.encoder, cfg.adaptor, cfg.ctc
    out = {
        "model": "FunASRNano",
        "model_conf": {"lsm_weight": 0.1, "length_normalized_loss": True},
        "input_size": e.input_size,
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {"output_size": e.output_size, "attention_heads": e.attention_heads,
                               "linear_units": e.linear_units, "num_blocks": e.num_blocks,
                               "tp_blocks": e.tp_blocks, "dropout_rate": 0.1,
                               "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                               "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder",
                               "normalize_before": True, "kernel_size": e.kernel_size,
                               "sanm_shfit": e.sanm_shift, "selfattention_layer_type": "sanm",
                               "freeze": True},
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {"downsample_rate": a.downsample_rate, "use_low_frame_rate": True,
                               "ffn_dim": a.ffn_dim, "llm_dim": a.llm_dim, "encoder_dim": a.encoder_dim,
                               "n_layer": a.n_layer, "attention_heads": a.attention_heads, "freeze": True},
        "llm": "Qwen3-0.6B",
        "llm_conf": {"hub": "hf", "freeze": True, "llm_dtype": llm_dtype, "init_param_path": QWEN_DIR,
                     "use_lora": False},
    }
    if c.enabled:
        d = c.decoder
        out.update({
            "ctc_decoder": "Transformer",
            "ctc_decoder_conf": {"downsample_rate": d.downsample_rate, "ffn_dim": d.ffn_dim,
                                 "llm_dim": d.llm_dim, "encoder_dim": d.encoder_dim, "n_layer": d.n_layer,
                                 "attention_heads": d.attention_heads, "freeze": False},
            "ctc_weight": 1.0, "detach_ctc_decoder": c.detach_encoder, "ctc_vocab_size": c.vocab_size,
        })
        # FunASRNano passes blank_id to CTC() itself (vocab - 1); putting it in ctc_conf too
        # makes FunASR fail with "multiple values for blank_id", so only a non-default is written.
        if c.blank != c.vocab_size - 1:
            out["ctc_conf"] = {"blank_id": c.blank}
    return out





def load_torch_state_dict(path) -> dict:
    """Read `model.pt`: flat dict or {"state_dict"|"model": ...}; strips a leading `module.`."""
    import torch  # optional dependency

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a bad pickle
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "shape"):
            continue
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def params_from_torch(state_dict, cfg: FunASRConfig, *, allow_missing=("ctc",), source="model.pt", rng_seed=0):
    """Flat torch state dict -> our params for `cfg` (tied lm_head accepted and dropped).

    allow_missing: "ctc" lets the CTC tensors be absent (randomly initialised, with a warning).
    """
    template = abstract_params(cfg)
    ignore = ("llm.lm_head.",) if cfg.llm.tie_word_embeddings else ()
    if cfg.llm.tie_word_embeddings and "llm.lm_head.weight" in state_dict and "llm.model.embed_tokens.weight" in state_dict:
        head = to_numpy(state_dict["llm.lm_head.weight"])
        emb = to_numpy(state_dict["llm.model.embed_tokens.weight"])
        if head.shape == emb.shape and not np.array_equal(head, emb):
            warnings.warn(f"{source}: llm.lm_head.weight differs from the embeddings but the config ties "
                          "them; the embeddings are used for both")
    allow = tuple(p for name in allow_missing if name == "ctc" for p in CTC_PREFIXES)
    params, missing = params_from_state_dict(state_dict, template, ignore=ignore, allow_missing=allow,
                                             source=source)
    if missing:
        warnings.warn(f"{source}: {len(missing)} CTC tensors are missing ({missing[0]}, ...); "
                      "they are randomly initialised, so CTC output and timestamps are meaningless "
                      "until the CTC head is trained (stage sft5)")
        fresh = flatten(jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(rng_seed))))
        have = flatten(params)
        for path, v in fresh.items():
            have.setdefault(path, v)
        params = unflatten(have)
    return params


def torch_state_dict(params, cfg: FunASRConfig, dtype="bf16") -> dict:
    """Our params -> a release-layout torch state dict (audio/LLM in `dtype`, CTC in f32)."""
    import torch  # optional dependency

    if cfg.llm.lora.rank > 0:
        params = dict(params)
        params["llm"] = fold_lora(params["llm"], cfg.llm.lora)
    flat = state_dict_from_params(params)
    if cfg.llm.tie_word_embeddings:
        flat["llm.lm_head.weight"] = flat["llm.model.embed_tokens.weight"]
    tdt = {"bf16": torch.bfloat16, "f32": torch.float32, "fp32": torch.float32}[dtype]
    out = {}
    for k, v in flat.items():
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(v, dtype=np.float32)))
        out[k] = t if k.startswith(CTC_PREFIXES) else t.to(tdt)
    return out



def load_funasr_dir(model_dir, *, allow_missing=("ctc",)):
    """Fun-ASR directory -> (cfg, params, state_dict)."""
    import yaml

    model_dir = Path(model_dir)
    cfile = model_dir / "config.yaml"
    if not cfile.exists():
        raise CheckpointError(f"{model_dir}: no config.yaml")
    try:
        conf = yaml.safe_load(cfile.read_text()) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfile}: invalid YAML ({e})") from None
    sd = load_torch_state_dict(model_dir / "model.pt")
    cfg = funasr_config_from_yaml(conf, model_dir, sd)
    params = params_from_torch(sd, cfg, allow_missing=allow_missing, source=str(model_dir / "model.pt"))
    return cfg, params, sd
