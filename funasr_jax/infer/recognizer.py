"""Batch speech recognition with a loaded model: LLM greedy decoding or CTC greedy decoding.

    rec = Recognizer.from_checkpoint("runs/sft4")
    rec.transcribe(["a.wav", "b.flac"])          # -> ["...", "..."]

Waveforms go through `Recognizer.recognize`: each is cut into segments of at most
`max_segment_s` seconds at low-energy frames (`audio.activity.plan_segments`), segments whose
frames all stay below `gate_dbfs` (digital silence, near-silence) are dropped without running the
model, the rest are decoded in length-sorted batches together with the other files' segments,
and each file's segment texts are joined in order (`text.join.join_texts`). A silent file gives
"". The LLM emits at most ceil(tokens_per_second x seconds) + token_slack new tokens per segment
(besides the caller's max_new_tokens), so noise cannot babble for long.

Audio is bucketed to a few static LFR lengths (multiples of `frame_bucket`) so the jitted
encoder and generator compile once per bucket, not once per file.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from funasr_jax.audio.activity import frame_grid, speech_segments
from funasr_jax.audio.frontend import FrontendConfig, extract_features, load_cmvn
from funasr_jax.audio.io import load_audio
from funasr_jax.data.rows import pad_batch, pad_feats
from funasr_jax.decode.aed_search import aed_decode
from funasr_jax.decode.beam import beam_search
from funasr_jax.decode.generate import CausalDecoder, greedy_generate
from funasr_jax.io.checkpoint import META_FILE, TRAIN_CONFIG_FILE, CheckpointError, LoadedModel, load_model
from funasr_jax.io.funasr_torch import SIDECAR_FILE, read_sidecar
from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID
from funasr_jax.models.config import FunASRConfig, audio_token_count
from funasr_jax.models.ctc_head import ctc_greedy
from funasr_jax.models.funasr import FunASRNano, aed_module, llm_module
from funasr_jax.text.hotwords import HotwordIndex
from funasr_jax.text.join import join_texts
from funasr_jax.text.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    build_prompt,
    instruction_text,
    with_context,
    with_first_pass,
)
from funasr_jax.text.tokenizer import CTCVocabulary, load_tokenizer

DEFAULT_FRONTEND = FrontendConfig()  # no CMVN
DEFAULT_MAX_PERIODICITY = 0.95  # a segment repeating itself this exactly is a steady tone, not speech (audio.activity)
DEFAULT_GATE_DBFS = -50.0  # frame RMS level (dB re full scale 1.0) speech must exceed somewhere
DEFAULT_MAX_SEGMENT_S = 30.0  # without a training run's buckets (FunASR's VAD cuts at 30 s too)
# Output bound: Fun-ASR transcripts stay well under 10 tokens per second of audio; the demo's
# fastest line takes 11.2 (31 pieces + EOS in 2.86 s, its small vocabulary splits English finely).
DEFAULT_TOKENS_PER_SECOND = 15.0
DEFAULT_TOKEN_SLACK = 8


@functools.partial(jax.jit, static_argnums=0)
def encoder_outputs(model: FunASRNano, params, feats, feat_lengths):
    """Encoder output [B, T, D_enc] (f32) and lengths [B] from features [B, T, 560] (LFR frames of
    60 ms): a batch's one encoder pass, read by the CTC head and the adaptor alike."""
    return model.apply({"params": params}, feats, feat_lengths, method=FunASRNano.encode)


@functools.partial(jax.jit, static_argnums=0)
def ctc_from_encoder(model: FunASRNano, params, enc, enc_lengths):
    """CTC log-posteriors [B, T, V_ctc] from the encoder output [B, T, D_enc]."""
    def f(module, enc, enc_lengths):
        return jax.nn.log_softmax(module.ctc_logits(enc, enc_lengths), axis=-1)

    return model.apply({"params": params}, enc, enc_lengths, method=f)


@functools.partial(jax.jit, static_argnums=0)
def embeds_from_encoder(model: FunASRNano, params, enc, enc_lengths, input_ids, audio_start, audio_tokens):
    """LLM input embeddings [B, P, D] laid out like `input_ids` (left-padded for generation), with
    the adaptor rows of the encoder output [B, T, D_enc] spliced in at
    [audio_start, audio_start + audio_tokens)."""
    def f(module, enc, enc_lengths, input_ids, audio_start, audio_tokens):
        adapted, _ = module.adapt(enc, enc_lengths)
        return module.embed_prompt(input_ids, adapted, audio_start, audio_tokens)

    return model.apply({"params": params}, enc, enc_lengths, input_ids, audio_start, audio_tokens, method=f)


def ctc_log_probs(model: FunASRNano, params, feats, feat_lengths):
    """CTC log-posteriors [B, T, V_ctc] from features [B, T, 560]: `encoder_outputs`, then
    `ctc_from_encoder`."""
    return ctc_from_encoder(model, params, *encoder_outputs(model, params, feats, feat_lengths))


def prompt_embeds(model: FunASRNano, params, feats, feat_lengths, input_ids, audio_start, audio_tokens):
    """LLM input embeddings [B, P, D] from features [B, T, 560]: `encoder_outputs`, then
    `embeds_from_encoder` (use those two to share one encoder pass with the CTC head)."""
    enc, enc_lengths = encoder_outputs(model, params, feats, feat_lengths)
    return embeds_from_encoder(model, params, enc, enc_lengths, input_ids, audio_start, audio_tokens)


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


def lfr_seconds(n_frames: int, frontend: FrontendConfig) -> float:
    """Seconds of audio `n_frames` LFR frames cover (lfr_n x frame_shift each: 60 ms by default)."""
    return n_frames * frontend.lfr_n * frontend.frame_shift_ms / 1000.0


def token_limit(seconds: float, tokens_per_second: float, slack: int) -> int:
    """The most new LLM tokens (EOS included) a transcript of `seconds` of audio may take:
    ceil(tokens_per_second x seconds) + slack (the product rounded to 1e-6 first, so float noise
    cannot add a token)."""
    return math.ceil(round(tokens_per_second * seconds, 6)) + int(slack)


def trained_max_segment_s(run_dir, frontend: FrontendConfig = DEFAULT_FRONTEND) -> float | None:
    """The longest audio a training run saw, in seconds: its largest `data.bucket_frames` edge
    (LFR frames) x the LFR frame duration; None when `run_dir` holds no `train_config.json`.
    Raises CheckpointError (naming the file) when the file is unreadable or lacks the edges."""
    f = Path(run_dir) / TRAIN_CONFIG_FILE
    if not f.is_file():
        return None
    try:
        edges = json.loads(f.read_text())["data"]["bucket_frames"]
        edge = int(max(edges))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{f}: cannot read data.bucket_frames ({type(e).__name__}: {e})") from None
    if edge < 1:
        raise CheckpointError(f"{f}: data.bucket_frames must be positive, got {edges!r}")
    return lfr_seconds(edge, frontend)


def recorded_max_segment_s(ckpt_dir, frontend: FrontendConfig = DEFAULT_FRONTEND) -> float | None:
    """The longest segment a checkpoint was made for, in seconds: its meta's
    `decoding.max_segment_s` (what a conversion carries over from a training run), else a training
    run's longest bucket (`trained_max_segment_s`); None when neither is recorded. An export to
    PyTorch carries the meta in its sidecar."""
    d = Path(ckpt_dir)
    f, side = d / META_FILE, d / SIDECAR_FILE
    if f.is_file() or side.is_file():
        try:
            meta = json.loads(f.read_text()) if f.is_file() else read_sidecar(d)
            value = (meta.get("decoding") or {}).get("max_segment_s")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise CheckpointError(f"{f}: cannot read decoding.max_segment_s ({type(e).__name__}: {e})") from None
        if value is not None:
            where = f if f.is_file() else side
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.1:
                raise CheckpointError(f"{where}: decoding.max_segment_s must be a number >= 0.1 s, got {value!r}")
            return float(value)
    return trained_max_segment_s(ckpt_dir, frontend)


def _checkpoint_dir_of(source) -> Path | None:
    """The nearest folder at or above `source` (a params directory) holding a checkpoint's META_FILE."""
    if not source:
        return None
    p = Path(source)
    for d in (p, *p.parents):
        if (d / META_FILE).is_file():
            return d
    return None


def _is_path(a) -> bool:
    return isinstance(a, (str, bytes)) or hasattr(a, "__fspath__")


@dataclass(frozen=True)
class Context:
    """Context for a prompt (`prompt.with_context`): the previous segment's transcript, passages."""

    previous: str = ""
    passages: tuple[str, ...] = ()

    def fields(self) -> dict:
        return {"previous": self.previous, "passages": tuple(self.passages)}


@dataclass
class Utterance:
    """What one decode needs: features [T, 560] and its prompt pieces."""

    feats: np.ndarray
    instruction: str
    system: str = DEFAULT_SYSTEM_PROMPT
    prev_text: str = ""
    hotwords: HotwordIndex | None = None  # retrieved against the CTC hypothesis into the prompt
    previous: str = ""                    # previous segment's transcript (contextual prompt)
    passages: tuple[str, ...] = ()        # context passages (contextual prompt)
    prefix_ids: tuple[int, ...] = ()      # tokens already emitted, forced after the assistant header


@dataclass(frozen=True)
class SegmentPosteriors:
    """One decoded segment's CTC log-posteriors [T, V_ctc] over its own T LFR frames (60 ms each)
    and its sample range [start, end) in the waveform."""

    start: int
    end: int
    log_probs: np.ndarray


@dataclass(frozen=True)
class Transcript:
    """One file's result: its text (segment texts joined), the joined CTC first-pass hypotheses
    when the prompt carried them (else None), and how many non-silent segments were decoded
    (0: the whole file was gated as silence). When `recognize` was asked for them, the CTC
    head's greedy hypotheses joined (`ctc_text`) and each decoded segment's CTC posteriors
    (`ctc_posteriors`, in order), both from the encoder pass the LLM decoded from."""

    text: str
    first_pass: str | None = None
    segments: int = 0
    ctc_text: str | None = None
    ctc_posteriors: tuple[SegmentPosteriors, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DecodedBatch:
    """One LLM decode of a batch of utterances (`Recognizer.decode_batch`), per row: `ids` the new
    token ids (after its `prefix_ids`, EOS dropped); `texts` its transcript (prefix + new tokens);
    `ctc_texts` the CTC head's greedy hypothesis (None when no hypothesis was needed);
    `first_pass` the hypotheses put in the prompts (None without `first_pass_prompt`);
    `ctc_log_probs` the CTC log-posteriors [T_b, V_ctc] of its own T_b frames (when asked for)."""

    ids: list[list[int]]
    texts: list[str]
    ctc_texts: list[str] | None = None
    first_pass: list[str] | None = None
    ctc_log_probs: list[np.ndarray] | None = None


def shares_vocabulary(tokenizer, ctc_vocab) -> bool:
    """True when the CTC labels (blank aside) are the LLM tokenizer's ids: both built on the
    same sentencepiece model (the tiny preset). Fun-ASR-Nano's CTC head uses its own tokenizer."""
    a, b = getattr(tokenizer, "path", None), getattr(getattr(ctc_vocab, "sp", None), "path", None)
    if a is None or b is None:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


class Recognizer:
    """Audio -> text with a loaded model.

    first_pass_prompt: the LLM prompt carries the CTC head's greedy hypothesis
    (`prompt.with_first_pass`), as for a model trained with `data.first_pass_prompt`.
    ctc_weight: > 0 decodes the LLM jointly with the CTC head's prefix scores
    (`decode.ctc_prefix`; needs a CTC head that shares the LLM's vocabulary).
    gate_dbfs: energy gate (dBFS, default -50): a segment in which fewer than 50 ms of 25 ms / 10 ms
      frames have an RMS level above it is silence and gives "" without running the model
      (`audio.activity`); None disables the gate. Loud noise passes it.
    max_periodicity: tone guard (default 0.95): a segment at least -10 dBFS loud whose waveform
      repeats itself at least this exactly over its whole length (`audio.activity.is_steady_tone`:
      a test tone, a full-scale square wave) is not speech and gives "" without running the model;
      None disables it.
    max_segment_s: waveforms longer than this many seconds are cut into segments no longer,
      preferably in pauses (`audio.activity.plan_segments`); default 30 s, or for a training run
      its longest bucket (`recorded_max_segment_s`, via `from_checkpoint` / `from_loaded`); None
      feeds every file whole (memory and time grow with its length).
    tokens_per_second, token_slack: the LLM emits at most ceil(tokens_per_second x seconds) +
      token_slack new tokens (EOS included) for a row of `seconds` of audio (T LFR frames x 60 ms),
      as well as at most the caller's max_new_tokens; tokens_per_second None: no audio bound.
    hotword_top_k, hotword_threshold: an utterance's `HotwordIndex` is searched with the CTC
      head's greedy hypothesis and at most `hotword_top_k` words scoring >= the threshold (None:
      the index's own) go into the prompt (`prompt.with_context`); without a CTC branch the list
      is pasted as given (the release's behaviour) when it has at most `hotword_top_k` words.
    beam, length_penalty: beam > 1 decodes with `decode.beam.beam_search` (jointly with the CTC
      prefix scores when ctc_weight > 0), hypotheses ranked by score / length ** length_penalty.
    """

    def __init__(self, cfg: FunASRConfig, params, tokenizer, ctc_vocab=None,
                 frontend: FrontendConfig = DEFAULT_FRONTEND, frame_bucket: int = 32, token_bucket: int = 16,
                 first_pass_prompt: bool = False, ctc_weight: float = 0.0,
                 gate_dbfs: float | None = DEFAULT_GATE_DBFS, max_segment_s: float | None = DEFAULT_MAX_SEGMENT_S,
                 tokens_per_second: float | None = DEFAULT_TOKENS_PER_SECOND, token_slack: int = DEFAULT_TOKEN_SLACK,
                 hotword_top_k: int = 10, hotword_threshold: float | None = None, beam: int = 1,
                 length_penalty: float = 0.0, max_periodicity: float | None = DEFAULT_MAX_PERIODICITY):
        needs_ctc = [n for n, on in (("first_pass_prompt", first_pass_prompt), ("ctc_weight", ctc_weight > 0)) if on]
        if needs_ctc and (not cfg.ctc.enabled or ctc_vocab is None):
            raise ValueError(f"{needs_ctc[0]} needs a model with the CTC branch and a CTC vocabulary")
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1), got {ctc_weight}")
        if ctc_weight > 0 and not shares_vocabulary(tokenizer, ctc_vocab):
            raise ValueError("ctc_weight > 0 (joint CTC/LLM decoding) needs a CTC vocabulary built on the LLM's "
                             "sentencepiece model; this model's CTC head has its own tokenizer")
        if max_segment_s is not None and not max_segment_s >= 0.1:
            raise ValueError(f"max_segment_s must be >= 0.1 s (or None), got {max_segment_s}")
        if tokens_per_second is not None and not tokens_per_second > 0:
            raise ValueError(f"tokens_per_second must be > 0 (or None), got {tokens_per_second}")
        if int(token_slack) < 1:
            raise ValueError(f"token_slack must be >= 1 (room for EOS), got {token_slack}")
        if int(hotword_top_k) < 1:
            raise ValueError(f"hotword_top_k must be >= 1, got {hotword_top_k}")
        if int(beam) < 1:
            raise ValueError(f"beam must be >= 1 (1 = greedy), got {beam}")
        self.beam, self.length_penalty = int(beam), float(length_penalty)
        self.hotword_top_k, self.hotword_threshold = int(hotword_top_k), hotword_threshold
        self.first_pass_prompt, self.ctc_weight = first_pass_prompt, float(ctc_weight)
        self.cfg, self.params, self.tokenizer, self.ctc_vocab = cfg, params, tokenizer, ctc_vocab
        self.frontend, self.frame_bucket, self.token_bucket = frontend, frame_bucket, token_bucket
        self.gate_dbfs, self.max_segment_s = gate_dbfs, max_segment_s
        if max_periodicity is not None and not 0.0 < max_periodicity <= 1.0:
            raise ValueError(f"max_periodicity must lie in (0, 1] (or None), got {max_periodicity}")
        self.max_periodicity = max_periodicity
        self.tokens_per_second, self.token_slack = tokens_per_second, int(token_slack)
        self.cmvn = load_cmvn(frontend.cmvn_file) if frontend.cmvn_file else None
        self.model = FunASRNano(cfg)
        self.decoder = CausalDecoder(llm_module(cfg), vocab_size=tokenizer.vocab_size)  # no id past the tokenizer

    @classmethod
    def from_checkpoint(cls, path, tokenizer_path=None, ctc_tokenizer_path=None, **kw) -> Recognizer:
        """A recognizer for `load_model(path)`; for a training run `max_segment_s` defaults to its
        longest bucket (`recorded_max_segment_s`)."""
        m = load_model(path)
        if "max_segment_s" not in kw:
            trained = recorded_max_segment_s(path, m.frontend)
            if trained is not None:
                kw["max_segment_s"] = trained
        return cls.from_loaded(m, tokenizer_path, ctc_tokenizer_path, **kw)

    @classmethod
    def from_loaded(cls, m: LoadedModel, tokenizer_path=None, ctc_tokenizer_path=None, tokenizer=None,
                    **kw) -> Recognizer:
        """A recognizer for a `load_model` result: its tokenizers, front end (CMVN), prompt and
        decoding defaults, and (for a training run, found above `m.source`) its longest bucket
        as `max_segment_s`, unless overridden."""
        if tokenizer is None:
            tok_path = tokenizer_path or m.tokenizer_path
            if tok_path is None:
                raise CheckpointError(f"{m.source}: no tokenizer recorded; pass --tokenizer")
            tokenizer = load_tokenizer(tok_path)
        ctc_path = ctc_tokenizer_path or m.ctc_tokenizer_path
        ctc = CTCVocabulary(ctc_path) if ctc_path and str(ctc_path).endswith(".model") else None
        kw.setdefault("frontend", m.frontend)
        kw.setdefault("first_pass_prompt", m.first_pass_prompt)
        if kw.get("ctc_weight") is None:
            kw["ctc_weight"] = m.ctc_weight
        if "max_segment_s" not in kw:
            run = _checkpoint_dir_of(m.source)
            trained = None if run is None else recorded_max_segment_s(run, m.frontend)
            if trained is not None:
                kw["max_segment_s"] = trained
        return cls(m.cfg, m.params, tokenizer, ctc, **kw)

    # ------------------------------------------------------------------ batching helpers

    def padded_frames(self, feats: Sequence[np.ndarray]) -> int:
        """T of a batch: the longest utterance rounded up to `frame_bucket` LFR frames."""
        return _round_up(max(len(f) for f in feats), self.frame_bucket)

    def pad_feats(self, feats: Sequence[np.ndarray]):
        """-> (feats [B, T, 560] zero-padded to `padded_frames`, lengths [B])."""
        return pad_feats(feats, self.padded_frames(feats))

    # ------------------------------------------------------------------ decoding

    def token_limits(self, n_frames: Sequence[int], max_new_tokens: int) -> np.ndarray:
        """[B] int32: new tokens each row may emit, min(max_new_tokens, `token_limit` of its
        audio: T LFR frames x 60 ms); all max_new_tokens when `tokens_per_second` is None."""
        if self.tokens_per_second is None:
            return np.full(len(n_frames), max_new_tokens, np.int32)
        return np.array([min(max_new_tokens, token_limit(lfr_seconds(int(t), self.frontend), self.tokens_per_second,
                                                         self.token_slack)) for t in n_frames], np.int32)

    def decode_llm(self, utts: Sequence[Utterance], max_new_tokens: int = 128) -> list[str]:
        """Greedy LLM transcripts for a batch of utterances (features given: no gate, no cutting;
        the output bound `token_limits` applies)."""
        return self.decode_llm_with_first_pass(utts, max_new_tokens)[0]

    def decode_llm_with_first_pass(self, utts: Sequence[Utterance], max_new_tokens: int = 128):
        """(greedy LLM transcripts, the CTC first-pass hypotheses put in their prompts or None).

        A row's transcript is its `prefix_ids` followed by what the LLM generated after them.
        One encoder pass serves the CTC head (first pass, hotwords, joint decoding) and the LLM.
        """
        d = self.decode_batch(utts, max_new_tokens)
        return d.texts, d.first_pass

    def generate_ids(self, utts: Sequence[Utterance], max_new_tokens: int = 128):
        """(new token ids per row — after its `prefix_ids`, EOS dropped —, first-pass hypotheses or None).

        Each row may emit at most its `token_limits` entry minus len(prefix_ids) (>= 1) tokens."""
        d = self.decode_batch(utts, max_new_tokens)
        return d.ids, d.first_pass

    def decode_batch(self, utts: Sequence[Utterance], max_new_tokens: int = 128, *, ctc_text: bool = False,
                     ctc_posteriors: bool = False) -> DecodedBatch:
        """Decode a batch with the LLM from one encoder pass (`encoder_outputs`): the CTC head
        (`ctc_from_encoder`: first-pass prompt, hotword retrieval, joint decoding) and the
        adaptor (`embeds_from_encoder`) both read that output.

        ctc_text / ctc_posteriors (need the CTC branch): also return each row's CTC greedy
        hypothesis / its log-posteriors [T_b, V_ctc] (`DecodedBatch`), from the same pass.
        """
        if (ctc_text or ctc_posteriors) and not self.has_ctc:
            raise ValueError("ctc_text / ctc_posteriors need a model with the CTC branch and a CTC vocabulary")
        feats = [u.feats for u in utts]
        x, lengths = self.pad_feats(feats)
        enc, enc_lengths = encoder_outputs(self.model, self.params, x, lengths)
        retrieve = self.has_ctc and any(u.hotwords is not None and len(u.hotwords) for u in utts)
        want_hyps = self.first_pass_prompt or retrieve or ctc_text
        logp = host = hyps = None
        if want_hyps or ctc_posteriors or self.ctc_weight > 0:
            logp = ctc_from_encoder(self.model, self.params, enc, enc_lengths)
        if want_hyps or ctc_posteriors:
            host = np.asarray(logp)
        if want_hyps:
            hyps = self._ctc_texts(host, lengths)
        batch = self._prompt_batch(utts, hyps)
        embeds = embeds_from_encoder(self.model, self.params, enc, enc_lengths, batch.input_ids, batch.audio_start,
                                     batch.audio_tokens)
        ids = self._generate(utts, embeds, batch.token_lengths, logp, lengths, max_new_tokens)
        texts = [" ".join(self.tokenizer.decode(list(u.prefix_ids) + new).split()) for u, new in zip(utts, ids)]
        return DecodedBatch(ids, texts, ctc_texts=hyps, first_pass=hyps if self.first_pass_prompt else None,
                            ctc_log_probs=[host[k, :int(n)] for k, n in enumerate(lengths)] if ctc_posteriors else None)

    def _prompt_batch(self, utts: Sequence[Utterance], hyps: Sequence[str] | None):
        """The left-padded generation `Batch` of `utts`' prompts (hotwords retrieved from `hyps`,
        the CTC hypotheses, which the first-pass prompt also carries); features padded as `pad_feats`."""
        feats = [u.feats for u in utts]
        instructions = [with_context(u.instruction, hotwords=self.prompt_hotwords(u, hyps and hyps[k]),
                                     previous=u.previous, passages=u.passages) for k, u in enumerate(utts)]
        if self.first_pass_prompt:
            instructions = [with_first_pass(i, h) for i, h in zip(instructions, hyps)]
        prompts = [build_prompt(self.tokenizer, system=u.system, instruction=ins,
                                n_audio=int(audio_token_count(len(f))), prev_text=u.prev_text, prefix_ids=u.prefix_ids)
                   for u, ins, f in zip(utts, instructions, feats)]
        # Left padding (decode.generate's layout); pad columns are masked out, so any in-vocabulary id does.
        return pad_batch(feats, prompts, pad_id=AUDIO_PLACEHOLDER_ID, feat_length=self.padded_frames(feats),
                         token_length=_round_up(max(len(q.input_ids) for q in prompts), self.token_bucket),
                         side="left", targets=False)

    def _generate(self, utts: Sequence[Utterance], embeds, token_lengths, logp, ctc_lengths,
                  max_new_tokens: int) -> list[list[int]]:
        """New token ids per row (EOS dropped) from prompt embeddings [B, P, D]: greedy or beam,
        jointly with the CTC log-posteriors `logp` [B, T, V] when ctc_weight > 0."""
        limits = self.token_limits([len(u.feats) for u in utts], max_new_tokens)
        n_prefix = np.array([len(u.prefix_ids) for u in utts], np.int32)
        limits = np.maximum(1, limits - n_prefix).astype(np.int32)
        ctc_prefix = None
        if self.ctc_weight > 0 and n_prefix.max() > 0:
            width = _round_up(int(n_prefix.max()), self.token_bucket)
            pre = np.zeros((len(utts), width), np.int32)
            for k, u in enumerate(utts):
                pre[k, :len(u.prefix_ids)] = u.prefix_ids
            ctc_prefix = (pre, n_prefix)
        common = dict(max_new_tokens=max_new_tokens, eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
                      ctc_log_probs=logp if self.ctc_weight > 0 else None, ctc_lengths=ctc_lengths,
                      ctc_weight=self.ctc_weight, ctc_blank=self.cfg.ctc.blank, row_max_new_tokens=limits)
        if self.beam > 1:
            if ctc_prefix is not None:
                raise ValueError("beam search does not continue a forced prefix with joint CTC scores; "
                                 "use beam=1 for streaming with ctc_weight > 0")
            tokens, n, _ = beam_search(self.decoder, self.params["llm"], embeds, token_lengths, beam=self.beam,
                                       length_penalty=self.length_penalty, **common)
        else:
            tokens, n = greedy_generate(self.decoder, self.params["llm"], embeds, token_lengths,
                                        ctc_prefix_ids=ctc_prefix, **common)
        tokens, n = np.asarray(tokens), np.asarray(n)
        eos = self.tokenizer.eos_id
        return [[int(t) for t in row[:int(k)] if int(t) != eos] for row, k in zip(tokens, n)]

    @property
    def has_ctc(self) -> bool:
        return bool(self.cfg.ctc.enabled and self.ctc_vocab is not None)

    def prompt_hotwords(self, utt: Utterance, ctc_text: str | None) -> list[str]:
        """The hotwords `utt`'s prompt lists: retrieved from `ctc_text` (see the class docstring)."""
        index = utt.hotwords
        if index is None or not len(index):
            return []
        if ctc_text is None:  # no CTC branch: the release pastes the list as given
            if len(index) > self.hotword_top_k:
                raise ValueError(f"{len(index)} hotwords but this model has no CTC branch to retrieve from; "
                                 f"at most hotword_top_k={self.hotword_top_k} can be pasted into the prompt")
            return list(index.words)
        return [w for w, _ in index.retrieve(ctc_text, self.hotword_top_k, self.hotword_threshold)]

    def decode_ctc(self, feats_list: Sequence[np.ndarray]) -> list[str]:
        """Greedy CTC transcripts (needs the CTC branch and a CTC vocabulary)."""
        if not self.cfg.ctc.enabled or self.ctc_vocab is None:
            raise ValueError("CTC decoding needs a model with the CTC branch and a CTC vocabulary")
        feats, lengths = self.pad_feats(feats_list)
        return self._ctc_texts(np.asarray(ctc_log_probs(self.model, self.params, feats, lengths)), lengths)

    def decode_aed(self, feats_list: Sequence[np.ndarray], max_new_tokens: int = 128) -> list[str]:
        """AED transcripts (a model with `model.aed.enabled`): greedy, or beam search with `beam`."""
        if not self.cfg.aed.enabled or self.ctc_vocab is None:
            raise ValueError("AED decoding needs a model with the AED decoder (model.aed.enabled) and a CTC vocabulary")
        feats, lengths = self.pad_feats(feats_list)
        enc, enc_lengths = encoder_outputs(self.model, self.params, feats, lengths)
        ids, _, _ = aed_decode(aed_module(self.cfg), self.params["aed_decoder"], enc, enc_lengths, sos_eos=self.cfg.ctc.blank,
                               beam=self.beam, max_new_tokens=max_new_tokens, length_penalty=self.length_penalty,
                               row_max_new_tokens=self.token_limits([len(f) for f in feats_list], max_new_tokens))
        return [" ".join(self.ctc_vocab.decode(s).split()) for s in ids]

    def _ctc_texts(self, logp: np.ndarray, lengths) -> list[str]:
        seqs = ctc_greedy(logp, lengths, self.cfg.ctc.blank)
        return [" ".join(self.ctc_vocab.decode(list(s)).split()) for s in seqs]

    def features(self, wave: np.ndarray) -> np.ndarray:
        """[S] 16 kHz float waveform -> LFR features [T, 560] with this model's front end."""
        return extract_features(wave, self.frontend, self.cmvn)

    def speech_segments(self, wave: np.ndarray) -> list[tuple[int, int]]:
        """Sample ranges [(start, end)] of `wave` [S] to decode, in order: cut to `max_segment_s`
        at low-energy frames, silent segments (`gate_dbfs`) and steady tones (`max_periodicity`)
        left out; [] for a silent file."""
        grid = frame_grid(self.frontend.sample_rate, self.frontend.frame_length_ms, self.frontend.frame_shift_ms)
        max_samples = None if self.max_segment_s is None else int(self.max_segment_s * self.frontend.sample_rate)
        return speech_segments(np.asarray(wave), max_samples=max_samples, gate_dbfs=self.gate_dbfs, grid=grid,
                               max_periodicity=self.max_periodicity)

    def recognize(self, waves: Sequence[np.ndarray], instructions: Sequence[str],
                  systems: Sequence[str] | None = None, *, mode: str = "llm", batch_size: int = 8,
                  max_new_tokens: int = 128, hotwords: Sequence[HotwordIndex | None] | None = None,
                  contexts: Sequence[Context | None] | None = None, ctc_text: bool = False,
                  ctc_posteriors: bool = False) -> list[Transcript]:
        """Waveforms ([S] float32, 16 kHz) -> one `Transcript` per waveform, in order.

        instructions / systems: each waveform's prompt pieces (systems None: the default system
        prompt). Every waveform is split by `speech_segments`; the segments of all waveforms are
        decoded `batch_size` at a time, shortest first (features are computed per batch, so
        memory stays bounded by the segment length), and joined per waveform (`join_texts`).
        mode: "llm" (greedy / joint LLM decoding), "ctc" (CTC greedy) or "aed" (the AED decoder).
        hotwords / contexts: per waveform (or None): a `HotwordIndex` searched per segment with
          its CTC hypothesis, and a `Context` (previous transcript, passages) for every segment.
        ctc_text / ctc_posteriors (mode "llm", a CTC branch): each Transcript also carries the CTC
          head's greedy hypotheses / each segment's CTC posteriors, from the encoder pass the LLM
          decoded from (`decode_batch`): no second encoder run for them.
        """
        if mode not in ("llm", "ctc", "aed"):
            raise ValueError(f"mode must be 'llm', 'ctc' or 'aed', got {mode!r}")
        if mode == "aed" and (not self.cfg.aed.enabled or self.ctc_vocab is None):
            raise ValueError("AED decoding needs a model with the AED decoder (model.aed.enabled) and a CTC vocabulary")
        if mode == "ctc" and (not self.cfg.ctc.enabled or self.ctc_vocab is None):
            raise ValueError("CTC decoding needs a model with the CTC branch and a CTC vocabulary")
        keep_ctc = ctc_text or ctc_posteriors
        if keep_ctc and (mode != "llm" or not self.has_ctc):
            raise ValueError(f"ctc_text / ctc_posteriors need mode 'llm' (got {mode!r}) and a model with the CTC "
                             "branch and a CTC vocabulary")
        if len(instructions) != len(waves) or (systems is not None and len(systems) != len(waves)):
            raise ValueError(f"recognize: {len(waves)} waveforms but {len(instructions)} instructions"
                             + ("" if systems is None else f" and {len(systems)} system prompts"))
        systems = [DEFAULT_SYSTEM_PROMPT] * len(waves) if systems is None else systems
        hotwords = [None] * len(waves) if hotwords is None else list(hotwords)
        contexts = [None] * len(waves) if contexts is None else list(contexts)
        if len(hotwords) != len(waves) or len(contexts) != len(waves):
            raise ValueError(f"recognize: {len(waves)} waveforms but {len(hotwords)} hotword indexes "
                             f"and {len(contexts)} contexts")
        plans = [self.speech_segments(w) for w in waves]
        jobs = sorted(((i, k, a, b) for i, segs in enumerate(plans) for k, (a, b) in enumerate(segs)),
                      key=lambda j: j[3] - j[2])
        texts = [[""] * len(segs) for segs in plans]
        firsts = [[""] * len(segs) for segs in plans]
        ctcs = [[""] * len(segs) for segs in plans]
        posts: list[list] = [[None] * len(segs) for segs in plans]
        with_first = False
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start: start + batch_size]
            feats = [self.features(np.asarray(waves[i][a:b], np.float32)) for i, _, a, b in chunk]
            extra = None
            if mode == "ctc":
                hyps, first = self.decode_ctc(feats), None
            elif mode == "aed":
                hyps, first = self.decode_aed(feats, max_new_tokens), None
            else:
                utts = [Utterance(f, instructions[i], systems[i], hotwords=hotwords[i],
                                  **(contexts[i] or Context()).fields()) for f, (i, *_) in zip(feats, chunk)]
                if keep_ctc:
                    extra = self.decode_batch(utts, max_new_tokens, ctc_text=ctc_text, ctc_posteriors=ctc_posteriors)
                    hyps, first = extra.texts, extra.first_pass
                else:
                    hyps, first = self.decode_llm_with_first_pass(utts, max_new_tokens)
            for j, (i, k, a, b) in enumerate(chunk):
                texts[i][k] = hyps[j]
                if first is not None:
                    firsts[i][k], with_first = first[j], True
                if extra is not None and ctc_text:
                    ctcs[i][k] = extra.ctc_texts[j]
                if extra is not None and ctc_posteriors:
                    posts[i][k] = SegmentPosteriors(a, b, extra.ctc_log_probs[j])
        with_first = with_first or (mode == "llm" and self.first_pass_prompt)
        return [Transcript(join_texts(t), join_texts(f) if with_first else None, len(t),
                           join_texts(c) if ctc_text else None, tuple(p) if ctc_posteriors else None)
                for t, f, c, p in zip(texts, firsts, ctcs, posts)]

    def transcribe(self, audio: Sequence, *, language=None, hotwords: Sequence[str] | HotwordIndex = (),
                   itn: bool = True, context: Context | None = None, batch_size: int = 8,
                   max_new_tokens: int = 128, mode: str = "llm") -> list[str]:
        """Paths or 16 kHz float waveforms -> transcripts, in order ("" for silence; long files
        are cut, see `recognize`). Files are read `batch_size` at a time.

        hotwords: words (or a built `HotwordIndex`) retrieved per segment against its CTC
        hypothesis (see the class docstring); context: a previous-segment transcript and / or
        passages put in every prompt.
        """
        instruction = instruction_text(language, (), itn)
        index = hotwords if isinstance(hotwords, HotwordIndex) else (HotwordIndex(hotwords) if len(hotwords) else None)
        out: list[str] = []
        for i in range(0, len(audio), batch_size):
            waves = [load_audio(a) if _is_path(a) else np.asarray(a, np.float32) for a in audio[i: i + batch_size]]
            out += [t.text for t in self.recognize(waves, [instruction] * len(waves), mode=mode,
                                                   batch_size=batch_size, max_new_tokens=max_new_tokens,
                                                   hotwords=[index] * len(waves), contexts=[context] * len(waves))]
        return out
