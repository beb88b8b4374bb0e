"""Dev-set evaluation inside training: decode with the current params and score."""

from __future__ import annotations

import functools

from funasr_jax.data.manifest import read_manifests
from funasr_jax.infer.evaluate import evaluate_examples
from funasr_jax.infer.recognizer import Recognizer, lfr_seconds


@functools.lru_cache(maxsize=8)
def _examples(files: tuple[str, ...], on_error: str):
    return read_manifests(list(files), on_error=on_error)


def evaluate_split(model_cfg, params, data_cfg, frontend_cfg, files, tokenizer, ctc_vocab, *, mode="llm", max_utts=0,
                   max_new_tokens=64, batch_size=16, ctc_weight=0.0):
    """-> {"summary": {...}, "breakdown": {...}, "rows": [...]}; error_rate is the overall rate."""
    examples = _examples(tuple(files), data_cfg.on_error)
    if max_utts and max_utts < len(examples):
        # evenly spaced, so every language / subset of a sorted manifest is represented
        examples = [examples[int(i * len(examples) / max_utts)] for i in range(max_utts)]
    rec = Recognizer(model_cfg, params, tokenizer, ctc_vocab, frontend=frontend_cfg,
                     first_pass_prompt=data_cfg.first_pass_prompt, ctc_weight=ctc_weight,
                     max_segment_s=lfr_seconds(max(data_cfg.bucket_frames), frontend_cfg))
    rows, table, info = evaluate_examples(rec, examples, mode=mode, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens, on_error=data_cfg.on_error)
    summary = {"error_rate": table.get("overall", {}).get("rate"), "utterances": info["utterances"],
               "skipped": info["skipped"]}
    for k, v in table.items():
        if k.startswith("language/"):
            summary[f"{v['metric']}_{k.split('/')[1]}"] = v["rate"]
    return {"summary": summary, "breakdown": table, "rows": rows}
