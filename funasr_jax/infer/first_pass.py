"""Write manifests whose lines carry the CTC head's first-pass hypothesis (`first_pass` field).

    python -m funasr_jax.first_pass --checkpoint runs/ctc_warmup --data data/demo/train.jsonl \\
        --out-dir runs/first_pass

The recipe's LLM decoder reads "audio + prompt (+ CTC hypothesis / retrieved hotwords)": a stage
trained with `data.first_pass_prompt=true` on these manifests learns to use the hypothesis, and
a `Recognizer` of that model computes it with its own CTC head at inference. Each output file
keeps its input's name and every field of each line; relative audio paths are rewritten to stay
valid from the output folder. Lines whose JSON or audio is unusable are left out with a warning
naming file:line (as training would skip them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from funasr_jax.data.manifest import SPEECH_BEGIN, SPEECH_END, ManifestError, read_manifests, require_jsonl
from funasr_jax.infer.evaluate import evaluate_examples, format_table
from funasr_jax.infer.recognizer import Recognizer
from funasr_jax.io.checkpoint import CheckpointError

_MARKER = re.compile(re.escape(SPEECH_BEGIN) + r"!(.*?)" + re.escape(SPEECH_END), re.S)


def relocate_audio(content: str, audio_path: str, out_dir: Path) -> str:
    """The user message with its audio path valid from `out_dir` (absolute paths kept)."""
    def sub(m):
        if os.path.isabs(m.group(1)):
            return m.group(0)
        return f"{SPEECH_BEGIN}!{os.path.relpath(audio_path, out_dir)}{SPEECH_END}"

    return _MARKER.sub(sub, content)


def write_first_pass_manifests(rec, files: Sequence[str], out_dir, *, batch_size: int = 32,
                               progress: bool = False) -> dict:
    """Decode every utterance of `files` with `rec`'s CTC head; write `out_dir/<name>` per file.

    Returns {"files": [output paths], "utterances": n, "left_out": n, "breakdown": scores of the
    first pass against the references (metrics.breakdown), "info": decode info}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"first_pass: input manifests share a file name ({names}); write them to separate folders")
    require_jsonl(files, "first_pass")
    examples = read_manifests(files, on_error="skip")
    rows, table, info = evaluate_examples(rec, examples, mode="ctc", batch_size=batch_size, on_error="skip",
                                          progress=progress)
    hyps = {r["where"]: r["hyp"] for r in rows}
    parsed = {ex.where: ex for ex in examples}
    written, outputs = 0, []
    for f in files:
        dst = out_dir / Path(f).name
        with open(f, encoding="utf-8") as src, open(dst, "w", encoding="utf-8") as out:
            for lineno, text in enumerate(src, start=1):
                where = f"{os.fspath(f)}:{lineno}"
                if where not in hyps:  # malformed line or unusable audio, already reported
                    continue
                ex = parsed[where]
                obj = json.loads(text)
                for m in obj["messages"]:
                    if m.get("role") == "user":
                        m["content"] = relocate_audio(m["content"], ex.audio_path, out_dir.resolve())
                obj["first_pass"] = hyps[where]
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                written += 1
        outputs.append(str(dst))
    return {"files": outputs, "utterances": written, "left_out": info["skipped"], "breakdown": table, "info": info}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m funasr_jax.first_pass", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model or training run with a CTC head")
    p.add_argument("--data", nargs="+", required=True, help="FunASR ChatML JSONL manifests")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    try:
        rec = Recognizer.from_checkpoint(args.checkpoint)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rec.ctc_vocab is None or not rec.cfg.ctc.enabled:
        print(f"error: {args.checkpoint}: no CTC head / CTC vocabulary to decode a first pass with", file=sys.stderr)
        return 2
    try:
        res = write_first_pass_manifests(rec, args.data, args.out_dir, batch_size=args.batch_size, progress=True)
    except (ManifestError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(res["breakdown"], res["info"]))
    print(f"wrote {res['utterances']} lines to {', '.join(res['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
