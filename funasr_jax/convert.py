"""PyTorch / Hugging Face <-> funasr-jax checkpoints.

    python -m funasr_jax.convert from-torch --model-dir Fun-ASR-Nano-2512 --out ckpt/
    python -m funasr_jax.convert from-hf --qwen3-dir Qwen3-0.6B --out ckpt/ [--into ckpt0/ | --preset nano]
    python -m funasr_jax.convert to-torch --checkpoint ckpt/ --out release/ [--dtype bf16|f32]

A Fun-ASR model directory holds `config.yaml`, `model.pt` (a flat state dict or
`{"state_dict": ...}`, optional `module.` prefix, bf16 or f32 tensors) and `Qwen3-0.6B/config.json`.
Names convert by `checkpoint_names` (rename + transpose); anything missing, unexpected or
mis-shaped is listed in one error. The release on Hugging Face lacks the CTC tensors: pass
`--allow-missing ctc` (the default for from-torch) and they are initialised randomly, with a
warning; `--allow-missing none` makes that an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

from funasr_jax.checkpoint import CheckpointError, load_model, save_params
from funasr_jax.checkpoint_names import (
    CheckpointMismatchError,
    flatten,
    params_from_state_dict,
    state_dict_from_params,
    unflatten,
)
from funasr_jax.models.config import (
    AdaptorConfig,
    CTCConfig,
    EncoderConfig,
    FunASRConfig,
    LoraConfig,
    Qwen3Config,
    preset,
)

CTC_PREFIXES = ("ctc_decoder.", "ctc.")
QWEN_DIR = "Qwen3-0.6B"


# ----------------------------------------------------------------------------- configs


def qwen3_config_from_hf(cfg: dict, source="config.json") -> Qwen3Config:
    """Hugging Face Qwen3 `config.json` dict -> Qwen3Config."""
    try:
        rope = cfg.get("rope_theta")
        if rope is None:
            rope = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        heads = cfg["num_attention_heads"]
        return Qwen3Config(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=cfg.get("num_key_value_heads", heads),
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, rope_theta=float(rope),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=cfg.get("max_position_embeddings", 40960),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: missing Qwen3 config field {e}") from None


def qwen3_config_to_hf(c: Qwen3Config) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim,
        "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tie_word_embeddings, "attention_bias": False,
        "max_position_embeddings": c.max_position_embeddings, "torch_dtype": "bfloat16", "use_cache": True,
        # Qwen3's special ids, only where the vocabulary has them (tiny test vocabularies do not)
        **({"bos_token_id": 151643, "eos_token_id": 151645} if c.vocab_size > 151645 else {}),
    }


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
        llm = _replace(llm, lora=LoraConfig(rank=int(llm_conf.get("lora_rank", 16)),
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


def _replace(dc, **kw):
    import dataclasses

    return dataclasses.replace(dc, **kw)


# ----------------------------------------------------------------------------- state dicts


def load_torch_state_dict(path) -> dict:
    """Read `model.pt`: flat dict or {"state_dict"|"model": ...}; strips a leading `module.`."""
    import torch

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
    from funasr_jax.models.funasr import abstract_params, init_params

    template = abstract_params(cfg)
    ignore = ("llm.lm_head.",) if cfg.llm.tie_word_embeddings else ()
    if cfg.llm.tie_word_embeddings and "llm.lm_head.weight" in state_dict and "llm.model.embed_tokens.weight" in state_dict:
        head = _np(state_dict["llm.lm_head.weight"])
        emb = _np(state_dict["llm.model.embed_tokens.weight"])
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
    import torch

    from funasr_jax.models.lora import fold_lora

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


def _np(v) -> np.ndarray:
    from funasr_jax.checkpoint_names import _to_numpy

    return _to_numpy(v)


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


def read_safetensors_dir(qwen_dir) -> dict:
    """All `*.safetensors` in a Hugging Face model folder -> {key: np.float32 array}."""
    from safetensors import safe_open

    files = sorted(Path(qwen_dir).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{qwen_dir}: no *.safetensors files")
    out = {}
    for f in files:
        with safe_open(str(f), framework="flax") as fh:
            for k in fh.keys():
                out[k] = np.asarray(fh.get_tensor(k).astype("float32"))
    return out


def llm_params_from_hf(qwen_dir, llm_cfg: Qwen3Config):
    """HF Qwen3 safetensors -> our `llm` params (tied lm_head accepted)."""
    from funasr_jax.models.qwen3 import Qwen3ForCausalLM
    import jax.numpy as jnp

    sd = read_safetensors_dir(qwen_dir)
    module = Qwen3ForCausalLM(llm_cfg)
    template = jax.eval_shape(
        lambda r: module.init(r, jnp.zeros((1, 4, llm_cfg.hidden_size)), method=module.__call__),
        jax.random.PRNGKey(0))["params"]
    # embed_tokens is only created when `embed` runs; take its shape from the config.
    template = dict(template)
    template.setdefault("model", {})
    ignore = ("lm_head.",) if llm_cfg.tie_word_embeddings else ()
    full = {"model": {**template["model"], "embed_tokens": {"embedding": jax.ShapeDtypeStruct(
        (llm_cfg.vocab_size, llm_cfg.hidden_size), jnp.float32)}}}
    if "lm_head" in template:
        full["lm_head"] = template["lm_head"]
    params, _ = params_from_state_dict(sd, full, ignore=ignore, source=str(qwen_dir))
    return params


# ----------------------------------------------------------------------------- CLI


def cmd_from_torch(args):
    cfg, params, _ = load_funasr_dir(args.model_dir, allow_missing=_allow(args.allow_missing))
    qtok = Path(args.model_dir) / QWEN_DIR / "tokenizer.json"
    save_params(args.out, params, cfg, tokenizer_path=str(qtok) if qtok.exists() else None)
    _print_summary(args.out, params)


def cmd_from_hf(args):
    import json as _json

    from funasr_jax.models.funasr import init_params

    qdir = Path(args.qwen3_dir)
    cfile = qdir / "config.json"
    if not cfile.exists():
        raise CheckpointError(f"{qdir}: no config.json")
    llm_cfg = qwen3_config_from_hf(_json.loads(cfile.read_text()), str(cfile))
    if args.into:
        base = load_model(args.into)
        cfg, params = base.cfg, dict(base.params)
        if (cfg.llm.hidden_size, cfg.llm.num_hidden_layers) != (llm_cfg.hidden_size, llm_cfg.num_hidden_layers):
            raise CheckpointError(f"{args.into}: its LLM ({cfg.llm.hidden_size}x{cfg.llm.num_hidden_layers}) "
                                  f"differs from {qdir} ({llm_cfg.hidden_size}x{llm_cfg.num_hidden_layers})")
        cfg = cfg.replace(llm=_replace(llm_cfg, lora=cfg.llm.lora))
    else:
        base_cfg = preset(args.preset)
        cfg = base_cfg.replace(llm=llm_cfg, adaptor=_replace(base_cfg.adaptor, llm_dim=llm_cfg.hidden_size))
        params = dict(jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(args.seed))))
    params["llm"] = llm_params_from_hf(qdir, cfg.llm)
    tok = qdir / "tokenizer.json"
    save_params(args.out, params, cfg, tokenizer_path=str(tok) if tok.exists() else None)
    _print_summary(args.out, params)


def cmd_to_torch(args):
    import torch
    import yaml

    m = load_model(args.checkpoint)
    out = Path(args.out)
    (out / QWEN_DIR).mkdir(parents=True, exist_ok=True)
    sd = torch_state_dict(m.params, m.cfg, dtype=args.dtype)
    torch.save(sd, out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(funasr_config_to_yaml(m.cfg, args.dtype if args.dtype == "bf16" else "fp32"),
                                                    sort_keys=False, allow_unicode=True))
    (out / QWEN_DIR / "config.json").write_text(json.dumps(qwen3_config_to_hf(m.cfg.llm), indent=2))
    if m.tokenizer_path and Path(m.tokenizer_path).name == "tokenizer.json" and Path(m.tokenizer_path).exists():
        import shutil

        shutil.copy(m.tokenizer_path, out / QWEN_DIR / "tokenizer.json")
    print(f"wrote {out/'model.pt'} ({len(sd)} tensors, {args.dtype}), {out/'config.yaml'}")


def _allow(text: str):
    return () if text in ("none", "") else tuple(t.strip() for t in text.split(","))


def _print_summary(out, params):
    from funasr_jax.models.funasr import component_counts

    counts = component_counts(params)
    print(f"wrote {out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m funasr_jax.convert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("from-torch", help="Fun-ASR model directory (config.yaml + model.pt) -> our checkpoint")
    a.add_argument("--model-dir", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--allow-missing", default="ctc", help="'ctc' (default) or 'none'")
    a.set_defaults(fn=cmd_from_torch)
    b = sub.add_parser("from-hf", help="Hugging Face Qwen3 folder -> the LLM part of a checkpoint")
    b.add_argument("--qwen3-dir", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--into", help="existing funasr-jax checkpoint whose LLM is replaced")
    b.add_argument("--preset", default="nano", help="audio side for a new model (random init)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(fn=cmd_from_hf)
    c = sub.add_parser("to-torch", help="our checkpoint -> model.pt + config.yaml (FunASR layout)")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    c.set_defaults(fn=cmd_to_torch)
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (CheckpointError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
