"""PyTorch / Hugging Face <-> funasr-jax checkpoints (the command line; the work is in `funasr_jax.io`).

    python -m funasr_jax.convert from-torch --model-dir Fun-ASR-Nano-2512 --out ckpt/
    python -m funasr_jax.convert from-hf --qwen3-dir Qwen3-0.6B --out ckpt/ [--into ckpt0/ | --preset nano]
    python -m funasr_jax.convert to-torch --checkpoint ckpt/ --out release/ [--dtype bf16|f32]

from-torch passes `--allow-missing ctc` by default (the public release lacks the CTC tensors: they
are initialised randomly, with a warning); `--allow-missing none` makes that an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np

from funasr_jax.io.checkpoint import load_model, save_params
from funasr_jax.io.funasr_torch import QWEN_DIR, funasr_config_to_yaml, load_funasr_dir, torch_state_dict
from funasr_jax.io.hf_qwen3 import llm_params_from_hf, qwen3_config_from_hf, qwen3_config_to_hf
from funasr_jax.io.names import CheckpointError, CheckpointMismatchError
from funasr_jax.models.config import preset
from funasr_jax.models.funasr import component_counts, init_params
from funasr_jax.text.qwen3_tokenizer import load_qwen3_json
from funasr_jax.text.tokenizer import QWEN3_TOKENIZER


def cmd_from_torch(args):
    cfg, params, _ = load_funasr_dir(args.model_dir, allow_missing=_allow(args.allow_missing))
    qtok = Path(args.model_dir) / QWEN_DIR / "tokenizer.json"
    save_params(args.out, params, cfg, tokenizer_path=str(qtok) if qtok.exists() else None)
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
    import torch  # optional dependency
    import yaml

    m = load_model(args.checkpoint)
    out = Path(args.out)
    (out / QWEN_DIR).mkdir(parents=True, exist_ok=True)
    sd = torch_state_dict(m.params, m.cfg, dtype=args.dtype)
    torch.save(sd, out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(funasr_config_to_yaml(m.cfg, args.dtype if args.dtype == "bf16" else "fp32"),
                                                    sort_keys=False, allow_unicode=True))
    (out / QWEN_DIR / "config.json").write_text(json.dumps(qwen3_config_to_hf(m.cfg.llm), indent=2))
    if m.tokenizer_path and m.tokenizer_path.lower() == QWEN3_TOKENIZER:  # the bundled one, written out
        (out / QWEN_DIR / "tokenizer.json").write_text(load_qwen3_json(), encoding="utf-8")
    elif m.tokenizer_path and Path(m.tokenizer_path).name == "tokenizer.json" and Path(m.tokenizer_path).exists():
        shutil.copy(m.tokenizer_path, out / QWEN_DIR / "tokenizer.json")
    print(f"wrote {out/'model.pt'} ({len(sd)} tensors, {args.dtype}), {out/'config.yaml'}")


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
