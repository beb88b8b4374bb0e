"""The whole Fun-ASR model: SAN-M encoder -> adaptor -> audio rows spliced into Qwen3, + CTC branch.

Top-level submodule names are the state-dict prefixes of the release (`audio_encoder`,
`audio_adaptor`, `llm`, `ctc_decoder`, `ctc`), so `funasr_jax.io.names` converts by name.

Inputs come as a `funasr_jax.models.batch.Batch` (feats [B, T, 560] LFR frames of 60 ms,
feat_lengths [B], input_ids [B, L] with N = audio_token_count(T) placeholder rows at
`audio_start`, the release's fake-token splice); the model reads its input fields by name.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from funasr_jax.models.adaptor import Transformer
from funasr_jax.models.aed import AEDDecoder, decoder_io
from funasr_jax.models.batch import Batch
from funasr_jax.models.bestrq import QuantizerParams, bestrq_forward
from funasr_jax.models.config import FunASRConfig, audio_token_count
from funasr_jax.models.ctc_head import CTCLo
from funasr_jax.models.encoder import SenseVoiceEncoderSmall
from funasr_jax.models.qwen3 import Qwen3ForCausalLM
from funasr_jax.models.precision import with_matmul_precision
from funasr_jax.models.remat import parse_remat
from sharding.context import constrain


def splice_audio(token_embeds, audio_embeds, audio_start, audio_tokens):
    """Overwrite prompt rows with adaptor output (FunASRNano.forward's fake-token splice).

    token_embeds [B, L, D]; audio_embeds [B, T, D]; audio_start [B] (index of the first
    placeholder); audio_tokens [B] (N rows to write, N <= T). Row l of utterance b takes
    audio_embeds[b, l - audio_start[b]] when audio_start[b] <= l < audio_start[b] + N[b].
    """
    b, length, _ = token_embeds.shape
    pos = jnp.arange(length)[None, :] - audio_start[:, None]  # [B, L]
    inside = (pos >= 0) & (pos < audio_tokens[:, None])
    src = jnp.clip(pos, 0, audio_embeds.shape[1] - 1)
    gathered = jnp.take_along_axis(audio_embeds, src[:, :, None], axis=1)
    return jnp.where(inside[:, :, None], gathered.astype(token_embeds.dtype), token_embeds)


_precision = with_matmul_precision(lambda self: self.cfg.matmul_precision)


class FunASRNano(nn.Module):
    """Fun-ASR(-Nano). Methods can be called separately through `apply(..., method=...)`."""

    cfg: FunASRConfig

    def setup(self):
        cfg = self.cfg
        dtype = jnp.dtype(cfg.dtype)
        remat = parse_remat(cfg.remat)  # per block type: "none" | policy name
        kw = dict(dtype=dtype, attention_impl=cfg.attention_impl, scan_layers=cfg.scan_layers)
        self.audio_encoder = SenseVoiceEncoderSmall(cfg.encoder, remat=remat["encoder"], **kw)
        self.audio_adaptor = Transformer(cfg.adaptor, remat=remat["adaptor"], **kw)
        self.llm = Qwen3ForCausalLM(cfg.llm, remat=remat["llm"], matmul_precision=cfg.matmul_precision, **kw)
        if cfg.ctc.enabled:
            self.ctc_decoder = Transformer(cfg.ctc.decoder, remat=remat["ctc"], **kw)
            self.ctc = CTCLo(cfg.ctc.vocab_size, dtype=dtype)
        if cfg.bestrq.enabled:  # Best-RQ pre-training: prediction heads + the frozen quantiser
            rq = cfg.bestrq
            self.bestrq_head = nn.Dense(rq.num_codebooks * rq.codebook_size, dtype=dtype)
            self.bestrq_quantizer = QuantizerParams(rq, cfg.encoder.input_size)
        if cfg.aed.enabled:  # AED pre-training: attention decoder over the encoder, CTC vocabulary
            self.aed_decoder = AEDDecoder(cfg.aed, cfg.encoder.output_size, cfg.ctc.vocab_size, dtype=dtype)

    @_precision
    def encode(self, feats, feat_lengths, deterministic: bool = True):
        """[B, T, 560] -> encoder output [B, T, D_enc] (f32), lengths [B]."""
        return self.audio_encoder(feats, feat_lengths, deterministic=deterministic)

    @_precision
    def adapt(self, enc, enc_lengths, deterministic: bool = True):
        """Encoder output -> LLM-width audio rows [B, T', D_llm], lengths [B]."""
        return self.audio_adaptor(enc, enc_lengths, deterministic=deterministic)

    @_precision
    def ctc_logits(self, enc, enc_lengths, deterministic: bool = True):
        """Encoder output -> CTC logits [B, T, V_ctc] (f32, unnormalized)."""
        if self.cfg.ctc.detach_encoder:
            enc = jax.lax.stop_gradient(enc)
        h, _ = self.ctc_decoder(enc, enc_lengths, deterministic=deterministic)
        return self.ctc(h)

    @_precision
    def bestrq_outputs(self, feats, feat_lengths, rng=None, deterministic: bool = True):
        """Best-RQ (needs cfg.bestrq.enabled): dict(logits [B, T, K, C], targets [B, T, K], mask [B, T])
        for feats [B, T, 560]; rng draws the span mask and its noise (None: no masking)."""
        return bestrq_forward(self.cfg.bestrq, self.bestrq_quantizer(), feats, feat_lengths, rng,
                              lambda x: self.encode(x, feat_lengths, deterministic)[0], self.bestrq_head)

    @_precision
    def aed_logits(self, enc, enc_lengths, ys_in, ys_in_lengths, deterministic: bool = True):
        """(needs cfg.aed.enabled) encoder output [B, T, D_enc] + decoder inputs ys_in [B, L]
        (sos + labels, `aed.decoder_io`) -> teacher-forced AED logits [B, L, V_ctc] f32."""
        return self.aed_decoder(enc, enc_lengths, ys_in, ys_in_lengths, deterministic=deterministic)

    @_precision
    def embed_prompt(self, input_ids, audio_embeds, audio_start, audio_tokens):
        """Token ids [B, L] (placeholders 0 or negative) + audio rows -> LLM inputs [B, L, D]."""
        ids = jnp.maximum(input_ids, 0)
        return splice_audio(self.llm.embed(ids), audio_embeds, audio_start, audio_tokens)

    @_precision
    def audio_embeds(self, feats, feat_lengths, deterministic: bool = True):
        """feats -> (adaptor rows [B, T', D_llm], encoder output, encoder lengths)."""
        enc, enc_lengths = self.encode(feats, feat_lengths, deterministic)
        adapted, _ = self.adapt(enc, enc_lengths, deterministic)
        return adapted, enc, enc_lengths

    @_precision
    def lm_logits(self, hidden):
        """LLM final hidden states [..., D] (`__call__(..., with_logits=False)`) -> logits [..., V] f32."""
        logits = self.llm.logits_from_hidden(hidden)
        if logits.ndim == 3:
            logits = constrain(logits, ("batch", "length", "vocab"))
        return logits

    @_precision
    def __call__(self, batch: Batch, deterministic: bool = True, with_llm: bool = True, with_ctc: bool = True,
                 with_aed: bool = False, with_logits: bool = True):
        """Teacher-forced forward of `batch` (its model-input fields; targets are not read, except
        the CTC labels that the AED decoder is teacher-forced with).

        Returns a dict: `logits` [B, L, V] (f32; absent if not with_llm) — or, with
        with_logits=False, `hidden` [B, L, D] (the LLM's final-normed states in the compute dtype,
        for `lm_logits` at chosen positions: the training loss never builds [B, L, V]), `ctc_logits`
        [B, T, V_ctc] (if the CTC branch is enabled and with_ctc), `enc_lengths` [B];
        with_aed (needs cfg.aed.enabled and batch.ctc_labels): `aed_logits` [B, U+1, V_ctc] and
        `aed_targets` [B, U+1] (labels then eos, IGNORE_INDEX after).
        """
        out = {}
        enc, enc_lengths = self.encode(batch.feats, batch.feat_lengths, deterministic)
        out["enc_lengths"] = enc_lengths
        if with_llm:
            adapted, _ = self.adapt(enc, enc_lengths, deterministic)
            embeds = self.embed_prompt(batch.input_ids, adapted, batch.audio_start, batch.audio_tokens)
            h, _ = self.llm(embeds, lengths=batch.token_lengths, deterministic=deterministic, return_hidden=True)
            if with_logits:
                out["logits"] = self.lm_logits(h)
            else:
                out["hidden"] = constrain(h, ("batch", "length", "embed"))
        if self.cfg.ctc.enabled and with_ctc:
            out["ctc_logits"] = constrain(self.ctc_logits(enc, enc_lengths, deterministic),
                                          ("batch", "length", "vocab"))
        if self.cfg.bestrq.enabled and self.is_initializing():  # create the heads' params
            self.bestrq_outputs(batch.feats, batch.feat_lengths)
        if self.cfg.aed.enabled and (with_aed or self.is_initializing()):
            sos_eos = self.cfg.ctc.blank
            if batch.ctc_labels is None and not self.is_initializing():
                raise ValueError("with_aed needs batch.ctc_labels (the AED decoder is teacher-forced with the CTC "
                                 "transcript labels; give the data a CTC vocabulary)")
            if batch.ctc_labels is None:  # initialisation from a dummy batch: one eos-only target
                labels, lengths = jnp.zeros((enc.shape[0], 1), jnp.int32), jnp.zeros((enc.shape[0],), jnp.int32)
            else:
                labels, lengths = batch.ctc_labels, batch.ctc_label_lengths
            ys_in, ys_out, in_lengths = decoder_io(labels, lengths, sos_eos)
            out["aed_logits"] = self.aed_logits(enc, enc_lengths, ys_in, in_lengths, deterministic)
            out["aed_targets"] = ys_out
        return out


def lm_head_params(params):
    """The part of `params` (the model's, without the 'params' wrapper) that `FunASRNano.lm_logits`
    reads: {"llm": {"lm_head": ...}} (untied) or {"llm": {"model": {"embed_tokens": ...}}} (tied)."""
    llm = params["llm"]
    if "lm_head" in llm:
        return {"llm": {"lm_head": llm["lm_head"]}}
    return {"llm": {"model": {"embed_tokens": llm["model"]["embed_tokens"]}}}


def llm_module(cfg: FunASRConfig) -> Qwen3ForCausalLM:
    """The model's LLM as a standalone module (for generation over `params["llm"]`: no remat)."""
    return Qwen3ForCausalLM(cfg.llm, dtype=jnp.dtype(cfg.dtype), attention_impl=cfg.attention_impl,
                            matmul_precision=cfg.matmul_precision, scan_layers=cfg.scan_layers)


def aed_module(cfg: FunASRConfig) -> AEDDecoder:
    """The model's AED decoder as a standalone module (for decoding over `params["aed_decoder"]`)."""
    return AEDDecoder(cfg.aed, cfg.encoder.output_size, cfg.ctc.vocab_size, dtype=jnp.dtype(cfg.dtype))


def init_params(cfg: FunASRConfig, rng, batch: int = 1, frames: int = 16, tokens: int = 24):
    """Random f32 params for `cfg` (a nested dict, without the 'params' wrapper)."""
    model = FunASRNano(cfg)
    return model.init({"params": rng, "dropout": rng}, dummy_batch(cfg, batch, frames, tokens))["params"]


def abstract_params(cfg: FunASRConfig):
    """ShapeDtypeStruct tree of the params (no memory, no compute)."""
    return jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))


def dummy_batch(cfg: FunASRConfig, batch: int = 1, frames: int = 16, tokens: int = 24) -> Batch:
    """An all-zero `Batch` of the given sizes (for init / shape tracing): audio rows at index 2."""
    return Batch(
        feats=jnp.zeros((batch, frames, cfg.encoder.input_size), jnp.float32),
        feat_lengths=jnp.full((batch,), frames, jnp.int32),
        input_ids=jnp.zeros((batch, tokens), jnp.int32),
        token_lengths=jnp.full((batch,), tokens, jnp.int32),
        audio_start=jnp.full((batch,), 2, jnp.int32),
        audio_tokens=jnp.full((batch,), min(int(audio_token_count(frames)), tokens - 2), jnp.int32),
    )


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def component_counts(params) -> dict[str, int]:
    """Parameter count per top-level component (audio_encoder, audio_adaptor, llm, ...)."""
    return {k: count_params(v) for k, v in params.items()}
