"""FunASR's Fun-ASR-Nano release <-> ours: `config.yaml`, `model.pt` state dicts, whole directories.

A Fun-ASR model directory holds `config.yaml`, `model.pt` (a flat state dict or
`{"state_dict": ...}`, optional `module.` prefix, bf16 or f32 tensors) and `Qwen3-0.6B/config.json`.
Names convert by `funasr_jax.io.names` (rename + transpose); anything missing, unexpected or
mis-shaped is listed in one error. The release on Hugging Face lacks the CTC tensors:
`allow_missing=("ctc",)` (the default) initialises them randomly, with a warning.
torch is imported only inside the functions that need it (an optional dependency; without it
they raise `CheckpointError` naming the install command, `TORCH_INSTALL`).

A directory we export (`write_release_files`, `convert to-torch`) also holds what FunASR reads
besides the weights — the LLM tokenizer (`Qwen3-0.6B/tokenizer.json`, or a sentencepiece model as
`bpe.model`), the CTC tokenizer, CMVN as `am.mvn` (FunASR's own file names, which its loader
finds in a model directory), `tokenizer` / `frontend_conf` / `dataset_conf` in `config.yaml` —
and `SIDECAR_FILE`, our checkpoint meta (`funasr_jax.json`: the full model config, the
first-pass prompt setting, decoding defaults such as the CTC weight and the longest segment, and
any other key) with file names relative to the directory, so `convert from-torch` restores the
model exactly (`read_sidecar`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import jax
import numpy as np

from funasr_jax import configtools
from funasr_jax.audio.frontend import FrontendConfig
from funasr_jax.io.hf_qwen3 import qwen3_config_from_hf, qwen3_config_to_hf
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
from funasr_jax.models.stack import LayoutError, to_layout
from funasr_jax.text.qwen3_tokenizer import load_qwen3_json
from funasr_jax.text.tokenizer import QWEN3_TOKENIZER

CTC_PREFIXES = ("ctc_decoder.", "ctc.")
QWEN_DIR = "Qwen3-0.6B"
TORCH_INSTALL = "pip install torch==2.13.0"  # the CPU build the README installs
SIDECAR_FILE = "funasr_jax_sidecar.json"  # our settings FunASR's config.yaml has no place for
SIDECAR_FORMAT = "funasr-jax-sidecar"
CMVN_FILE = "am.mvn"  # FunASR's loader sets frontend_conf.cmvn_file to this file of a model directory
BPE_FILE = "bpe.model"  # ... and tokenizer_conf.bpemodel to this one
CTC_BPE_FILE = "ctc_bpe.model"  # a CTC sentencepiece model other than the LLM's
# What an export writes (and `--force` clears first, so no stale file of an earlier export stays).
RELEASE_FILES = ("model.pt", "config.yaml", SIDECAR_FILE, CMVN_FILE, BPE_FILE, CTC_BPE_FILE, QWEN_DIR)


def require_torch(what: str):
    """`import torch`, or CheckpointError (one line: what needs it and the install command)."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{what} needs PyTorch, which is not installed: {TORCH_INSTALL}") from None
    return torch


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
    torch = require_torch(f"reading {path}")

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
    torch = require_torch("writing a PyTorch state dict")

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


# --------------------------------------------------------------------------- what FunASR reads besides the weights


def frontend_from_yaml(conf: dict, model_dir) -> FrontendConfig:
    """`frontend_conf` of a Fun-ASR `config.yaml` (parsed) -> FrontendConfig. CMVN: its
    `cmvn_file` (relative to `model_dir`), else `am.mvn` in `model_dir` when present (FunASR's
    loader does the same), else none (the Fun-ASR-Nano release)."""
    model_dir = Path(model_dir)
    fc = conf.get("frontend_conf") or {}
    cmvn = fc.get("cmvn_file")
    if cmvn:
        path = Path(cmvn) if Path(cmvn).is_absolute() else model_dir / cmvn
        if not path.is_file():
            path = model_dir / CMVN_FILE
            if not path.is_file():
                raise CheckpointError(f"{model_dir}/config.yaml: frontend_conf.cmvn_file {cmvn!r} does not exist")
        cmvn = str(path)
    elif (model_dir / CMVN_FILE).is_file():
        cmvn = str(model_dir / CMVN_FILE)
    names = {"fs": "sample_rate", "n_mels": "n_mels", "frame_length": "frame_length_ms",
             "frame_shift": "frame_shift_ms", "lfr_m": "lfr_m", "lfr_n": "lfr_n"}
    kw = {ours: fc[theirs] for theirs, ours in names.items() if fc.get(theirs) is not None}
    for ms in ("frame_length_ms", "frame_shift_ms"):
        if isinstance(kw.get(ms), int):
            kw[ms] = float(kw[ms])
    try:
        return FrontendConfig(**kw, cmvn_file=cmvn or None)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{model_dir}/config.yaml: bad frontend_conf ({e})") from None


def release_config_yaml(cfg: FunASRConfig, llm_dtype: str, frontend: FrontendConfig, *,
                        tokenizer: str | None = None, ctc_tokenizer: str | None = None) -> dict:
    """`config.yaml` of an exported directory: the model (`funasr_config_to_yaml`), our front end
    (CMVN as `am.mvn`) and FunASR's tokenizer entries for the files `write_release_files` put there.
    tokenizer: the LLM tokenizer's file in the directory (`BPE_FILE`: sentencepiece, or
    `Qwen3-0.6B/tokenizer.json`); ctc_tokenizer: the CTC sentencepiece model's file there."""
    conf = funasr_config_to_yaml(cfg, llm_dtype)

    def num(x):
        return int(x) if float(x).is_integer() else float(x)

    conf["frontend_conf"].update(fs=frontend.sample_rate, n_mels=frontend.n_mels,
                                 frame_length=num(frontend.frame_length_ms), frame_shift=num(frontend.frame_shift_ms),
                                 lfr_m=frontend.lfr_m, lfr_n=frontend.lfr_n,
                                 cmvn_file=CMVN_FILE if frontend.cmvn_file else None)
    if tokenizer == BPE_FILE:
        conf["tokenizer"], conf["tokenizer_conf"] = "SentencepiecesTokenizer", {"bpemodel": BPE_FILE}
    elif tokenizer:
        conf["tokenizer"], conf["tokenizer_conf"] = "HuggingfaceTokenizer", {"init_param_path": QWEN_DIR}
    if ctc_tokenizer and ctc_tokenizer.endswith(".model"):
        # FunASRNano reads its CTC tokenizer from dataset_conf when no top-level one is given
        conf["dataset_conf"] = {"ctc_tokenizer": "SentencepiecesTokenizer",
                                "ctc_tokenizer_conf": {"bpemodel": ctc_tokenizer}}
    return conf


def check_release_dir(out, *, force: bool = False) -> list[str]:
    """The names `out` holds; CheckpointError when it is not empty and not `force` (an export
    never overwrites a directory silently), or is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise CheckpointError(f"{out}: not empty (holds {shown}); pass --force to overwrite, or choose an empty "
                              "directory")
    return held


def prepare_release_dir(out, *, force: bool = False) -> Path:
    """Create `out` for an export (`check_release_dir` first). With `force` every file an export
    writes (`RELEASE_FILES`) is removed first, so nothing of an earlier export (a CMVN file the new
    model lacks, ...) stays behind."""
    out = Path(out)
    held = check_release_dir(out, force=force)
    for name in RELEASE_FILES if held else ():
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    (out / QWEN_DIR).mkdir(parents=True, exist_ok=True)
    return out


def write_release_files(out, *, tokenizer_path=None, ctc_tokenizer_path=None, cmvn_file=None) -> dict:
    """Copy the side files of a model into an export directory under FunASR's names; returns
    their names relative to `out` ({"tokenizer", "ctc_tokenizer", "cmvn_file"}, None where absent;
    the bundled Qwen3 tokenizer keeps its name `qwen3` and is also written out as
    `Qwen3-0.6B/tokenizer.json`)."""
    out = Path(out)
    names = {"tokenizer": None, "ctc_tokenizer": None, "cmvn_file": None}
    tok_bytes = None
    if tokenizer_path:
        t = str(tokenizer_path)
        if t.lower() == QWEN3_TOKENIZER:
            (out / QWEN_DIR / "tokenizer.json").write_text(load_qwen3_json(), encoding="utf-8")
            names["tokenizer"] = QWEN3_TOKENIZER
        else:
            src = Path(t)
            if src.is_dir():
                src = src / "tokenizer.json"
            if not src.is_file():
                raise CheckpointError(f"{src}: the model's tokenizer file is missing")
            dst = BPE_FILE if src.name.endswith(".model") else f"{QWEN_DIR}/tokenizer.json"
            shutil.copyfile(src, out / dst)
            names["tokenizer"], tok_bytes = dst, src.read_bytes()
    if ctc_tokenizer_path:
        src = Path(ctc_tokenizer_path)
        if not src.is_file():
            raise CheckpointError(f"{src}: the model's CTC tokenizer file is missing")
        if tok_bytes is not None and names["tokenizer"] == BPE_FILE and src.read_bytes() == tok_bytes:
            names["ctc_tokenizer"] = BPE_FILE  # one sentencepiece model for both (the tiny preset)
        else:
            dst = CTC_BPE_FILE if src.name.endswith(".model") else src.name
            if (out / dst).exists():
                raise CheckpointError(f"{out / dst}: the CTC tokenizer's name collides with another file of the export")
            shutil.copyfile(src, out / dst)
            names["ctc_tokenizer"] = dst
    if cmvn_file:
        src = Path(cmvn_file)
        if not src.is_file():
            raise CheckpointError(f"{src}: the model's CMVN file is missing")
        shutil.copyfile(src, out / CMVN_FILE)
        names["cmvn_file"] = CMVN_FILE
    return names


def write_sidecar(out, meta: dict) -> None:
    """Write `SIDECAR_FILE`: our checkpoint meta (`funasr_jax.json` layout), file names relative to `out`."""
    doc = {"format": SIDECAR_FORMAT, "version": 1,
           "note": "funasr-jax settings FunASR's config.yaml has no place for; "
                   "`python -m funasr_jax.convert from-torch` restores them",
           "meta": meta}
    (Path(out) / SIDECAR_FILE).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")


def read_sidecar(model_dir) -> dict | None:
    """The checkpoint meta an export left in `model_dir` (None when it has no `SIDECAR_FILE`),
    its file names resolved against `model_dir` (each must exist; the bundled `qwen3` stays a name)."""
    model_dir = Path(model_dir)
    f = model_dir / SIDECAR_FILE
    if not f.exists():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"{f}: not a funasr-jax sidecar (format {SIDECAR_FORMAT!r} with a 'meta' object)")
    meta = dict(doc["meta"])

    def resolve(name, what):
        if name is None or (isinstance(name, str) and name.lower() == QWEN3_TOKENIZER):
            return name
        p = model_dir / str(name)
        if not p.is_file():
            raise CheckpointError(f"{f}: its {what} {name!r} is missing from {model_dir}")
        return str(p)

    meta["tokenizer"] = resolve(meta.get("tokenizer"), "tokenizer")
    meta["ctc_tokenizer"] = resolve(meta.get("ctc_tokenizer"), "CTC tokenizer")
    fe = dict(meta.get("frontend") or {})
    fe["cmvn_file"] = resolve(fe.get("cmvn_file"), "CMVN file")
    meta["frontend"] = fe
    return meta


def release_model(model_dir, yaml_cfg: FunASRConfig, params) -> tuple[FunASRConfig, dict, dict]:
    """A Fun-ASR directory's model -> (config, params in that config's layout, checkpoint meta).
    With our sidecar (an export of ours): its full model config (checked against config.yaml) and
    every setting it records. Without: config.yaml's model and what FunASR's own file names say
    (`bpe.model` or `Qwen3-0.6B/tokenizer.json`, the CTC tokenizer of `dataset_conf`, CMVN)."""
    import yaml

    model_dir = Path(model_dir)
    side = read_sidecar(model_dir)
    if side is None:
        conf = yaml.safe_load((model_dir / "config.yaml").read_text()) or {}
        qtok, bpe = model_dir / QWEN_DIR / "tokenizer.json", model_dir / BPE_FILE
        tok = str(bpe) if bpe.is_file() else str(qtok) if qtok.is_file() else None
        ctc_conf = ((conf.get("dataset_conf") or {}).get("ctc_tokenizer_conf") or {}).get("bpemodel")
        ctc_tok = str(model_dir / ctc_conf) if ctc_conf and (model_dir / ctc_conf).is_file() else None
        meta = {"tokenizer": tok, "ctc_tokenizer": ctc_tok,
                "frontend": configtools.to_dict(frontend_from_yaml(conf, model_dir))}
        return yaml_cfg, params, meta
    cfg = sidecar_model_config(side, yaml_cfg, model_dir)
    try:
        params = to_layout(params, abstract_params(cfg))
    except LayoutError as e:
        raise CheckpointError(f"{model_dir}: {e}") from None
    return cfg, params, side


def sidecar_model_config(meta: dict, yaml_cfg: FunASRConfig, where) -> FunASRConfig:
    """The full model config a sidecar records, checked against the one `config.yaml` describes:
    every architecture field FunASR reads must agree, else CheckpointError listing them (the
    sidecar belongs to another model)."""
    try:
        cfg = configtools.from_dict(FunASRConfig, meta.get("model"), "model")
    except ValueError as e:
        raise CheckpointError(f"{where}: bad model config in {SIDECAR_FILE}: {e}") from None
    diffs = _diff(funasr_config_to_yaml(yaml_cfg), funasr_config_to_yaml(cfg), "")
    diffs += _diff(qwen3_config_to_hf(yaml_cfg.llm), qwen3_config_to_hf(cfg.llm), f"{QWEN_DIR}/config.json:")
    if diffs:
        shown = "; ".join(f"{k}: {a!r} in config.yaml, {b!r} in the sidecar" for k, a, b in diffs[:4])
        raise CheckpointError(f"{where}: config.yaml and {SIDECAR_FILE} describe different models ({shown}); "
                              f"remove {SIDECAR_FILE} to convert from config.yaml alone")
    return cfg


def _diff(a, b, prefix: str) -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in dict.fromkeys([*a, *b]):
            out += _diff(a.get(k), b.get(k), f"{prefix}{'.' if prefix and not prefix.endswith(':') else ''}{k}")
        return out
    return [] if a == b else [(prefix, a, b)]
