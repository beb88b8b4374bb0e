"""PyTorch / Hugging Face <-> funasr-jax checkpoints (the command line; the work is in `funasr_jax.io`).

    python -m funasr_jax.convert from-torch --model-dir Fun-ASR-Nano-2512 --out ckpt/
    python -m funasr_jax.convert from-hf --qwen3-dir Qwen3-0.6B --out ckpt/ [--into ckpt0/ | --preset nano]
    python -m funasr_jax.convert to-torch --checkpoint ckpt/ --out release/ [--dtype bf16|f32] [--force]

to-torch writes everything the model needs, not only `model.pt`: `config.yaml` (with FunASR's
tokenizer and front-end entries), the tokenizers, CMVN (`am.mvn`) and our own settings in
`funasr_jax_sidecar.json` (`funasr_jax.io.funasr_torch`: full model config, first-pass prompt,
CTC weight, longest segment, ...); it refuses a non-empty `--out` unless `--force`. from-torch of
such a directory restores all of it, so the model decodes exactly as before the round trip; of a
plain Fun-ASR directory it reads what `config.yaml` says. from-torch passes `--allow-missing ctc`
by default (the public release lacks the CTC tensors: they are initialised randomly, with a
warning); `--allow-missing none` makes that an error. Both need PyTorch (`pip install torch==2.13.0`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from funasr_jax import configtools
from funasr_jax.infer.recognizer import recorded_max_segment_s
from funasr_jax.io.checkpoint import META_FILE, load_model, read_meta, save_params, settings_from_meta, write_meta
from funasr_jax.io.funasr_torch import (
    BPE_FILE,
    QWEN_DIR,
    SIDECAR_FILE,
    check_release_dir,
    load_funasr_dir,
    prepare_release_dir,
    release_config_yaml,
    release_model,
    require_torch,
    torch_state_dict,
    write_release_files,
    write_sidecar,
)
from funasr_jax.io.hf_qwen3 import llm_params_from_hf, qwen3_config_from_hf, qwen3_config_to_hf
from funasr_jax.io.names import CheckpointError, CheckpointMismatchError
from funasr_jax.models.config import preset
from funasr_jax.models.funasr import component_counts, init_params

# keys of our checkpoint meta that `save_params` writes itself; every other key of a sidecar's meta
# (decoding defaults beyond the CTC weight, anything added later) is carried over as it is
_SAVED_KEYS = ("format", "version", "model", "tokenizer", "ctc_tokenizer", "frontend", "prompt")


def cmd_from_torch(args):
    require_torch("convert from-torch")
    model_dir = Path(args.model_dir)
    cfg, params, _ = load_funasr_dir(model_dir, allow_missing=_allow(args.allow_missing))
    # an export of ours: the sidecar's full model config (checked against config.yaml) and settings;
    # a plain Fun-ASR directory: what config.yaml and FunASR's file names say
    cfg, params, meta = release_model(model_dir, cfg, params)
    kw = settings_from_meta(meta, model_dir, model_dir / SIDECAR_FILE)
    save_params(args.out, params, cfg, **kw)
    extra = {k: v for k, v in meta.items() if k not in _SAVED_KEYS}
    if extra:
        write_meta(Path(args.out).absolute(), cfg, extra=extra, **kw)
    _print_summary(args.out, params)


def cmd_from_hf(args):
    qdir = Path(args.qwen3_dir)
    cfile = qdir / "config.json"
    if not cfile.exists():
        raise CheckpointError(f"{qdir}: no config.json")
    llm_cfg = qwen3_config_from_hf(json.loads(cfile.read_text()), str(cfile))
    if args.into:
        base = load_model(args.into)
        cfg, params = base.cfg, dict(base.params)
        if (cfg.llm.hidden_size, cfg.llm.num_hidden_layers) != (llm_cfg.hidden_size, llm_cfg.num_hidden_layers):
            raise CheckpointError(f"{args.into}: its LLM ({cfg.llm.hidden_size}x{cfg.llm.num_hidden_layers}) "
                                  f"differs from {qdir} ({llm_cfg.hidden_size}x{llm_cfg.num_hidden_layers})")
        cfg = cfg.replace(llm=dataclasses.replace(llm_cfg, lora=cfg.llm.lora))
    else:
        base_cfg = preset(args.preset)
        cfg = base_cfg.replace(llm=llm_cfg, adaptor=dataclasses.replace(base_cfg.adaptor, llm_dim=llm_cfg.hidden_size))
        params = dict(jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(args.seed))))
    params["llm"] = llm_params_from_hf(qdir, cfg.llm, scan_layers=cfg.scan_layers)
    tok = qdir / "tokenizer.json"
    save_params(args.out, params, cfg, tokenizer_path=str(tok) if tok.exists() else None)
    _print_summary(args.out, params)


def cmd_to_torch(args):
    torch = require_torch("convert to-torch")
    import yaml

    check_release_dir(args.out, force=args.force)  # before the (long) load
    m = load_model(args.checkpoint)
    ckpt = Path(args.checkpoint)
    meta = read_meta(ckpt) if (ckpt / META_FILE).is_file() else {}
    out = prepare_release_dir(args.out, force=args.force)
    sd = torch_state_dict(m.params, m.cfg, dtype=args.dtype)  # LoRA folded into the base weights
    cfg = m.cfg
    if cfg.llm.lora.rank > 0:
        cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, lora=dataclasses.replace(cfg.llm.lora, rank=0)))
    names = write_release_files(out, tokenizer_path=m.tokenizer_path, ctc_tokenizer_path=m.ctc_tokenizer_path,
                                cmvn_file=m.frontend.cmvn_file)
    torch.save(sd, out / "model.pt")
    tok_file = None if names["tokenizer"] is None else BPE_FILE if names["tokenizer"] == BPE_FILE else \
        f"{QWEN_DIR}/tokenizer.json"
    conf = release_config_yaml(cfg, "bf16" if args.dtype == "bf16" else "fp32", m.frontend, tokenizer=tok_file,
                               ctc_tokenizer=names["ctc_tokenizer"])
    (out / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False, allow_unicode=True))
    (out / QWEN_DIR / "config.json").write_text(json.dumps(qwen3_config_to_hf(cfg.llm), indent=2))
    side = dict(meta)  # every key of our meta, file names rewritten to the export's
    side.update({"format": "funasr-jax", "version": 1, "model": configtools.to_dict(cfg),
                 "tokenizer": names["tokenizer"], "ctc_tokenizer": names["ctc_tokenizer"],
                 "frontend": configtools.to_dict(dataclasses.replace(m.frontend, cmvn_file=names["cmvn_file"])),
                 "prompt": {**(meta.get("prompt") or {}), "first_pass": bool(m.first_pass_prompt)}})
    decoding = {**(meta.get("decoding") or {}), "ctc_weight": float(m.ctc_weight)}
    longest = recorded_max_segment_s(ckpt, m.frontend)  # a training run's longest bucket
    if longest is not None:
        decoding["max_segment_s"] = longest
    side["decoding"] = decoding
    write_sidecar(out, side)
    files = ", ".join(dict.fromkeys(n for n in ("config.yaml", SIDECAR_FILE, tok_file, names["ctc_tokenizer"],
                                                names["cmvn_file"]) if n))
    print(f"wrote {out/'model.pt'} ({len(sd)} tensors, {args.dtype}) and {files} in {out}")


def _allow(text: str):
    return () if text in ("none", "") else tuple(t.strip() for t in text.split(","))


def _print_summary(out, params):
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
    c.add_argument("--force", action="store_true", help="overwrite a non-empty --out (an earlier export's files are removed)")
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
