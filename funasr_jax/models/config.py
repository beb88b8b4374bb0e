"""Typed, frozen hyper-parameter dataclasses for every model part, and the size presets.

Field names follow FunASR's `config.yaml` (`audio_encoder_conf`, `audio_adaptor_conf`,
`ctc_decoder_conf`) and Hugging Face's `Qwen3Config`, so a release config maps onto them 1:1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from funasr_jax.models.precision import check_matmul_precision
from funasr_jax.models.remat import parse_remat


@dataclass(frozen=True)
class EncoderConfig:
    """SenseVoiceEncoderSmall (SAN-M) hyper-parameters (the release's `audio_encoder_conf`)."""

    input_size: int = 560  # LFR feature dim (80 mel x 7 stacked frames)
    output_size: int = 512  # d_model
    attention_heads: int = 4
    linear_units: int = 2048  # FFN width
    num_blocks: int = 50  # encoders0 (1 layer) + encoders (num_blocks - 1 layers)
    tp_blocks: int = 20
    kernel_size: int = 11  # FSMN memory kernel (frames of 60 ms)
    sanm_shift: int = 0
    layer_norm_eps: float = 1e-5
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0


@dataclass(frozen=True)
class AdaptorConfig:
    """FunASR llm_asr `Transformer` adaptor (also the CTC decoder body), the release's `audio_adaptor_conf`.

    The block FFN width is `llm_dim // 4` whatever `ffn_dim` says (FunASR hard-codes it);
    `ffn_dim` is the width of linear1 (encoder_dim*k -> ffn_dim -> llm_dim).
    """

    downsample_rate: int = 1
    encoder_dim: int = 512
    llm_dim: int = 1024
    ffn_dim: int = 2048
    n_layer: int = 2
    attention_heads: int = 8
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.0


@dataclass(frozen=True)
class LoraConfig:
    """LoRA on LLM projections. rank 0 = off. W' = W + (alpha / rank) * B @ A."""

    rank: int = 0
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class Qwen3Config:
    """Qwen3 causal LM (Hugging Face `Qwen3Config` field names), as in the release's Qwen3-0.6B/config.json."""

    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40960
    attention_dropout: float = 0.0
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(frozen=True)
class CTCConfig:
    """CTC branch: a `Transformer` adaptor-style decoder on the encoder output + `ctc_lo`."""

    enabled: bool = True
    decoder: AdaptorConfig = field(
        default_factory=lambda: AdaptorConfig(encoder_dim=512, llm_dim=512, ffn_dim=2048, n_layer=5)
    )
    vocab_size: int = 60515
    blank_id: int = -1  # -1 = last index (vocab_size - 1), as in the release
    detach_encoder: bool = True  # `detach_ctc_decoder: true` in the release config

    @property
    def blank(self) -> int:
        return self.vocab_size - 1 if self.blank_id < 0 else self.blank_id


@dataclass(frozen=True)
class BestRQConfig:
    """Quantiser, masking and head settings.

    mask_prob: probability that a valid frame starts a masked span; span: span length in frames
    (60 ms each). The expected masked share of a long utterance is 1 - (1 - mask_prob) ** span
    (0.39 with the defaults: 6 frames = 360 ms spans).
    """

    enabled: bool = False  # FunASRNano grows the heads + quantiser (a Best-RQ stage's model)
    codebook_size: int = 8192
    code_dim: int = 16
    num_codebooks: int = 1
    stack: int = 1
    mask_prob: float = 0.08
    span: int = 6
    noise_std: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        for name in ("codebook_size", "code_dim", "num_codebooks", "stack", "span"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.bestrq.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"model.bestrq.mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.noise_std < 0:
            raise ValueError(f"model.bestrq.noise_std must be >= 0, got {self.noise_std}")


@dataclass(frozen=True)
class AEDConfig:
    """Attention decoder for AED pre-training (`funasr_jax.models.aed`, FunASR TransformerDecoder).

    Its width is the encoder's output size and its vocabulary the CTC vocabulary (start / end =
    the CTC blank id). label_smoothing: the mass spread over the other classes (FunASR
    LabelSmoothingLoss). The loss is summed over tokens and divided by the utterances of the step
    (FunASR's `length_normalized_loss: false`).
    """

    enabled: bool = False  # FunASRNano grows the `aed_decoder` (an AED stage's model)
    num_blocks: int = 6
    attention_heads: int = 4
    linear_units: int = 2048
    dropout_rate: float = 0.1
    positional_dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    label_smoothing: float = 0.1

    def check(self, width: int) -> None:
        for name in ("num_blocks", "attention_heads", "linear_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.aed.{name} must be >= 1, got {getattr(self, name)}")
        if width % self.attention_heads or width % 2:
            raise ValueError(f"model.aed.attention_heads {self.attention_heads} must divide the (even) encoder "
                             f"output size {width}")
        for name in ("dropout_rate", "positional_dropout_rate", "attention_dropout_rate", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.aed.{name} must be in [0, 1), got {getattr(self, name)}")


# What runs in which dtype when `FunASRConfig.dtype` is bf16 (README "Precision"); tests/models/
# test_precision.py checks the traced step against it.
PRECISION_POLICY = {
    "bf16": ("matmul inputs and outputs", "activations between blocks", "attention scores and values",
             "MLP gates (SiLU)", "KV cache"),
    "f32": ("parameters (master weights)", "optimizer state", "gradients as the optimizer sees them",
            "LayerNorm / RMSNorm statistics", "softmax statistics (max, sum)", "log-softmax and losses",
            "CTC recursions", "the FSMN memory block"),
}


@dataclass(frozen=True)
class FunASRConfig:
    """The whole Fun-ASR model.

    dtype: compute dtype of matmuls and activations ("float32" | "bfloat16"); params stay float32
      (`PRECISION_POLICY`). The dataclass default is f32 (parity with PyTorch f32); the nano and
      full presets set bf16, the tiny preset keeps f32.
    attention_impl: name passed to `kernels.attention.attention(implementation=...)`
      (None = best available for the backend); ctc_loss_impl likewise for the CTC loss.
    matmul_precision: "default" | "high" | "highest" (`funasr_jax.models.precision`), applied to
      every matmul of the model, XLA and Pallas alike. "default" lets f32 matmuls run as TF32 on
      GPU; parity with PyTorch f32 needs "highest".
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    llm: Qwen3Config = field(default_factory=Qwen3Config)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    bestrq: BestRQConfig = field(default_factory=BestRQConfig)  # Best-RQ pre-training heads (off by default)
    aed: AEDConfig = field(default_factory=AEDConfig)  # AED pre-training decoder (off by default; needs ctc)
    dtype: str = "float32"
    attention_impl: str | None = None
    ctc_loss_impl: str | None = None  # `kernels.ctc.ctc_loss(implementation=...)`; None = best available
    remat: str = "none"  # "none" | "block" | policy | "encoder:block,llm:dots_saveable" (funasr_jax.models.remat)
    matmul_precision: str = "default"
    # Each stack of identical layers (> 1) kept stacked at rest ([L, ...] leaves under `<stack>/stacked`)
    # and run as one nn.scan; per-layer PyTorch names exist only at conversion (funasr_jax.models.stack).
    scan_layers: bool = False

    def replace(self, **kw) -> "FunASRConfig":
        return dataclasses.replace(self, **kw)

    def validate(self) -> "FunASRConfig":
        """Cross-part consistency; raises ValueError naming the field."""
        e, a, q = self.encoder, self.adaptor, self.llm
        checks = [
            (a.encoder_dim == e.output_size, f"model.adaptor.encoder_dim {a.encoder_dim} != model.encoder.output_size {e.output_size}"),
            (a.llm_dim == q.hidden_size, f"model.adaptor.llm_dim {a.llm_dim} != model.llm.hidden_size {q.hidden_size}"),
            (e.output_size % e.attention_heads == 0, "model.encoder.output_size must be divisible by attention_heads"),
            (q.num_attention_heads % q.num_key_value_heads == 0, "model.llm.num_attention_heads must be a multiple of num_key_value_heads"),
            (self.dtype in ("float32", "bfloat16", "float16"), f"model.dtype: unknown dtype {self.dtype!r}"),
        ]
        if self.ctc.enabled:
            checks.append((self.ctc.decoder.encoder_dim == e.output_size,
                           f"model.ctc.decoder.encoder_dim {self.ctc.decoder.encoder_dim} != model.encoder.output_size {e.output_size}"))
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.bestrq.enabled:
            self.bestrq.validate()
        if self.aed.enabled:
            if not self.ctc.enabled:
                raise ValueError("model.aed.enabled needs model.ctc.enabled: the AED decoder predicts CTC-vocabulary "
                                 "ids (the CTC branch defines the vocabulary and the start/end id)")
            self.aed.check(e.output_size)
        parse_remat(self.remat)  # RematConfigError (a ValueError) naming model.remat
        check_matmul_precision(self.matmul_precision)
        return self


def audio_token_count(lfr_frames):
    """N = number of adaptor rows the LLM sees for T LFR frames (the adaptor's two stride-2 convolutions and its downsampling).

    Works on Python ints, numpy and jax arrays. Equals ceil(T / 8) for T >= 1.
    """
    o1 = 1 + (lfr_frames - 3 + 2) // 2
    o2 = 1 + (o1 - 3 + 2) // 2
    return (o2 - 1) // 2 + 1


def tiny_config(vocab_size: int = 512, ctc_vocab_size: int = 512, tie: bool = True) -> FunASRConfig:
    """A structurally complete model small enough for CPU tests and the demo (~3M params). Its layers
    stay per-layer (unrolled): at 2-4 layers per stack scanning does not compile faster here."""
    return FunASRConfig(
        encoder=EncoderConfig(
            input_size=560, output_size=128, attention_heads=4, linear_units=256,
            num_blocks=4, tp_blocks=2, kernel_size=11,
        ),
        # downsample_rate 8: each of the N = ceil(T/8) rows the LLM sees is 8 stacked encoder frames,
        # so a from-scratch demo need not learn the release adaptor's packing of T rows into T/8.
        adaptor=AdaptorConfig(downsample_rate=8, encoder_dim=128, llm_dim=128, ffn_dim=256, n_layer=2,
                              attention_heads=4),
        llm=Qwen3Config(
            vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
            tie_word_embeddings=tie, max_position_embeddings=2048,
        ),
        ctc=CTCConfig(
            enabled=True,
            decoder=AdaptorConfig(encoder_dim=128, llm_dim=128, ffn_dim=256, n_layer=2, attention_heads=4),
            vocab_size=ctc_vocab_size,
        ),
    )


def nano_config() -> FunASRConfig:
    """Fun-ASR-Nano-2512's architecture exactly, computing in bf16 (`PRECISION_POLICY`), its layers
    stacked at rest and scanned (`scan_layers`: compile time no longer grows with depth)."""
    return FunASRConfig(dtype="bfloat16", scan_layers=True)


def full_config() -> FunASRConfig:
    """FunAudio-ASR class: ~0.7B SAN-M encoder + Qwen3-8B decoder (the FunAudio-ASR report, 'Model')."""
    return FunASRConfig(
        encoder=EncoderConfig(output_size=1024, attention_heads=8, linear_units=4096, num_blocks=50, tp_blocks=20),
        adaptor=AdaptorConfig(encoder_dim=1024, llm_dim=4096, ffn_dim=4096, n_layer=2, attention_heads=16),
        llm=Qwen3Config(
            vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1_000_000.0,
            tie_word_embeddings=False,
        ),
        ctc=CTCConfig(decoder=AdaptorConfig(encoder_dim=1024, llm_dim=1024, ffn_dim=4096, n_layer=5, attention_heads=16)),
        dtype="bfloat16",
        scan_layers=True,
    )


PRESETS = {"tiny": tiny_config, "nano": nano_config, "full": full_config}


def preset(name: str) -> FunASRConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
