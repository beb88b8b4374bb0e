"""Synthesize the bundled demo speech corpus (Mandarin, English, Mandarin-English code-switching).

    python tools/make_demo_corpus.py            # writes data/demo/ (seed 0)
    python tools/make_demo_corpus.py --out /tmp/demo --seed 1 --jobs 2

Sentences come from templates x entity lists (people, places, companies, technical terms), so
dev/test sentences are new combinations of entities that also occur in train. Speech is made with
espeak-ng (varied voices, variants, speed, pitch), resampled to 16 kHz mono with sox, trimmed,
gain-varied and stored as Ogg/Opus. Output:

    data/demo/{train,dev,test}.jsonl   FunASR ChatML manifests (audio paths relative to the jsonl)
    data/demo/audio/{split}/NNNNN.ogg  16 kHz mono Opus
    data/demo/noise/*.ogg              noises for augmentation (white, pink, brown, babble, hum)
    data/demo/tokenizer.model          sentencepiece model trained on the train transcripts
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
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT as SYSTEM_PROMPT  # noqa: E402

SAMPLE_RATE = 16000
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|startofspeech|>", "<|endofspeech|>"]
# Instruction strings of fun-asr-nano.md §6.3, by language of the utterance.
INSTRUCTIONS = {
    "zh": [("语音转写：", 0.6), ("语音转写成中文：", 0.2), ("Speech transcription:", 0.1),
           ("Transcribe speech into Chinese:", 0.1)],
    "en": [("语音转写：", 0.6), ("语音转写成英文：", 0.25), ("Speech transcription:", 0.15)],
    "cs": [("语音转写：", 0.8), ("Speech transcription:", 0.2)],
}
# Extra strings the tokenizer must cover without byte fallback (prompts of §6.3).
PROMPT_STRINGS = [
    SYSTEM_PROMPT, "system", "user", "assistant",
    "语音转写：", "语音转写成中文：", "语音转写成英文：", "语音转写成日文：", "语音转写，不进行文本规整：",
    "Speech transcription:", "Transcribe speech into Chinese:",
    "Speech transcription without text normalization:",
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。",
    "**上下文信息：**", "热词列表：[a, b, c]", "请结合下面提供的上下文信息", "历史转写结果", "一遍解码结果",
    # so paths, numbers and ASCII punctuation are single pieces rather than byte fallbacks
    "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "!audio/train/00000.ogg",
]

# ----------------------------------------------------------------------------- entity lists
ZH_PEOPLE = [
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏", "徐强", "孙悦",
    "马超", "朱琳", "胡军", "郭涛", "何平", "高明", "林峰", "罗欣", "郑凯", "梁晨", "谢婷", "宋佳",
    "唐亮", "韩雪", "冯刚", "曹阳", "彭博", "曾华", "田甜", "董梅", "袁飞", "潘雨", "蒋文", "余浩",
    "杜鹏", "叶青", "魏东", "苏婉",
]
ZH_CITIES = [
    "北京", "上海", "杭州", "深圳", "广州", "成都", "重庆", "南京", "武汉", "西安", "苏州", "天津",
    "长沙", "郑州", "青岛", "厦门", "大连", "沈阳", "哈尔滨", "昆明", "贵阳", "南宁", "合肥", "济南",
    "福州", "宁波", "无锡", "兰州", "乌鲁木齐", "拉萨", "香港", "澳门",
]
ZH_COMPANIES = [
    "阿里巴巴", "腾讯", "华为", "百度", "字节跳动", "小米", "京东", "美团", "网易", "拼多多", "滴滴",
    "联想", "比亚迪", "海尔", "格力", "中兴", "大疆", "蔚来", "理想汽车", "招商银行", "中国移动",
    "中国银行", "顺丰", "携程", "快手",
]
ZH_TECH = [
    "人工智能", "机器学习", "深度学习", "语音识别", "神经网络", "大模型", "数据库", "服务器", "云计算",
    "区块链", "自动驾驶", "芯片", "操作系统", "编程语言", "推荐算法", "搜索引擎", "机器翻译", "图像识别",
    "自然语言处理", "知识图谱", "强化学习", "量子计算", "物联网", "网络安全", "数据中心", "分布式系统",
    "虚拟现实", "计算机视觉", "语音合成", "边缘计算",
]
ZH_TIMES = [
    "明天", "后天", "今天下午", "明天上午", "下周一", "下周三", "周五晚上", "这个周末", "下个月",
    "今天晚上", "月底", "年底之前", "早上八点", "中午", "下午三点", "晚上七点", "星期二", "下周末",
    "明天早上", "下午",
]
EN_PEOPLE = [
    "Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Henry", "Isabella", "Jack", "Kevin",
    "Laura", "Michael", "Nancy", "Oliver", "Patricia", "Rachel", "Samuel", "Thomas", "Victoria",
    "William", "Sophia", "Daniel", "Olivia", "James", "Emily", "Benjamin", "Chloe", "Lucas", "Hannah",
    "Ethan", "Natalie", "Ryan", "Julia", "Andrew", "Megan", "Jessica", "Brian", "Sarah", "Peter",
]
EN_CITIES = [
    "London", "Paris", "Berlin", "Tokyo", "Seattle", "Boston", "Chicago", "Toronto", "Sydney",
    "Singapore", "Amsterdam", "Madrid", "Dublin", "Zurich", "Vienna", "Munich", "Austin", "Denver",
    "Vancouver", "Melbourne", "San Francisco", "New York", "Los Angeles", "Stockholm", "Oslo",
    "Barcelona", "Edinburgh", "Lisbon", "Prague", "Helsinki",
]
EN_COMPANIES = [
    "Google", "Microsoft", "Amazon", "Apple", "Nvidia", "Intel", "Meta", "Netflix", "Tesla", "IBM",
    "Oracle", "Salesforce", "Adobe", "Samsung", "Sony", "Spotify", "Uber", "Airbnb", "OpenAI",
    "Alibaba", "Tencent", "Huawei", "Siemens", "Philips", "Shopify",
]
EN_TECH = [
    "Kubernetes", "PyTorch", "TensorFlow", "Docker", "Python", "JavaScript", "TypeScript", "Linux",
    "GitHub", "Redis", "Kafka", "PostgreSQL", "MongoDB", "React", "Android", "JAX", "CUDA",
    "Terraform", "Jenkins", "Elasticsearch", "Spark", "Hadoop", "Rust", "Golang", "Swift", "Kotlin",
    "GraphQL", "Nginx", "Ubuntu", "Ansible", "Prometheus", "Grafana", "Jupyter", "WebAssembly",
]
EN_TIMES = [
    "Friday", "Monday", "Tuesday", "Wednesday", "Thursday", "Saturday", "Sunday", "tomorrow",
    "tonight", "next week", "next month", "this weekend", "tomorrow morning", "Monday morning",
    "Friday afternoon", "the end of the month", "noon", "next Tuesday", "this afternoon",
    "Thursday evening",
]

# slot name -> (filler list, is a hotword category)
SLOTS = {
    "pz": (ZH_PEOPLE, True), "cz": (ZH_CITIES, True), "oz": (ZH_COMPANIES, True), "tz": (ZH_TECH, True),
    "dz": (ZH_TIMES, False), "pe": (EN_PEOPLE, True), "ce": (EN_CITIES, True),
    "oe": (EN_COMPANIES, True), "te": (EN_TECH, True), "de": (EN_TIMES, False),
}

# ----------------------------------------------------------------------------- templates
# (family, template); a digit after the slot name asks for a second, different filler.
ZH_TEMPLATES = [
    ("places", "{pz}{dz}去{cz}参加{oz}的会议"), ("names", "请{pz}把{tz}的报告发给{pz2}"),
    ("names", "{pz}和{pz2}{dz}一起吃饭"), ("names", "我{dz}要给{pz}打电话"),
    ("companies", "{pz}是{oz}的工程师"), ("places", "{pz}在{cz}工作了三年"),
    ("places", "{pz}{dz}要去{cz}出差"), ("companies", "你认识{oz}的{pz}吗"),
    ("tech", "{pz}负责{tz}项目"), ("names", "请通知{pz}{dz}开会"),
    ("places", "{pz}的航班{dz}到达{cz}"), ("companies", "{oz}在{cz}开了新的办公室"),
    ("tech", "{oz}发布了新的{tz}产品"), ("tech", "{oz}正在招聘{tz}工程师"),
    ("tech", "我们{dz}讨论{tz}的问题"), ("places", "{cz}的天气怎么样"),
    ("places", "从{cz}到{cz2}要多长时间"), ("places", "我想订一张去{cz}的机票"),
    ("meeting", "{dz}的会议改到{cz}举行"), ("tech", "{pz}推荐我学习{tz}"),
    ("tech", "{tz}是未来的发展方向"), ("companies", "{oz}和{oz2}达成了合作"),
    ("companies", "{oz}的股价今天上涨了"), ("companies", "{pz}加入了{oz}的研究团队"),
    ("names", "这份{tz}报告由{pz}完成"), ("names", "{pz}{dz}在{cz}做演讲"),
    ("places", "帮我查一下{cz}的酒店"), ("companies", "请把文件发给{oz}的{pz}"),
    ("tech", "{pz}说{tz}很有意思"), ("tech", "{oz}在{tz}方面投入很大"),
    ("tech", "我们团队正在研究{tz}"), ("names", "{pz}的生日是{dz}"),
    ("places", "{pz}在{cz}买了房子"), ("places", "{cz}有很多好吃的"),
    ("places", "{pz}想去{cz}旅游"), ("companies", "{oz}的总部在{cz}"),
    ("names", "{pz}问{pz2}什么时候有空"), ("names", "提醒我{dz}联系{pz}"),
    ("places", "{pz}{dz}回{cz}"), ("companies", "{oz}的新手机很受欢迎"),
    ("tech", "老师讲了{tz}的基本原理"), ("tech", "这门课主要介绍{tz}"),
    ("names", "{pz}和{pz2}在{oz}认识"), ("places", "{cz}的地铁很方便"),
    ("meeting", "请帮我预约{dz}的会议室"), ("meeting", "{pz}{dz}要交项目报告"),
    ("meeting", "我们和{oz}{dz}开视频会议"), ("places", "{pz}请了三天假去{cz}"),
    ("companies", "{oz}的年会在{cz}举办"), ("tech", "{pz}是{tz}方面的专家"),
    ("tech", "我们需要更多{tz}的数据"), ("places", "{pz}今年考上了{cz}的大学"),
    ("tech", "{oz}推出了基于{tz}的服务"), ("meeting", "{pz}把会议推迟到{dz}"),
    ("meeting", "请{pz}准备{dz}的材料"), ("companies", "{oz}的客服电话打不通"),
    ("places", "{pz}每天坐高铁去{cz}上班"), ("meeting", "大家{dz}在{cz}见面"),
    ("tech", "{pz}发现了{tz}系统的问题"), ("companies", "{pz}和{oz}签了合同"),
]
EN_TEMPLATES = [
    ("names", "Please send the {te} report to {pe} before {de}"), ("places", "{pe} is flying to {ce} next week"),
    ("companies", "{pe} works as an engineer at {oe}"), ("tech", "We use {te} to train our models"),
    ("names", "Can you ask {pe} to call me before {de}"), ("meeting", "The meeting with {oe} has moved to {de}"),
    ("companies", "{oe} is opening a new office in {ce}"), ("tech", "{pe} and {pe2} will present the {te} demo"),
    ("places", "How is the weather in {ce} today"), ("places", "Book a flight from {ce} to {ce2}"),
    ("tech", "{oe} just released a new version of {te}"), ("tech", "Our team migrated the service to {te}"),
    ("tech", "{pe} fixed the {te} bug last night"), ("names", "Remind me to email {pe} by {de}"),
    ("places", "{pe} moved from {ce} to {ce2} last year"), ("tech", "The {te} cluster went down again this morning"),
    ("companies", "{oe} signed a contract with {oe2}"), ("tech", "{pe} gave a great talk about {te} in {ce}"),
    ("places", "I need a hotel in {ce} for three nights"), ("companies", "{pe} will join {oe} as a data scientist"),
    ("tech", "Please review the {te} pull request before {de}"), ("places", "{pe} is the new manager of the {ce} office"),
    ("places", "The conference in {ce} starts next month"), ("companies", "{oe} hired {pe} to lead the {te} team"),
    ("meeting", "Let us schedule a call with {pe} for {de}"), ("tech", "{pe} recommended learning {te} first"),
    ("tech", "Our {te} pipeline needs more memory"), ("names", "{pe} and {pe2} had lunch in {ce}"),
    ("companies", "The stock price of {oe} went up today"), ("companies", "{oe} is hiring {te} developers in {ce}"),
    ("names", "Send the slides to {pe} and {pe2}"), ("places", "{pe} is driving from {ce} to {ce2}"),
    ("tech", "We should upgrade {te} before {de}"), ("tech", "{pe} wrote the documentation for {te}"),
    ("companies", "The {oe} team will visit us before {de}"), ("places", "{pe} is on vacation in {ce}"),
    ("tech", "Ask {pe} whether the {te} tests passed"), ("companies", "{oe} and {oe2} are competing in the cloud market"),
    ("places", "My flight to {ce} was delayed by two hours"), ("tech", "{pe} organized a workshop on {te}"),
    ("meeting", "Please tell {pe} that the meeting is canceled"), ("meeting", "{pe} will finish the report by {de}"),
    ("tech", "We deployed the new {te} version yesterday"), ("companies", "{oe} bought a small startup in {ce}"),
    ("places", "{pe} grew up in {ce}"), ("companies", "Could you introduce me to {pe} from {oe}"),
    ("tech", "The {te} server in {ce} is very slow"), ("tech", "{pe} prefers {te} over {te2}"),
    ("places", "The train to {ce} leaves at noon"), ("names", "{pe} called {pe2} about the budget"),
    ("meeting", "Let us meet {pe} at the {oe} office"), ("tech", "{pe} is writing a book about {te}"),
    ("companies", "{oe} reported strong sales in {ce}"), ("meeting", "Please move my appointment to {de}"),
    ("names", "{pe} lost the keys to the {ce} apartment"), ("companies", "The new {oe} phone is very popular"),
    ("tech", "{pe} teaches {te} at the university"), ("places", "Our office in {ce} will be closed on Monday"),
    ("places", "{pe} and {pe2} are planning a trip to {ce}"), ("tech", "Tell {pe} to check the {te} logs before {de}"),
]
CS_TEMPLATES = [
    ("tech", "我们用{te}训练模型"), ("places", "{pz}明天去{ce}参加{oe}的会议"),
    ("names", "请把{te}的report发给{pe}"), ("tech", "这个bug要在{te}上修复"),
    ("companies", "{pz}在{oe}做{te}开发"), ("tech", "我们的服务已经迁移到{te}了"),
    ("places", "{pe}下周来{cz}开会"), ("tech", "{oe}发布了新的{te}版本"),
    ("companies", "帮我约一下{oe}的{pe}"), ("tech", "这个{te}的demo做得很好"),
    ("names", "{pz}的presentation讲得很清楚"), ("meeting", "我们{dz}和{oe}开一个meeting"),
    ("tech", "请大家review一下{te}的代码"), ("tech", "{pz}在学习{te}和{te2}"),
    ("companies", "{oe}在{cz}有一个很大的团队"), ("meeting", "这个feature{dz}上线"),
    ("names", "{pe}是我们的project manager"), ("tech", "我把{te}的文档发到群里了"),
    ("companies", "{pz}拿到了{oe}的offer"), ("names", "今天的deadline是{pe}定的"),
    ("tech", "{te}的性能比{te2}好"), ("places", "{pz}在{ce}读书"),
    ("tech", "我们用{te}部署这个服务"), ("companies", "{oe}的面试有三轮"),
    ("names", "请{pe}把slides发给我"), ("tech", "这个model在{te}上跑得很快"),
    ("names", "{pz}和{pe}一起写了这篇paper"), ("meeting", "{dz}的call取消了"),
    ("companies", "{pz}负责{oe}的项目"), ("tech", "我们需要一个懂{te}的工程师"),
    ("places", "{pe}刚从{ce}回来"), ("companies", "{oe}和{oz}在{cz}合作"),
    ("tech", "这个{te}的API很好用"), ("tech", "{pz}在{te}上提交了代码"),
    ("places", "我下周要去{ce}见{pe}"), ("tech", "请用{te}重新跑一下实验"),
    ("companies", "{oe}的app最近更新了"), ("tech", "{pz}建议我们用{te}"),
    ("meeting", "会议的summary请发给{pe}"), ("places", "{pz}{dz}在{ce}的{oe}办公室"),
]
TEMPLATES = {"zh": ZH_TEMPLATES, "en": EN_TEMPLATES, "cs": CS_TEMPLATES}
LANG_SHARE = {"zh": 0.40, "en": 0.35, "cs": 0.25}

# ----------------------------------------------------------------------------- voices
ZH_VARIANTS = ["", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt3"]
EN_VOICES = ["en-us", "en-gb-x-rp", "en-gb", "en-us-nyc", "en-gb-scotland", "en-029", "en-gb-x-gbclan",
             "en-gb-x-gbcwmd"]
EN_VARIANTS = ZH_VARIANTS
SPEED = {"zh": (160, 230), "cs": (160, 230), "en": (130, 190)}  # espeak -s (cmn counts syllables)
PITCH = (30, 70)

_SLOT_RE = re.compile(r"\{([a-z]{2})(\d?)\}")
_CJK = r"\u4e00-\u9fff"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[A-Za-z]+")


def normalize_text(text: str) -> str:
    """No spaces between Chinese characters, single spaces around/between Latin words."""
    tokens = _TOKEN_RE.findall(text)
    out = ""
    for tok in tokens:
        if out and not (_is_cjk(out[-1]) and _is_cjk(tok[0])):
            out += " "
        out += tok
    return out


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


@dataclass
class Sentence:
    text: str
    language: str
    subset: str
    hotwords: list[str]


def fill_template(template: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    chosen: dict[str, list[str]] = collections.defaultdict(list)
    hotwords: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        fillers, is_hot = SLOTS[name]
        while True:
            w = fillers[int(rng.integers(len(fillers)))]
            if w not in chosen[name]:
                break
        chosen[name].append(w)
        if is_hot and w not in hotwords:
            hotwords.append(w)
        return " " + w + " " if w[0].isascii() else w

    filled = _SLOT_RE.sub(sub, template)
    return filled, hotwords


def make_sentences(rng: np.random.Generator, n_total: int) -> list[Sentence]:
    counts = {lang: int(round(share * n_total)) for lang, share in LANG_SHARE.items()}
    counts["zh"] += n_total - sum(counts.values())
    out: list[Sentence] = []
    seen: set[str] = set()
    for lang, n in counts.items():
        templates = TEMPLATES[lang]
        made = 0
        while made < n:
            family, tpl = templates[int(rng.integers(len(templates)))]
            filled, hot = fill_template(tpl, rng)
            text = normalize_text(filled)
            if lang == "en":
                text = text[0].upper() + text[1:]
            if text in seen:
                continue
            seen.add(text)
            out.append(Sentence(text, lang, family, hot))
            made += 1
    return out


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
    runs = re.findall(rf"[{_CJK}]+|[A-Za-z ]+", text)
    return [(r.strip(), _is_cjk(r[0])) for r in runs if r.strip()]


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


def synthesize(job: Job) -> np.ndarray:
    suffix = f"+{job.variant}" if job.variant else ""
    if job.language == "en":
        pieces = [_trim(_espeak(job.text, job.voice + suffix, job.speed, job.pitch))]
    else:
        pieces = []
        for run, is_zh in _segments(job.text):
            voice = ("cmn-latn-pinyin" if is_zh else "cmn") + suffix
            pieces.append(_trim(_espeak(run, voice, job.speed, job.pitch)))
    gap = np.zeros(int(job.gap * SAMPLE_RATE), np.float32)
    body = pieces[0]
    for p in pieces[1:]:
        body = np.concatenate([body, gap, p])
    x = np.concatenate([np.zeros(int(job.lead * SAMPLE_RATE), np.float32), body,
                        np.zeros(int(job.tail * SAMPLE_RATE), np.float32)])
    return (x * (job.peak / max(np.abs(x).max(), 1e-6))).astype(np.float32)


def make_job(s: Sentence, rng: np.random.Generator) -> Job:
    if s.language == "en":
        voice = EN_VOICES[int(rng.integers(len(EN_VOICES)))]
        variant = EN_VARIANTS[int(rng.integers(len(EN_VARIANTS)))]
    else:
        voice = "cmn"
        variant = ZH_VARIANTS[int(rng.integers(len(ZH_VARIANTS)))]
    lo, hi = SPEED[s.language]
    return Job(text=s.text, language=s.language, voice=voice, variant=variant,
               speed=int(rng.integers(lo, hi + 1)), pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
               lead=float(rng.uniform(0.05, 0.3)), tail=float(rng.uniform(0.05, 0.3)),
               gap=float(rng.uniform(0.03, 0.12)), peak=float(rng.uniform(0.3, 0.95)))


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
            text = normalize_text(fill_template(tpl, rng)[0])
            job = make_job(Sentence(text, "en" if text[0].isascii() else "zh", "", []), rng)
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
    cjk_pair = re.compile(rf"(?<=[{_CJK}])(?=[{_CJK}])")
    extra = [p for s in PROMPT_STRINGS for p in s.split("\n") if p]
    sentences = [cjk_pair.sub(delim, t) for t in list(texts) + extra * 3]
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, model_type="unigram",
        vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True,
        user_defined_symbols=SPECIAL_TOKENS + ["\n"], pretokenization_delimiter=delim,
        # Lossless text: no NFKC (keeps full-width ：，), no dummy "▁" prefix so that encoding
        # pieces separately and concatenating equals encoding the joined string (as with Qwen's BPE).
        normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, num_threads=2, minloglevel=2,
        hard_vocab_limit=False,
    )
    with open(model_path, "wb") as f:
        f.write(proto.getvalue())


# ----------------------------------------------------------------------------- main
def split_sentences(sentences: list[Sentence], rng: np.random.Generator, n_dev: int, n_test: int):
    """Stratified by language; every sentence text lands in exactly one split."""
    splits = {"train": [], "dev": [], "test": []}
    total = len(sentences)
    for lang in LANG_SHARE:
        group = [s for s in sentences if s.language == lang]
        order = rng.permutation(len(group))
        nd = int(round(n_dev * len(group) / total))
        nt = int(round(n_test * len(group) / total))
        splits["dev"] += [group[i] for i in order[:nd]]
        splits["test"] += [group[i] for i in order[nd:nd + nt]]
        splits["train"] += [group[i] for i in order[nd + nt:]]
    return splits


def pick_instruction(lang: str, rng: np.random.Generator) -> str:
    options = INSTRUCTIONS[lang]
    p = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=p / p.sum()))][0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "demo"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--compression", type=float, default=0.98,
                    help="libsndfile Opus compression level (0.98 ~ 13 kbit/s speech)")
    args = ap.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found on PATH (apt-get install -y espeak-ng sox)")

    t0 = time.time()
    out = os.path.abspath(args.out)
    for sub in ("audio", "noise"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    sentences = make_sentences(rng, args.train + args.dev + args.test)
    splits = split_sentences(sentences, rng, args.dev, args.test)

    # Draw every random choice up front (sequentially) so parallel synthesis stays deterministic.
    plan = []
    for split in ("train", "dev", "test"):
        os.makedirs(os.path.join(out, "audio", split), exist_ok=True)
        for i, s in enumerate(splits[split]):
            plan.append((split, i, s, make_job(s, rng), pick_instruction(s.language, rng)))

    def render(item):
        split, i, s, job, _ = item
        x = synthesize(job)
        rel = f"audio/{split}/{i:05d}.ogg"
        write_opus(os.path.join(out, rel), x, args.compression)
        back, sr = sf.read(os.path.join(out, rel), dtype="float32")
        assert sr == SAMPLE_RATE and len(back) == len(x), (rel, sr, len(back), len(x))
        return rel, len(back)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        rendered = list(ex.map(render, plan))

    import sentencepiece as spm
    train_texts = [s.text for s in splits["train"]]
    train_tokenizer(train_texts, os.path.join(out, "tokenizer.model"), args.vocab_size, args.seed)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))

    stats = collections.defaultdict(lambda: collections.Counter())
    durations = collections.defaultdict(float)
    for split in ("train", "dev", "test"):
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for (sp_split, i, s, job, instr), (rel, n) in zip(plan, rendered):
                if sp_split != split:
                    continue
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
                    "tts": {"voice": job.voice + (f"+{job.variant}" if job.variant else ""),
                            "speed": job.speed, "pitch": job.pitch},
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                stats[split][s.language] += 1
                durations[split] += n / SAMPLE_RATE

    noises = make_noises(os.path.join(out, "noise"), rng, args.compression)
    wall = time.time() - t0

    all_text = [s.text for s in sentences]
    zh_chars = sorted({c for t in all_text for c in t if _is_cjk(c)})
    en_words = sorted({w for t in all_text for w in re.findall(r"[A-Za-z]+", t)})
    all_durs = [n / SAMPLE_RATE for _, n in rendered]
    summary = {
        "seed": args.seed,
        "counts": {k: dict(v) for k, v in stats.items()},
        "hours": {k: round(v / 3600, 3) for k, v in durations.items()},
        "duration_s": {"min": round(min(all_durs), 2), "mean": round(float(np.mean(all_durs)), 2),
                       "max": round(max(all_durs), 2)},
        "distinct_chinese_chars": len(zh_chars), "distinct_english_words": len(en_words),
        "tokenizer_vocab_size": sp.get_piece_size(),
        "noises": noises, "wall_s": round(wall, 1),
    }
    write_readme(out, summary, args)
    print(json.dumps(summary, ensure_ascii=False, indent=1))


def write_readme(out: str, summary: dict, args) -> None:
    c = summary["counts"]
    rows = "\n".join(
        f"| {split} | {sum(c[split].values())} | {c[split].get('zh', 0)} | {c[split].get('en', 0)} | "
        f"{c[split].get('cs', 0)} | {summary['hours'][split] * 60:.1f} |" for split in ("train", "dev", "test"))
    noises = ", ".join(f"`{n}` ({d:.0f} s)" for n, d in summary["noises"])
    d = summary["duration_s"]
    text = f"""# Demo speech corpus (synthetic)

A small Mandarin / English / Mandarin-English code-switched ASR corpus for tests, examples and
tiny CPU training runs. All audio is synthesized with espeak-ng; nothing is recorded from people.

Regenerate (deterministic for a given seed; needs `espeak-ng`, `sox`, `soundfile`, `sentencepiece`):

    python tools/make_demo_corpus.py --seed {args.seed}

## Contents

| split | utterances | zh | en | cs | minutes |
|---|---|---|---|---|---|
{rows}

- Utterance duration {d['min']}–{d['max']} s (mean {d['mean']} s); 16 kHz mono Ogg/Opus
  (libsndfile compression level {args.compression}, about 13 kbit/s) in `audio/{{train,dev,test}}/NNNNN.ogg`.
- Manifests `train.jsonl`, `dev.jsonl`, `test.jsonl`: FunASR ChatML lines
  (`messages` = system `You are a helpful assistant.` / user `<instruction><|startofspeech|>!audio/...<|endofspeech|>` /
  assistant transcript), audio paths relative to the jsonl file, plus `key`, `speech_length`
  (10 ms fbank frames, Kaldi snip-edges count), `text_length` (tokens of `tokenizer.model`),
  `language` (`zh` | `en` | `cs`), `hotwords` (entity strings occurring in the transcript),
  `subset` (template family: names, places, companies, tech, meeting) and `tts` (voice, speed, pitch).
  Instructions: `语音转写：` mostly, also `语音转写成中文：`, `语音转写成英文：`, `Speech transcription:`,
  `Transcribe speech into Chinese:`.
- Transcripts: no punctuation, natural case; no spaces between Chinese characters, single spaces
  around and between Latin words. {summary['distinct_chinese_chars']} distinct Chinese characters,
  {summary['distinct_english_words']} distinct English words.
- Sentences are templates (60 zh, 60 en, 40 code-switched) filled with people, cities, companies,
  technical terms and times; no dev/test sentence text occurs in train (entities recur).
- `noise/`: {noises}; 16 kHz Opus, for additive-noise augmentation.
- `tokenizer.model`: sentencepiece unigram, {summary['tokenizer_vocab_size']} pieces, trained on the
  train transcripts plus the prompt strings; character coverage 1.0, byte fallback, identity
  normalization, no dummy prefix (lossless), user-defined symbols `<|im_start|>`, `<|im_end|>`,
  `<|endoftext|>`, `<|startofspeech|>`, `<|endofspeech|>` and newline. Load it with
  `funasr_jax.text.tokenizer.load_tokenizer("data/demo/tokenizer.model")`.

Voices: Chinese runs with espeak-ng `cmn-latn-pinyin`, Latin runs inside Chinese sentences with `cmn`
(English read by the Mandarin voice), English sentences with `en-us`, `en-gb`, `en-gb-x-rp`,
`en-us-nyc`, `en-gb-scotland`, `en-029`, `en-gb-x-gbclan`, `en-gb-x-gbcwmd`; variants
f1–f5, m1–m7, klatt; speed 160–230 (Mandarin, syllables/min) or 130–190 (English) words/min; pitch 30–70.

## Licence

Synthetic data generated by this repository's script from hand-written templates; it may be used
under the same terms as the repository. espeak-ng (GPL-3.0) was used as a tool only; its output is
not covered by its licence.
"""
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
