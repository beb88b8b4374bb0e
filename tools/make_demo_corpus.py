"""Synthesize the bundled demo speech corpus (Mandarin, English, Mandarin-English code-switching).

    python tools/make_demo_corpus.py            # writes data/demo/ (seed 0)
    python tools/make_demo_corpus.py --out /tmp/demo --seed 1 --jobs 2

Sentences come from `tools/demo_text.py`: free-form generators over `demo_lexicon` (dev/test use
sentence frames that never occur in train), a template subset (`demo_templates`) and noise-only
clips (transcript ""). Speech is made with espeak-ng (varied voices, variants, speed, pitch),
resampled to 16 kHz mono with sox, trimmed, padded, gain-varied and stored as Ogg/Opus. Output:

    data/demo/{train,dev,test}.jsonl   FunASR ChatML manifests (audio paths relative to the jsonl)
    data/demo/audio/{split}/NNNNN.ogg  16 kHz mono Opus
    data/demo/noise/*.ogg              noises for augmentation (white, pink, brown, babble, hum)
    data/demo/tokenizer.model          sentencepiece model trained on the train transcripts
    data/demo/summary.json             counts, durations, vocabulary coverage of dev/test
    data/demo/README.md

espeak-ng note: the `cmn` voice reads Latin text as English but also reads the pinyin fallback of
many Chinese characters as English words ("鲁" -> "lu three"), while `cmn-latn-pinyin` reads all
Chinese characters correctly but reads Latin text as pinyin. Chinese runs are therefore spoken with
`cmn-latn-pinyin` and Latin runs inside Chinese sentences with `cmn` (same variant, speed and pitch,
so it is one accented speaker), and the pieces are concatenated with short pauses.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_templates import EN_TEMPLATES, ZH_TEMPLATES
from demo_text import LANGS, Sentence, coverage, is_cjk, make_splits, normalize_text, vocabulary_strings

from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT as SYSTEM_PROMPT
from funasr_jax.text.prompt import FIRST_PASS_LABEL

SAMPLE_RATE = 16000
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|startofspeech|>", "<|endofspeech|>"]
# Instruction strings of the release's prompts (FunASR model.py / fine-tuning guide), by language of the utterance.
INSTRUCTIONS = {
    "zh": [("语音转写：", 0.6), ("语音转写成中文：", 0.2), ("Speech transcription:", 0.1),
           ("Transcribe speech into Chinese:", 0.1)],
    "en": [("语音转写：", 0.6), ("语音转写成英文：", 0.25), ("Speech transcription:", 0.15)],
    "cs": [("语音转写：", 0.8), ("Speech transcription:", 0.2)],
}
# Every instruction of §6.3 (the corpus uses those of INSTRUCTIONS).
INSTRUCTION_STRINGS = [
    "语音转写：", "语音转写成中文：", "语音转写成英文：", "语音转写成日文：", "语音转写，不进行文本规整：",
    "Speech transcription:", "Transcribe speech into Chinese:",
    "Speech transcription without text normalization:",
]
HOTWORD_INSTRUCTION = "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。"
# Extra strings the tokenizer must cover without byte fallback (prompts of §6.3).
PROMPT_STRINGS = [
    SYSTEM_PROMPT, "system", "user", "assistant", *INSTRUCTION_STRINGS, HOTWORD_INSTRUCTION,
    "**上下文信息：**", "热词列表：[a, b, c]", "请结合下面提供的上下文信息", "历史转写结果", "一遍解码结果",
    # so paths, numbers and ASCII punctuation are single pieces rather than byte fallbacks
    "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "!audio/train/00000.ogg",
]
# Fixed prompt phrases that become one piece each (sentencepiece user-defined symbols; spaces as
# "\u2581", the form sentencepiece matches them in), as "system" or "assistant" are single tokens of
# Qwen's vocabulary. Spelt out in the demo's small vocabulary they would be ~45 of the ~70 tokens
# of a training row, most of the tiny LLM's compute.
PROMPT_SYMBOLS = [
    SYSTEM_PROMPT, "system", "user", "assistant", FIRST_PASS_LABEL, *INSTRUCTION_STRINGS,
    HOTWORD_INSTRUCTION, "**上下文信息：**", "热词列表：",
]

# ----------------------------------------------------------------------------- voices
ZH_VARIANTS = ["", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt3"]
EN_VOICES = ["en-us", "en-gb-x-rp", "en-gb", "en-us-nyc", "en-gb-scotland", "en-029", "en-gb-x-gbclan",
             "en-gb-x-gbcwmd"]
EN_VARIANTS = ZH_VARIANTS
SPEED = {"zh": (160, 230), "cs": (160, 230), "en": (130, 190)}  # espeak -s (cmn counts syllables)
PITCH = (30, 70)

# ----------------------------------------------------------------------------- synthesis
def _espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> sox (16 kHz mono s16) -> float32 [n] in [-1, 1]."""
    es = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                        check=True, capture_output=True)
    sx = subprocess.run(["sox", "-V1", "-R", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
                         "-t", "wav", "-"], input=es.stdout, check=True, capture_output=True)
    data, sr = sf.read(io.BytesIO(sx.stdout), dtype="float32")
    assert sr == SAMPLE_RATE, sr
    return data


def _trim(x: np.ndarray, thresh: float = 0.01) -> np.ndarray:
    idx = np.nonzero(np.abs(x) > thresh)[0]
    if len(idx) == 0:
        return x[:0]
    return x[idx[0]: idx[-1] + 1]


def _segments(text: str) -> list[tuple[str, bool]]:
    """Split into (run, is_chinese) runs."""
    runs = re.findall(r"[\u4e00-\u9fff]+|[A-Za-z' ]+", text)
    return [(r.strip(), is_cjk(r[0])) for r in runs if r.strip()]


@dataclass
class Job:
    text: str
    language: str
    voice: str       # reported voice, e.g. "cmn+f2" or "en-gb-x-rp+m3"
    variant: str
    speed: int
    pitch: int
    lead: float      # seconds of silence before / after the speech
    tail: float
    gap: float       # pause between code-switched runs
    peak: float
    noise: str = ""  # noise-only clips: white | pink | brown | hum | silence | room
    seconds: float = 0.0
    seed: int = 0


MAX_SECONDS = 5.5  # the tiny preset's largest bucket is 96 LFR frames = 5.76 s


def noise_clip(job: Job) -> np.ndarray:
    """A noise-only clip [n] float32 of job.seconds: a fresh draw (seeded by job.seed), not a
    crop of the augmentation noises in noise/."""
    rng = np.random.default_rng(job.seed)
    n = int(job.seconds * SAMPLE_RATE)
    if job.noise == "silence":
        return np.zeros(n, np.float32)
    if job.noise == "hum":
        t = np.arange(n) / SAMPLE_RATE
        base = float(rng.choice([50.0, 60.0]))
        x = sum(a * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
                for k, a in [(1, 1.0), (2, 0.5), (3, 0.3), (5, 0.15)]) + 0.02 * rng.standard_normal(n)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "room": 1.0, "brown": 2.0}[job.noise]
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        x = np.fft.irfft(spec / f ** (exponent / 2), n)
    x = x - x.mean()
    x = x * (job.peak / max(np.sqrt(np.mean(x ** 2)), 1e-9))
    return np.clip(x, -0.99, 0.99).astype(np.float32)


def synthesize(job: Job) -> np.ndarray:
    """Speech (or a noise-only clip) for one job: [n] float32 at 16 kHz, at most MAX_SECONDS
    (speech that comes out longer is re-spoken up to 40 % faster, then its padding shortened)."""
    if job.noise:
        return noise_clip(job)
    for speedup in (1.0, 1.2, 1.4):
        body = _speech(job, int(job.speed * speedup))
        if len(body) / SAMPLE_RATE + job.lead + job.tail <= MAX_SECONDS:
            break
    lead, tail = job.lead, job.tail
    spare = MAX_SECONDS - len(body) / SAMPLE_RATE
    if spare < lead + tail:
        if spare < 0.02:
            raise ValueError(f"sentence too long to speak in {MAX_SECONDS} s: {job.text!r}")
        lead, tail = lead * spare / (lead + tail), tail * spare / (lead + tail)
    x = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), body,
                        np.zeros(int(tail * SAMPLE_RATE), np.float32)])
    return (x * (job.peak / max(np.abs(x).max(), 1e-6))).astype(np.float32)


def _speech(job: Job, speed: int) -> np.ndarray:
    suffix = f"+{job.variant}" if job.variant else ""
    if job.language == "en":
        pieces = [_trim(_espeak(job.text, job.voice + suffix, speed, job.pitch))]
    else:
        pieces = []
        for run, is_zh in _segments(job.text):
            voice = ("cmn-latn-pinyin" if is_zh else "cmn") + suffix
            pieces.append(_trim(_espeak(run, voice, speed, job.pitch)))
    gap = np.zeros(int(job.gap * SAMPLE_RATE), np.float32)
    body = pieces[0]
    for p in pieces[1:]:
        body = np.concatenate([body, gap, p])
    return body


NOISE_KINDS = ("white", "pink", "brown", "hum", "silence", "room")


def make_job(s: Sentence, rng: np.random.Generator) -> Job:
    if s.subset == "noise":
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        # RMS: room tone is quiet (-60..-40 dBFS), the others -40..-14 dBFS
        lo, hi = (-60, -40) if kind == "room" else (-40, -14)
        return Job(text="", language=s.language, voice="", variant="", speed=0, pitch=0, lead=0.0, tail=0.0,
                   gap=0.0, peak=float(10 ** (rng.uniform(lo, hi) / 20)), noise=kind,
                   seconds=float(rng.uniform(0.8, MAX_SECONDS)), seed=int(rng.integers(2**31)))
    if s.language == "en":
        voice = EN_VOICES[int(rng.integers(len(EN_VOICES)))]
        variant = EN_VARIANTS[int(rng.integers(len(EN_VARIANTS)))]
    else:
        voice = "cmn"
        variant = ZH_VARIANTS[int(rng.integers(len(ZH_VARIANTS)))]
    lo, hi = SPEED[s.language]
    return Job(text=s.text, language=s.language, voice=voice, variant=variant,
               speed=int(rng.integers(lo, hi + 1)), pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
               lead=float(rng.uniform(0.05, 0.5)), tail=float(rng.uniform(0.05, 0.5)),
               gap=float(rng.uniform(0.03, 0.12)), peak=float(rng.uniform(0.2, 0.95)))


def fbank_frames(n_samples: int) -> int:
    """Kaldi fbank frame count (25 ms window, 10 ms shift, snip_edges)."""
    return 0 if n_samples < 400 else 1 + (n_samples - 400) // 160


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _fix_ogg_serial(data: bytes, serial: int = 1) -> bytes:
    """libsndfile picks a random Ogg stream serial number; pin it (and redo page CRCs) so the
    generated files are byte-for-byte reproducible."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        nseg = out[pos + 26]
        size = 27 + nseg + sum(out[pos + 27: pos + 27 + nseg])
        out[pos + 14: pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22: pos + 26] = b"\0\0\0\0"
        crc = 0
        for b in out[pos: pos + size]:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ b]
        out[pos + 22: pos + 26] = crc.to_bytes(4, "little")
        pos += size
    return bytes(out)


def write_opus(path: str, x: np.ndarray, compression: float) -> None:
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=compression)
    with open(path, "wb") as f:
        f.write(_fix_ogg_serial(buf.getvalue()))


# ----------------------------------------------------------------------------- noise
def make_noises(out_dir: str, rng: np.random.Generator, compression: float) -> list[tuple[str, float]]:
    os.makedirs(out_dir, exist_ok=True)
    made = []

    def save(name: str, x: np.ndarray, rms: float = 0.1) -> None:
        x = x - x.mean()
        x = x * (rms / max(np.sqrt(np.mean(x ** 2)), 1e-9))
        x = np.clip(x, -0.99, 0.99).astype(np.float32)
        write_opus(os.path.join(out_dir, name + ".ogg"), x, compression)
        made.append((name + ".ogg", len(x) / SAMPLE_RATE))

    def colored(n: int, exponent: float) -> np.ndarray:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        return np.fft.irfft(spec / f ** (exponent / 2), n)

    save("white", rng.standard_normal(8 * SAMPLE_RATE))
    save("pink", colored(7 * SAMPLE_RATE, 1.0))
    save("brown", colored(6 * SAMPLE_RATE, 2.0))
    t = np.arange(9 * SAMPLE_RATE) / SAMPLE_RATE
    hum = sum(a * np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi))
              for k, a in [(1, 1.0), (2, 0.5), (3, 0.35), (5, 0.2), (7, 0.1)])
    save("hum", hum + 0.02 * rng.standard_normal(len(t)), rms=0.05)
    # Babble: eight overlapping talkers, each a chain of sentences, at random offsets.
    n = 10 * SAMPLE_RATE
    babble = np.zeros(n)
    pool = [tpl for _, tpl in ZH_TEMPLATES + EN_TEMPLATES]
    for _ in range(8):
        track = np.zeros(0, np.float32)
        while len(track) < n:
            tpl = pool[int(rng.integers(len(pool)))]
            text = normalize_text(re.sub(r"\{[a-z0-9]+\}", " ", tpl))
            job = make_job(Sentence(text, "en" if text[0].isascii() else "zh", "babble"), rng)
            track = np.concatenate([track, synthesize(job)])
        off = int(rng.integers(0, SAMPLE_RATE))
        babble += np.roll(track[:n], off) * rng.uniform(0.5, 1.0)
    save("babble", babble, rms=0.08)
    return made


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], model_path: str, vocab_size: int, seed: int) -> None:
    """Unigram sentencepiece model: single Chinese characters, sub-words for Latin text.

    Without a delimiter between Chinese characters unigram learns whole template fragments
    ("加入了中兴的研究团队") as pieces, which a tiny model can only memorise.
    """
    import sentencepiece as spm

    delim = "\ue000"  # private-use character, never in the text
    cjk_pair = re.compile(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])")
    extra = [p for s in PROMPT_STRINGS for p in s.split("\n") if p] + vocabulary_strings()
    sentences = [cjk_pair.sub(delim, t) for t in list(texts) + extra * 3]
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, model_type="unigram",
        vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True,
        user_defined_symbols=SPECIAL_TOKENS + ["\n"] + [p.replace(" ", "\u2581") for p in PROMPT_SYMBOLS],
        pretokenization_delimiter=delim,
        # Lossless text: no NFKC (keeps full-width ：，), no dummy "▁" prefix so that encoding
        # pieces separately and concatenating equals encoding the joined string (as with Qwen's BPE).
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=2, minloglevel=2,
        hard_vocab_limit=False,
    )
    with open(model_path, "wb") as f:
        f.write(proto.getvalue())


# ----------------------------------------------------------------------------- main
# utterances per split / subset / language (noise: noise-only clips, the language picks the
# instruction only)
COUNTS = {
    "train": {"free": {"zh": 1150, "en": 1000, "cs": 650}, "template": {"zh": 160, "en": 140, "cs": 100},
              "noise": {"zh": 50, "en": 40, "cs": 30}},
    "dev": {"free": {"zh": 60, "en": 50, "cs": 40}, "template": {"zh": 12, "en": 10, "cs": 8},
            "noise": {"zh": 4, "en": 3, "cs": 3}},
    "test": {"free": {"zh": 80, "en": 70, "cs": 50}, "template": {"zh": 20, "en": 15, "cs": 15},
             "noise": {"zh": 8, "en": 6, "cs": 6}},
}
SPLITS = ("train", "dev", "test")


def pick_instruction(lang: str, rng: np.random.Generator) -> str:
    options = INSTRUCTIONS[lang]
    p = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=p / p.sum()))][0]


def scaled_counts(scale: float) -> dict:
    return {sp: {sub: {lang: max(1, int(round(n * scale))) for lang, n in langs.items()}
                 for sub, langs in subs.items()} for sp, subs in COUNTS.items()}


def plan_jobs(splits: dict, seed: int, rng: np.random.Generator | None = None) -> list[tuple]:
    """(split, index, Sentence, Job, instruction) for every utterance, in manifest order.

    Every random choice is drawn here, sequentially, so parallel synthesis stays deterministic;
    subsets are interleaved in the manifests.
    """
    rng = np.random.default_rng(seed + 1) if rng is None else rng
    plan = []
    for split in SPLITS:
        order = rng.permutation(len(splits[split]))
        for i, k in enumerate(order):
            s = splits[split][int(k)]
            plan.append((split, i, s, make_job(s, rng), pick_instruction(s.language, rng)))
    return plan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "demo"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every utterance count (tests, trials)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--text-only", action="store_true",
                    help="keep the audio already in --out (same seed and scale); rewrite manifests, tokenizer, README")
    ap.add_argument("--vocab-size", type=int, default=1600)
    ap.add_argument("--compression", type=float, default=0.98,
                    help="libsndfile Opus compression level (0.98 ~ 13 kbit/s speech)")
    args = ap.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found on PATH (apt-get install -y espeak-ng sox)")

    t0 = time.time()
    out = os.path.abspath(args.out)
    if not args.text_only:
        for sub in ("audio", "noise"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    splits = make_splits(args.seed, scaled_counts(args.scale))
    rng = np.random.default_rng(args.seed + 1)
    plan = plan_jobs(splits, args.seed, rng)
    for split in SPLITS:
        os.makedirs(os.path.join(out, "audio", split), exist_ok=True)

    def render(item):
        split, i, s, job, _ = item
        x = synthesize(job)
        rel = f"audio/{split}/{i:05d}.ogg"
        write_opus(os.path.join(out, rel), x, args.compression)
        back, sr = sf.read(os.path.join(out, rel), dtype="float32")
        assert sr == SAMPLE_RATE and len(back) == len(x), (rel, sr, len(back), len(x))
        return rel, len(back)

    def existing(item):
        split, i = item[:2]
        rel = f"audio/{split}/{i:05d}.ogg"
        return rel, sf.info(os.path.join(out, rel)).frames

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        rendered = list(ex.map(existing if args.text_only else render, plan))

    import sentencepiece as spm
    train_texts = [s.text for s in splits["train"] if s.text]
    train_tokenizer(train_texts, os.path.join(out, "tokenizer.model"), args.vocab_size, args.seed)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))

    counts = {split: collections.Counter() for split in SPLITS}
    durations = collections.defaultdict(float)
    for split in SPLITS:
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for (sp_split, i, s, job, instr), (rel, n) in zip(plan, rendered):
                if sp_split != split:
                    continue
                tts = ({"noise": job.noise, "rms_dbfs": round(20 * np.log10(job.peak), 1)} if job.noise else
                       {"voice": job.voice + (f"+{job.variant}" if job.variant else ""), "speed": job.speed,
                        "pitch": job.pitch})
                rec = {
                    "key": f"{split}_{i:05d}",
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"{instr}<|startofspeech|>!{rel}<|endofspeech|>"},
                        {"role": "assistant", "content": s.text},
                    ],
                    "speech_length": fbank_frames(n),
                    "text_length": len(sp.encode(s.text)),
                    "language": s.language,
                    "hotwords": s.hotwords,
                    "subset": s.subset,
                    "frame": s.frame,
                    "tts": tts,
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                counts[split][(s.subset, s.language)] += 1
                durations[split] += n / SAMPLE_RATE

    if args.text_only:
        noises = [(n, sf.info(os.path.join(out, "noise", n)).duration)
                  for n in ("white.ogg", "pink.ogg", "brown.ogg", "hum.ogg", "babble.ogg")]
    else:
        noises = make_noises(os.path.join(out, "noise"), rng, args.compression)
    all_durs = [n / SAMPLE_RATE for (_, _, s, _, _), (_, n) in zip(plan, rendered) if s.text]
    speech = [s for split in SPLITS for s in splits[split] if s.text]
    summary = {
        "seed": args.seed, "scale": args.scale,
        "counts": {split: {f"{sub}/{lang}": n for (sub, lang), n in sorted(c.items())} for split, c in counts.items()},
        "minutes": {k: round(v / 60, 1) for k, v in durations.items()},
        "speech_seconds": {"min": round(min(all_durs), 2), "mean": round(float(np.mean(all_durs)), 2),
                           "max": round(max(all_durs), 2)},
        "distinct_chinese_chars": len({c for s in speech for c in s.text if is_cjk(c)}),
        "distinct_english_words": len({w.lower() for s in speech for w in re.findall("[A-Za-z']+", s.text)}),
        "train_frames": len({s.frame for s in splits["train"] if s.subset == "free"}),
        "coverage": {f"{split}/{sub}": {k: round(v, 4) for k, v in coverage(
            train_texts, [s.text for s in splits[split] if s.subset == sub]).items()}
            for split in ("dev", "test") for sub in ("free", "template")},
        "tokenizer_vocab_size": sp.get_piece_size(),
        "noises": noises, "wall_s": round(time.time() - t0, 1),
    }
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
    write_readme(out, summary, args)
    print(json.dumps(summary, ensure_ascii=False, indent=1))


def write_readme(out: str, summary: dict, args) -> None:
    def row(split):
        c = summary["counts"][split]
        cell = {sub: "/".join(str(c.get(f"{sub}/{lang}", 0)) for lang in LANGS) for sub in ("free", "template", "noise")}
        return (f"| {split} | {sum(c.values())} | {cell['free']} | {cell['template']} | {cell['noise']} | "
                f"{summary['minutes'][split]} |")

    cov = summary["coverage"]
    cov_rows = "\n".join(f"| {k} | {100 * v['zh_chars']:.1f} % | {100 * v['en_words']:.1f} % | {100 * v['all']:.1f} % |"
                         for k, v in cov.items())
    noises = ", ".join(f"`{n}` ({d:.0f} s)" for n, d in summary["noises"])
    d = summary["speech_seconds"]
    text = f"""# Demo speech corpus (synthetic)

A small Mandarin / English / Mandarin-English code-switched ASR corpus for tests, examples and
tiny CPU training runs. All audio is synthesized with espeak-ng; nothing is recorded from people.

Regenerate (deterministic for a given seed; needs `espeak-ng`, `sox`, `soundfile`, `sentencepiece`,
`rapidfuzz`):

    python tools/make_demo_corpus.py --seed {args.seed}

## Contents

| split | utterances | free zh/en/cs | template zh/en/cs | noise-only | minutes |
|---|---|---|---|---|---|
{row("train")}
{row("dev")}
{row("test")}

Three subsets (manifest field `subset`):
- `free` — sentences from compositional generators (`tools/demo_text.py`) over hand-written word
  lists (`tools/demo_lexicon.py`: common Mandarin words by role, generated Chinese names, English
  words with verb forms, numbers, times, places, cities). Every sentence has a `frame` (generator +
  optional constituents used, e.g. `zh.do|time|adv|num`); {100 * 0.3:.0f} % of the frames are held out,
  and dev/test free sentences use only held-out frames — they are new sentence structures, not new
  fillings of training sentences ({summary['train_frames']} frames in train). No dev/test sentence is a
  near-duplicate of a train sentence (rapidfuzz ratio < 85).
- `template` — the previous corpus's templates (60 zh, 60 en, 40 code-switched) filled with
  people, cities, companies, technical terms and times; dev/test are new fillings (entities
  recur). Reported separately: it measures recall of known structures, not generalisation.
- `noise` — noise-only clips, transcript `""`: white, pink, brown, hum (50/60 Hz), digital
  silence, quiet room tone; 0.8–5.5 s; RMS −40…−14 dBFS (room tone −60…−40 dBFS). Each clip is a
  fresh draw, not a crop of `noise/`.

Vocabulary coverage (share of dev/test scoring units seen in the train transcripts; Chinese
characters, English words, both):

| split/subset | zh characters | en words | all |
|---|---|---|---|
{cov_rows}

{summary['distinct_chinese_chars']} distinct Chinese characters and {summary['distinct_english_words']} distinct English words over all splits.

- Speech duration {d['min']}–{d['max']} s (mean {d['mean']} s), at most 5.5 s (the tiny preset's
  largest bucket); 16 kHz mono Ogg/Opus (libsndfile compression level {args.compression}, about
  13 kbit/s) in `audio/{{train,dev,test}}/NNNNN.ogg`, subsets interleaved.
- Manifests `train.jsonl`, `dev.jsonl`, `test.jsonl`: FunASR ChatML lines
  (`messages` = system `You are a helpful assistant.` / user `<instruction><|startofspeech|>!audio/...<|endofspeech|>` /
  assistant transcript), audio paths relative to the jsonl file, plus `key`, `speech_length`
  (10 ms fbank frames, Kaldi snip-edges count), `text_length` (tokens of `tokenizer.model`),
  `language` (`zh` | `en` | `cs`), `hotwords` (names and cities in the transcript),
  `subset`, `frame` and `tts` (voice, speed, pitch; for noise clips the kind and RMS).
  Instructions: `语音转写：` mostly, also `语音转写成中文：`, `语音转写成英文：`, `Speech transcription:`,
  `Transcribe speech into Chinese:`.
- Transcripts: no punctuation; English lower case except names and "I" (template sentences keep
  their capitals); no spaces between Chinese characters, single spaces around and between Latin
  words; numbers as words (三百二十, twenty).
- `noise/`: {noises}; 16 kHz Opus, for additive-noise augmentation in training.
- `tokenizer.model`: sentencepiece unigram, {summary['tokenizer_vocab_size']} pieces, trained on the
  train transcripts plus the prompt strings: every Chinese character is its own piece, English
  words are whole-word or sub-word pieces starting at a word boundary, so unseen English words can
  be spelled; character coverage 1.0, byte fallback, identity normalization, no dummy prefix
  (lossless), user-defined symbols `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`,
  `<|startofspeech|>`, `<|endofspeech|>` and newline; the fixed prompt phrases (the system prompt,
  `system` / `user` / `assistant`, the instructions, `一遍解码结果：`, the hotword-prompt phrases) are one
  piece each, as in Qwen's vocabulary, so a training row is ~45 tokens rather than ~70. The tiny
  preset's LLM and CTC head use it.
  Load it with `funasr_jax.text.tokenizer.load_tokenizer("data/demo/tokenizer.model")`.
- `summary.json`: these figures, machine-readable.

Voices and settings (the same pools and ranges in every split, drawn independently per
utterance): Chinese runs with espeak-ng `cmn-latn-pinyin`, Latin runs inside Chinese sentences
with `cmn` (English read by the Mandarin voice), English sentences with `en-us`, `en-gb`,
`en-gb-x-rp`, `en-us-nyc`, `en-gb-scotland`, `en-029`, `en-gb-x-gbclan`, `en-gb-x-gbcwmd`; variants
none, f1–f5, m1–m7, klatt, klatt3; speed 160–230 (Mandarin, syllables/min) or 130–190 (English,
words/min), up to 40 % faster when a sentence would exceed 5.5 s; pitch 30–70; leading and trailing
silence 0.05–0.5 s each; peak level 0.2–0.95.

## Licence

Synthetic data generated by this repository's script from hand-written word lists and templates;
it may be used under the same terms as the repository. espeak-ng (GPL-3.0) was used as a tool
only; its output is not covered by its licence.
"""
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
