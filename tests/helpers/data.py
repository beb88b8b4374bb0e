"""Shared helpers for the data / prompt / first-pass tests: a char tokenizer and tiny corpora.

"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import soundfile as sf

SR = 16000
SPECIALS = {"<|endoftext|>": 3000, "<|im_start|>": 3001, "<|im_end|>": 3002}
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


class CharTokenizer:
    """One id per character (ord + 10, i.e. never 0); ChatML specials are single ids."""

    pad_id = eos_id = SPECIALS["<|endoftext|>"]
    im_start_id = SPECIALS["<|im_start|>"]
    im_end_id = SPECIALS["<|im_end|>"]
    vocab_size = 0x110000 + 10

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in _SPECIAL_RE.split(text):
            if piece in SPECIALS:
                out.append(SPECIALS[piece])
            else:
                out.extend(ord(c) + 10 for c in piece)
        return out

    def decode(self, ids) -> str:
        inv = {v: k for k, v in SPECIALS.items()}
        return "".join(inv[i] if i in inv else chr(i - 10) for i in ids)


class CharCTC:
    """CTC vocabulary over lowercase letters + space; blank is the last id."""

    chars = " abcdefghijklmnopqrstuvwxyz"
    vocab_size = len(chars) + 1
    blank_id = len(chars)

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) for c in text.lower() if c in self.chars]


def tone(seconds: float, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A sine plus a little noise, [S] float32."""
    n = int(round(seconds * SR))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def fbank_frames(num_samples: int) -> int:
    """Kaldi snip-edges frame count for 25 ms / 10 ms at 16 kHz."""
    return 0 if num_samples < 400 else 1 + (num_samples - 400) // 160


def line(key: str, path: str, target: str, speech_length: int, instruction: str = "语音转写：",
         **extra) -> str:
    obj = {
        "key": key,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"{instruction}<|startofspeech|>!{path}<|endofspeech|>"},
            {"role": "assistant", "content": target},
        ],
        "speech_length": speech_length,
        "text_length": len(target),
        **extra,
    }
    return json.dumps(obj, ensure_ascii=False)


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def write_corpus(folder, durations, name="train.jsonl", seed=0):
    """Writes wav/<i>.wav clips of the given durations (s) and a manifest; returns its path."""
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    lines = []
    for i, d in enumerate(durations):
        wav = tone(d, freq=200 + 37 * i, seed=seed + i)
        sf.write(os.path.join(folder, "wav", f"{i}.wav"), wav, SR, subtype="PCM_16")
        target = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 3))
        lines.append(line(f"utt{i}", f"wav/{i}.wav", target, fbank_frames(len(wav)), language="en"))
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_noise(folder, seconds=0.7, seed=123):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(os.path.join(folder, "n0.wav"), (0.2 * rng.standard_normal(int(seconds * SR))).astype(np.float32),
             SR, subtype="FLOAT")
    sf.write(os.path.join(folder, "n1.wav"), tone(1.3, 3000.0, seed + 1), SR, subtype="FLOAT")
    return folder


def assert_batches_equal(a, b, strict: bool = True):
    """Two lists of `Batch`es hold the same fields and the same arrays (dtype and shape too)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = x.arrays(), y.arrays()
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k, strict=strict)
