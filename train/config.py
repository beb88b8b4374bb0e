"""The trainer's config schema: one frozen dataclass tree per run (`configs/<stage>.py` builds one).

`TrainConfig` = model (`funasr_jax.models.config.FunASRConfig`) + data (`funasr_jax.data.config.
DataConfig`) + optim + stage + run + mesh + frontend. `train.main` applies `--preset` and
`--set a.b=v` and then `validate()`s the whole tree before anything compiles; errors name the
field. Building or validating a config reads no file; `train.setup` checks it against the
tokenizer files when a run starts.
"""

from __future__ import annotations

import importlib.util

from dataclasses import dataclass, field

from funasr_jax.audio.frontend import FrontendConfig
from funasr_jax.configtools import ConfigError
from funasr_jax.data.config import DataConfig
from funasr_jax.models.config import FunASRConfig
from funasr_jax.rewards import DEFAULT_WEIGHTS, RewardError, check_weights
from sharding.mesh import MeshError, parse_mesh_shape
from sharding.rules import RulesError, get_rules

__all__ = ["ConfigError", "GRPOConfig", "MeshConfig", "OptimConfig", "RunConfig", "StageConfig", "TrainConfig"]


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    schedule: str = "cosine"  # cosine | linear | constant | inverse_sqrt (FunASR warmuplr)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    grad_clip: float = 5.0
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step

    def validate(self):
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "linear", "constant", "inverse_sqrt"):
            raise ConfigError(f"optim.schedule: unknown schedule {self.schedule!r}")
        if self.accum_steps < 1:
            raise ConfigError(f"optim.accum_steps must be >= 1, got {self.accum_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class StageConfig:
    """What a stage trains and with which losses (the FunAudio-ASR report's SFT stages).

    trainable: param path prefixes; "llm:lora" = only the LoRA adapters of the LLM (their rank,
      alpha and targets are model settings: `model.llm.lora`).
    """

    name: str = "sft"
    kind: str = "sft"  # sft (teacher-forced losses) | grpo (reinforcement learning: the `grpo` settings)
    trainable: tuple[str, ...] = ("audio_adaptor",)
    llm_weight: float = 1.0  # weight of the LLM cross-entropy (0 skips the LLM forward)
    ctc_weight: float = 0.0  # weight of the CTC loss on the CTC head
    bestrq_weight: float = 0.0  # weight of the Best-RQ masked-prediction loss (needs model.bestrq.enabled)
    aed_weight: float = 0.0  # weight of the AED decoder's loss (needs model.aed.enabled)

    def validate(self):
        if self.kind not in ("sft", "grpo"):
            raise ConfigError(f"stage.kind must be 'sft' or 'grpo', got {self.kind!r}")
        if not self.trainable:
            raise ConfigError("stage.trainable is empty: nothing would be trained")
        weights = (self.llm_weight, self.ctc_weight, self.bestrq_weight, self.aed_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ConfigError("stage.llm_weight, stage.ctc_weight, stage.bestrq_weight and stage.aed_weight must be "
                              ">= 0 and not all 0")
        known = ("audio_encoder", "audio_adaptor", "llm", "ctc_decoder", "ctc", "bestrq_head", "aed_decoder", "*")
        for p in self.trainable:
            if p.split("/")[0].split(":")[0] not in known:
                raise ConfigError(f"stage.trainable: {p!r} names no model part (one of {known})")


@dataclass(frozen=True)
class GRPOConfig:
    """Reinforcement learning (stage.kind = "grpo"; train/rl.py has the objective).

    group_size: G samples per utterance. temperature / top_k (0 = off) / top_p (1 = off): the
      rollout's sampling. max_new_tokens: N, the longest sample; each is also capped at
      ceil(tokens_per_second x seconds) + token_slack. clip_eps: eps of the clipped ratio.
    beta: weight of the KL to the reference policy (k3 estimator; 0 = no reference forward).
    inner_steps: optimizer steps per rollout batch (mu). adv_eps: eps of (R - mean) / (std + eps).
    rewards: (name, weight) pairs from `funasr_jax.rewards.REWARDS` (the language reward is an
      override: -1 when the output's script does not fit the utterance's language).
    """

    group_size: int = 4
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    tokens_per_second: float = 15.0
    token_slack: int = 8
    clip_eps: float = 0.2
    beta: float = 0.04
    inner_steps: int = 1
    adv_eps: float = 1e-4
    rewards: tuple[tuple[str, float], ...] = DEFAULT_WEIGHTS

    def validate(self):
        if self.group_size < 2:
            raise ConfigError(f"grpo.group_size must be >= 2 (advantages compare samples of one utterance), "
                              f"got {self.group_size}")
        if not self.temperature >= 0:
            raise ConfigError(f"grpo.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"grpo.top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"grpo.top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"grpo.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.clip_eps < 1:
            raise ConfigError(f"grpo.clip_eps must lie in (0, 1), got {self.clip_eps}")
        if not self.beta >= 0:
            raise ConfigError(f"grpo.beta must be >= 0, got {self.beta}")
        if self.inner_steps < 1:
            raise ConfigError(f"grpo.inner_steps must be >= 1, got {self.inner_steps}")
        if not self.adv_eps > 0:
            raise ConfigError(f"grpo.adv_eps must be > 0, got {self.adv_eps}")
        if self.tokens_per_second <= 0 or self.token_slack < 0:
            raise ConfigError("grpo.tokens_per_second must be > 0 and grpo.token_slack >= 0")
        try:
            check_weights(self.rewards)
        except RewardError as e:
            raise ConfigError(f"grpo.rewards: {e}") from None


def parse_layer_map(text: str) -> list[tuple[int, int]]:
    """'1:0,2:1' -> [(1, 0), (2, 1)] (encoder block <- LLM layer); '' -> []. ConfigError names the field."""
    pairs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            e, l = item.split(":")
            pairs.append((int(e), int(l)))
        except ValueError:
            raise ConfigError(f"run.encoder_llm_layers: {item!r} is not 'ENCODER_BLOCK:LLM_LAYER' "
                              "(e.g. '1:0,2:1')") from None
    return pairs


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs/sft"
    steps: int = 1000
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end
    eval_at_end: bool = True  # decode the dev set after the last step
    save_every: int = 500
    keep: int = 3  # checkpoints kept
    init_from: str | None = None  # previous stage's run dir / checkpoint / Fun-ASR model dir
    # Encoder blocks initialised from Qwen3 layers (funasr_jax.models.llm_init), after init_from, on a
    # fresh start: a run dir / checkpoint (its `llm`) or a Hugging Face Qwen3 folder; the map is
    # "E:L,E:L" (encoder block E <- LLM layer L) or "" = blocks 1, 2, ... <- layers 0, 1, ... (as many as both have).
    encoder_from_llm: str | None = None
    encoder_llm_layers: str = ""
    encoder_llm_gqa: str = "repeat"  # k/v narrower than q (GQA): "repeat" | "skip" | "raise"
    eval_max_utts: int = 0  # 0 = whole dev set
    decode_max_tokens: int = 64
    decode_ctc_weight: float = 0.0  # dev decoding (and the saved model's default): joint CTC/LLM weight
    progress: bool = True
    resume: bool = True  # continue from out_dir's newest checkpoint that verifies (older ones if it does not)
    # a step whose loss or gradient norm is not finite: "stop" (nothing saved after it, exit 3,
    # naming the step) or "skip" (that update is not applied: params and optimizer state stay; sft only)
    on_nonfinite: str = "stop"
    tensorboard: bool = True  # event files under <out_dir>/tensorboard (train.metric_sinks)
    wandb_project: str = ""  # "" = off; a name logs to Weights & Biases (needs wandb installed)

    def validate(self):
        if self.steps < 1:
            raise ConfigError(f"run.steps must be >= 1, got {self.steps}")
        if self.keep < 1:
            raise ConfigError(f"run.keep must be >= 1, got {self.keep}")
        if not 0.0 <= self.decode_ctc_weight < 1.0:
            raise ConfigError(f"run.decode_ctc_weight must lie in [0, 1), got {self.decode_ctc_weight}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"run.on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
        if self.encoder_llm_gqa not in ("repeat", "skip", "raise"):
            raise ConfigError(f"run.encoder_llm_gqa must be 'repeat', 'skip' or 'raise', got {self.encoder_llm_gqa!r}")
        parse_layer_map(self.encoder_llm_layers)
        if self.wandb_project and importlib.util.find_spec("wandb") is None:
            raise ConfigError(f"run.wandb_project={self.wandb_project!r} asks for Weights & Biases, but wandb "
                              "is not installed (pip install wandb)")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh and sharding (sharding/ package; train/sharded.py applies it).

    preset: sharding.mesh preset (1, 8x-data, 8x-fsdp, 2fsdp-4tensor, 2x8, 4x8, 8x8, auto) or
      explicit sizes "data=2,fsdp=4,tensor=1".
    rules: logical->mesh rules table (sharding.rules.RULE_TABLES: default, llm-tp, replicated).
    rule_overrides: "embed=fsdp", "llm/heads=tensor", "act:batch=data+fsdp", "vocab=" (replicate).
    min_sharded_size: fail a run that leaves a tensor with more elements than this fully
      replicated on a mesh with fsdp / tensor > 1 (0 = no check).
    compilation_cache: persistent XLA compilation cache directory ("" = off; env
      FUNASR_JAX_NO_COMPILE_CACHE=1 also turns it off).
    """

    preset: str = "auto"
    rules: str = "default"
    rule_overrides: tuple[str, ...] = ()
    min_sharded_size: int = 1_000_000
    compilation_cache: str = "~/.cache/funasr_jax/xla"

    def validate(self):
        try:
            parse_mesh_shape(self.preset)
            get_rules(self.rules, self.rule_overrides)
        except (MeshError, RulesError) as e:
            raise ConfigError(str(e)) from None
        if self.min_sharded_size < 0:
            raise ConfigError(f"mesh.min_sharded_size must be >= 0, got {self.min_sharded_size}")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"
    model: FunASRConfig = field(default_factory=FunASRConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    # The `--set a.b=v` items applied on top of the stage file, in order (`train.main.load_config`
    # records them): a model field set here is one the user asked for, which `run.init_from` must
    # apply or refuse by name, never drop (`train.setup.init_from_model_config`).
    overrides: tuple[str, ...] = ()

    def validate(self):
        parts = (self.data, self.optim, self.stage, self.run, self.mesh)
        for part in parts + ((self.grpo,) if self.stage.kind == "grpo" else ()):
            v = getattr(part, "validate", None)
            if v:
                try:
                    v()
                except ConfigError:
                    raise
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        try:
            self.model.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.stage.ctc_weight > 0 and not self.model.ctc.enabled:
            raise ConfigError("stage.ctc_weight > 0 but model.ctc.enabled is false")
        if self.stage.bestrq_weight > 0 and not self.model.bestrq.enabled:
            raise ConfigError("stage.bestrq_weight > 0 but model.bestrq.enabled is false")
        if self.stage.bestrq_weight > 0 and self.stage.kind != "sft":
            raise ConfigError(f"stage.bestrq_weight > 0 needs stage.kind 'sft' (teacher-forced losses), got {self.stage.kind!r}")
        if self.stage.aed_weight > 0 and not self.model.aed.enabled:
            raise ConfigError("stage.aed_weight > 0 but model.aed.enabled is false")
        if self.stage.aed_weight > 0 and self.stage.kind != "sft":
            raise ConfigError(f"stage.aed_weight > 0 needs stage.kind 'sft' (teacher-forced losses), got {self.stage.kind!r}")
        if any(p.endswith(":lora") for p in self.stage.trainable) and self.model.llm.lora.rank <= 0:
            raise ConfigError("stage.trainable uses 'llm:lora' but model.llm.lora.rank is 0")
        if self.stage.kind == "grpo" and self.run.on_nonfinite == "skip":
            raise ConfigError("run.on_nonfinite='skip' is for sft stages; a grpo stage stops ('stop')")
        if self.stage.kind == "grpo" and self.optim.accum_steps != 1:
            raise ConfigError("optim.accum_steps must be 1 for a grpo stage (each rollout batch is one update)")
        return self
