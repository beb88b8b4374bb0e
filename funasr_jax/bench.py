"""Transcription speed: our encoder + greedy decode against FunASR's PyTorch FunASRNano, one process.

    python -m funasr_jax.bench --preset tiny --batch 1,16 --seconds 10 --new-tokens 40 --out infer.json

Per batch size B: B utterances of `--seconds` of synthetic audio (random LFR features [B, T, 560]),
a ChatML-shaped prompt (18 prefix ids, N = ceil(T/8) audio rows, 5 suffix ids: the release's
prompt shape), then exactly `--new-tokens` greedy tokens (EOS is never
matched, so both sides do the same work):
  ours:  `infer.recognizer.prompt_embeds` (encoder + adaptor + splice, jitted) and
         `decode.generate.greedy_generate` (jitted KV-cache loop);
  torch: FunASR's `audio_encoder` + `audio_adaptor`, the same splice, then Hugging Face
         `generate(do_sample=False, min_new_tokens = max_new_tokens = N, eos_token_id=None)`.
Both use the same random weights (torch's initialisation converted into ours by
`io.funasr_torch.params_from_torch`); `--no-torch` times ours alone with our own random init.
Reports per B: steady-state seconds per batch (median of `--repeats` after `--warmup` calls),
RTF = compute seconds / audio seconds, generated tokens/s, our compile time (first call minus a
steady one) separately, and the ratio ours/torch of tokens/s (> 1: ours is faster).
`--dtype bfloat16` (the nano preset's default): our compute dtype bf16; torch's LLM weights bf16
(FunASR's bf16 inference). `--dtype float32`: both sides f32.
`--smoke`: tiny preset, 2 s, batch 1,2, 4 tokens, 1 repeat (seconds on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.audio.frontend import num_fbank_frames, num_lfr_frames
from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.host_memory import tune_host_allocator
from funasr_jax.infer.recognizer import prompt_embeds
from funasr_jax.io.funasr_torch import params_from_torch
from funasr_jax.io.torch_nano import TorchUnavailableError, build_torch_nano, require_torch_funasr
from funasr_jax.models.config import audio_token_count, preset
from funasr_jax.models.funasr import FunASRNano, init_params
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

PREFIX_TOKENS = 18
SUFFIX_TOKENS = 5


class BenchArgsError(ValueError):
    """A bad command-line value (the message names the flag)."""


def synthetic_inputs(batch: int, seconds: float, vocab: int, seed: int = 0) -> dict:
    """Numpy inputs for B utterances: feats [B, T, 560] f32, prompt ids [B, P] int32 (audio rows 0 at
    [18, 18 + N)), with T LFR frames of `seconds` of 16 kHz audio and P = 18 + N + 5."""
    t = num_lfr_frames(num_fbank_frames(int(round(seconds * 16000))))
    n = int(audio_token_count(t))
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, min(vocab, 1000), (batch, PREFIX_TOKENS + n + SUFFIX_TOKENS)).astype(np.int32)
    ids[:, PREFIX_TOKENS:PREFIX_TOKENS + n] = 0
    return {"feats": rng.standard_normal((batch, t, 560)).astype(np.float32), "ids": ids,
            "frames": t, "audio_tokens": n}


def _timed(fn, warmup: int, repeats: int) -> tuple[float, float, list]:
    """(first call s, median steady s, last output); `fn` must block until its result is ready."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def ours_transcribe(cfg, params, inputs: dict, new_tokens: int):
    """A no-argument callable: encoder + adaptor + greedy decode; returns tokens [B, new_tokens]."""

    model = FunASRNano(cfg)
    decoder = CausalDecoder(Qwen3ForCausalLM(cfg.llm, dtype=jnp.dtype(cfg.dtype), attention_impl=cfg.attention_impl))
    b, p = inputs["ids"].shape
    feats = jnp.asarray(inputs["feats"])
    feat_lengths = jnp.full((b,), inputs["frames"], jnp.int32)
    ids = jnp.asarray(inputs["ids"])
    start = jnp.full((b,), PREFIX_TOKENS, jnp.int32)
    n_audio = jnp.full((b,), inputs["audio_tokens"], jnp.int32)
    lengths = jnp.full((b,), p, jnp.int32)

    def run():
        embeds = prompt_embeds(model, params, feats, feat_lengths, ids, start, n_audio)
        tokens, _ = greedy_generate(decoder, params["llm"], embeds, lengths, max_new_tokens=new_tokens,
                                    eos_id=-1, pad_id=0)
        return np.asarray(tokens)

    return run


def torch_transcribe(torch, model, inputs: dict, new_tokens: int, device: str):
    """A no-argument callable running FunASR's encoder + adaptor + HF greedy generate."""
    emb = model.llm.get_input_embeddings()
    b = inputs["ids"].shape[0]
    n = inputs["audio_tokens"]
    speech = torch.from_numpy(inputs["feats"]).to(device)
    lens = torch.full((b,), inputs["frames"], dtype=torch.long, device=device)
    ids = torch.from_numpy(inputs["ids"].astype(np.int64)).to(device)
    prefix, suffix = ids[:, :PREFIX_TOKENS], ids[:, PREFIX_TOKENS + n:]

    def run():
        with torch.no_grad():
            enc, el = model.audio_encoder(speech, lens)
            ad, _ = model.audio_adaptor(enc, el)
            x = torch.cat([emb(prefix), ad[:, :n].to(emb.weight.dtype), emb(suffix)], 1)
            out = model.llm.generate(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long,
                                                                                 device=device),
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                     eos_token_id=None, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return out.cpu().numpy()

    return run


def _row(impl: str, b: int, seconds: float, new: int, first: float, steady: float, **extra) -> dict:
    return {"impl": impl, "batch": b, "audio_s": seconds, "new_tokens": new,
            "batch_s": round(steady, 4), "rtf": round(steady / (b * seconds), 5),
            "tokens_per_s": round(b * new / steady, 1), "first_call_s": round(first, 3),
            "compile_s": round(max(0.0, first - steady), 3), **extra}


def run(preset_name: str, batches, seconds: float, new_tokens: int, dtype: str | None = None, repeats: int = 3,
        warmup: int = 2, with_torch: bool = True, seed: int = 0) -> dict:
    """The benchmark record: {"config", "ours": [rows], "torch": [rows], "ratio": [rows]}.

    dtype: our compute dtype (None: the preset's own, bf16 for nano, f32 for tiny)."""
    cfg = preset(preset_name)
    dtype = dtype or cfg.dtype
    cfg = cfg.replace(dtype=dtype).validate()
    rec = {"preset": preset_name, "dtype": dtype, "audio_s": seconds, "new_tokens": new_tokens,
           "jax": jax.__version__, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
           "ours": [], "torch": [], "ratio": []}
    tmodel = torch = None
    device = "cpu"
    t0 = time.perf_counter()
    if with_torch:

        torch, _ = require_torch_funasr()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tmodel, _ = build_torch_nano(cfg, trainable=(), llm_dtype="fp32", seed=seed, device="cpu")
        tmodel.eval()
        sd = {k: v.detach() for k, v in tmodel.state_dict().items()}
        params = jax.tree_util.tree_map(jnp.asarray, params_from_torch(sd, cfg, allow_missing=("ctc",),
                                                                       source="torch FunASRNano"))
        del sd
        tmodel = tmodel.to(device)
        if dtype != "float32":  # as FunASR's bf16 inference: the LLM in bf16, audio side f32
            tmodel.llm.to(torch.bfloat16 if dtype == "bfloat16" else torch.float16)
        rec.update(torch=[], torch_version=torch.__version__, torch_device=device,
                   torch_threads=torch.get_num_threads())
    else:

        params = jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(seed))
    rec["setup_s"] = round(time.perf_counter() - t0, 2)
    for b in batches:
        inputs = synthetic_inputs(b, seconds, cfg.llm.vocab_size, seed)
        first, steady, ours_tok = _timed(ours_transcribe(cfg, params, inputs, new_tokens), warmup, repeats)
        rec["ours"].append(_row("funasr-jax", b, seconds, new_tokens, first, steady, frames=inputs["frames"]))
        if tmodel is None:
            continue
        first, steady, torch_tok = _timed(torch_transcribe(torch, tmodel, inputs, new_tokens, device), warmup,
                                          repeats)
        agree = float(np.mean(ours_tok[:, :new_tokens] == torch_tok[:, -new_tokens:]))
        rec["torch"].append(_row("FunASR torch", b, seconds, new_tokens, first, steady, frames=inputs["frames"]))
        o, t = rec["ours"][-1], rec["torch"][-1]
        rec["ratio"].append({"batch": b, "tokens_per_s": round(o["tokens_per_s"] / t["tokens_per_s"], 3),
                             "rtf_torch_over_ours": round(t["rtf"] / o["rtf"], 3),
                             "greedy_token_agreement": round(agree, 3)})
    return rec


def table(rec: dict) -> str:
    """Markdown table: a row per (impl, batch) and a ratio row per batch."""
    head = ("| impl | preset | B | audio s | new tok | s/batch | RTF | tok/s | compile s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    by_b = {r["batch"]: r for r in rec["ratio"]}
    for i, o in enumerate(rec["ours"]):
        for r in [o] + ([rec["torch"][i]] if i < len(rec["torch"]) else []):
            lines.append(f"| {r['impl']} | {rec['preset']} | {r['batch']} | {r['audio_s']} | {r['new_tokens']} | "
                         f"{r['batch_s']} | {r['rtf']} | {r['tokens_per_s']} | "
                         f"{r['compile_s'] if r['impl'] == 'funasr-jax' else '-'} |")
        if o["batch"] in by_b:
            lines.append(f"| ratio ours/torch | | {o['batch']} | | | | | {by_b[o['batch']]['tokens_per_s']} | |")
    return "\n".join(lines)


def parse_batches(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchArgsError(f"--batch: expected comma-separated integers like 1,16, got {text!r}") from None
    if not out or min(out) < 1:
        raise BenchArgsError(f"--batch: every batch size must be >= 1, got {text!r}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.bench", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "nano"])
    p.add_argument("--batch", default="1,16", help="comma-separated batch sizes (utterances)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio seconds per utterance")
    p.add_argument("--new-tokens", type=int, default=40, help="greedy tokens generated per utterance (fixed)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                   help="compute dtype (default: the preset's: bf16 for nano, f32 for tiny)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first compiles; torch needs ~2 to settle)")
    p.add_argument("--no-torch", action="store_true", help="time ours only (no torch / funasr needed)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: tiny preset, 2 s, batch 1,2, 4 tokens")
    p.add_argument("--out", default=None, help="write the JSON record here")
    args = p.parse_args(argv)
    tune_host_allocator()
    try:
        batches = parse_batches(args.batch)
        if args.seconds <= 0:
            raise BenchArgsError(f"--seconds must be > 0, got {args.seconds}")
        if args.new_tokens < 1:
            raise BenchArgsError(f"--new-tokens must be >= 1, got {args.new_tokens}")
        if args.repeats < 1 or args.warmup < 1:
            raise BenchArgsError("--repeats and --warmup must be >= 1")
    except BenchArgsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.smoke:
        args.preset, batches, args.seconds, args.new_tokens, args.repeats = "tiny", [1, 2], 2.0, 4, 2
    if not args.no_torch:

        try:
            require_torch_funasr()
        except TorchUnavailableError as e:
            print(f"error: {e} (or pass --no-torch)", file=sys.stderr)
            return 2
    rec = run(args.preset, batches, args.seconds, args.new_tokens, args.dtype, args.repeats, args.warmup,
              with_torch=not args.no_torch)
    print(table(rec))
    print(json.dumps(rec))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
