"""FunASR's PyTorch FunASRNano train step, timed like `train.bench` times ours (`--compare-torch`).

Same model size (the config's `model`), batch (the same `train.synthetic` arrays), trainable set
(`stage.trainable`: the rest gets requires_grad False; "llm:lora" = FunASR's own LoRA adapters),
losses (LLM cross-entropy through `FunASRNano.forward`; + CTC on the CTC head when
`stage.ctc_weight > 0`, FunASR's forward has none), AdamW with the config's betas / eps / weight
decay / gradient clipping, `steps` timed after `warmup`, on torch's device (CUDA when torch sees
one, else CPU).

Precision: float32 = everything f32. bfloat16 = FunASR's own mixed precision: `llm_dtype: bf16`
(LLM weights bf16, autocast inside its forward) and bf16 autocast over the whole forward (the
encoder / adaptor weights stay f32), as FunASR's own training runs it.
torch and funasr are imported lazily (`funasr_jax.io.torch_nano`).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from funasr_jax.io.torch_nano import build_torch_nano, require_torch_funasr
from train.synthetic import anchor_shapes

LLM_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def torch_batch(torch, host, device: str) -> dict:
    """FunASRNano.forward kwargs from our numpy `Batch` (feats [B, T, 560], ids/labels [B, L])."""
    b, length = host.input_ids.shape
    mask = (np.arange(length)[None, :] < np.asarray(host.token_lengths)[:, None]).astype(np.int64)
    out = {
        "speech": torch.from_numpy(np.asarray(host.feats, np.float32)),
        "speech_lengths": torch.from_numpy(np.asarray(host.feat_lengths, np.int64)),
        "input_ids": torch.from_numpy(np.asarray(host.input_ids, np.int64)),
        "attention_mask": torch.from_numpy(mask),
        "labels_ids": torch.from_numpy(np.asarray(host.labels, np.int64)),
        "fbank_beg": torch.from_numpy(np.asarray(host.audio_start, np.int64)[:, None]),
        "fake_token_len": torch.from_numpy(np.asarray(host.audio_tokens, np.int64)[:, None]),
    }
    if host.ctc_labels is not None:
        out["ctc_labels"] = torch.from_numpy(np.asarray(host.ctc_labels, np.int64))
        out["ctc_label_lengths"] = torch.from_numpy(np.asarray(host.ctc_label_lengths, np.int64))
    return {k: v.to(device) for k, v in out.items()}


def _ctc_loss(torch, model, tb: dict, detach: bool):
    """Mean CTC loss of FunASR's CTC head (ctc_decoder + ctc.ctc_lo) over the batch."""
    enc, lens = model.audio_encoder(tb["speech"], tb["speech_lengths"])
    if detach:
        enc = enc.detach()
    hid, hlens = model.ctc_decoder(enc, lens)
    logp = torch.log_softmax(model.ctc.ctc_lo(hid).float(), -1).transpose(0, 1)
    loss = torch.nn.functional.ctc_loss(logp, tb["ctc_labels"], hlens, tb["ctc_label_lengths"],
                                        blank=model.blank_id, reduction="mean", zero_infinity=True)
    return loss


def run_torch_bench(cfg, host, *, seconds: float, steps: int, warmup: int, text_tokens=None,
                    seed: int = 0) -> dict:
    """Time FunASR's train step on `host` (our numpy Batch); returns a record like train.bench's row.

    cfg: the validated TrainConfig the JAX side ran (model size, dtype, stage, optim).
    """
    model_cfg, stage, optim = cfg.model, cfg.stage, cfg.optim
    t0 = time.perf_counter()

    torch, _ = require_torch_funasr()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = model_cfg.dtype
    model, counts = build_torch_nano(model_cfg, trainable=stage.trainable, llm_dtype=LLM_DTYPE[dtype],
                                     seed=seed, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, betas=(optim.b1, optim.b2), eps=optim.eps,
                            weight_decay=optim.weight_decay, fused=(device == "cuda") or None)
    tb = torch_batch(torch, host, device)
    setup_s = time.perf_counter() - t0
    use_ctc = stage.ctc_weight > 0 and model_cfg.ctc.enabled and "ctc_labels" in tb
    autocast = dtype != "float32"
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, torch.float32)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=autocast):
            loss = torch.zeros((), device=device)
            if stage.llm_weight > 0:
                kw = {k: (v.clone() if k in ("input_ids", "labels_ids", "attention_mask", "fbank_beg",
                                             "fake_token_len") else v)
                      for k, v in tb.items() if not k.startswith("ctc_")}
                loss = loss + stage.llm_weight * model(**kw, fbank_mask=None)[0]
            if use_ctc:
                loss = loss + stage.ctc_weight * _ctc_loss(torch, model, tb, model_cfg.ctc.detach_encoder)
        loss.backward()
        if optim.grad_clip and optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    loss = step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    sync()
    times = []
    for _ in range(steps):
        t1 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t1)
    step_s = statistics.median(times)
    shapes = anchor_shapes(seconds, text_tokens)
    b = int(host.input_ids.shape[0])
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {
        "impl": "torch (FunASR FunASRNano)", "device": name, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "dtype": dtype,
        "precision": "f32" if not autocast else f"llm weights {LLM_DTYPE[dtype]} + {dtype} autocast",
        "batch": b, "audio_s": seconds, **shapes,
        "trainable_params": counts, "ctc_loss": use_ctc,
        "step_ms": round(step_s * 1e3, 2), "step_ms_mean": round(1e3 * statistics.mean(times), 2),
        "step_ms_min": round(1e3 * min(times), 2), "steps_per_s": round(1.0 / step_s, 4),
        "tokens_per_s": round(b * shapes["llm_tokens"] / step_s, 1),
        "audio_s_per_s": round(b * seconds / step_s, 2),
        "first_step_s": round(first_s, 2), "setup_s": round(setup_s, 2), "steps": steps, "warmup": warmup,
        "loss": round(float(loss.detach()), 4),
    }


def compare(ours: dict, theirs: dict) -> dict:
    """Ratios ours / torch (> 1: ours is faster) in audio-seconds/s and steps/s."""
    def r(k):
        a, b = ours.get(k), theirs.get(k)
        return None if not a or not b else round(a / b, 3)

    return {"audio_s_per_s": r("audio_s_per_s"), "steps_per_s": r("steps_per_s"),
            "tokens_per_s": r("tokens_per_s")}


def trainable_mismatch(ours: dict, theirs: dict) -> str:
    """'' when both sides train the same number of parameters per part, else what differs."""
    parts = sorted(set(ours) | set(theirs))
    diff = [f"{p}: ours {ours.get(p, 0)} vs torch {theirs.get(p, 0)}" for p in parts if ours.get(p, 0) != theirs.get(p, 0)]
    return "; ".join(diff)


def table(ours: dict, theirs: dict, ratio: dict) -> str:
    """Markdown table: ours, torch and the ratio row."""
    cols = [("step_ms", "step ms"), ("steps_per_s", "steps/s"), ("audio_s_per_s", "audio s/s"),
            ("tokens_per_s", "tok/s"), ("first", "compile / 1st step s")]
    head = "| impl | preset | B | s | dtype | " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "---|" * (5 + len(cols))

    def row(name, rec, first):
        vals = [rec.get(k) if k != "first" else first for k, _ in cols]
        return (f"| {name} | {ours.get('preset', '-')} | {rec['batch']} | {rec['audio_s']} | {rec['dtype']} | "
                + " | ".join("-" if v is None else str(v) for v in vals) + " |")

    lines = [head, sep, row("funasr-jax", ours, ours.get("compile_s")),
             row("FunASR torch", theirs, theirs.get("first_step_s")),
             f"| ratio ours/torch | | | | | | {ratio['steps_per_s']} | {ratio['audio_s_per_s']} | "
             f"{ratio['tokens_per_s']} | |"]
    return "\n".join(lines)
