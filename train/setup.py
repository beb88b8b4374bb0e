"""The one way to build a training step: a validated `TrainConfig` (+ a mesh) -> what a step needs.

Two levels, so tools that never touch devices share the same construction:

    parts = stage_parts(cfg)                 # model, abstract params, optimizer, freeze mask, loss
    built = build_steps(parts, mesh, rules)  # abstract state + the jitted, sharded StepFns

`prepare(cfg)` does both on the config's mesh. The training loop (`train.loop`), the step
benchmark (`train.bench`) and the memory planner (`train.plan`) all start here; a new stage
kind (GRPO, pre-training) adds its loss to `StageParts` rather than a fourth copy of this.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import jax
import optax

from funasr_jax.configtools import ConfigError
from funasr_jax.models.batch import Batch
from funasr_jax.models.config import FunASRConfig
from funasr_jax.models.funasr import FunASRNano, abstract_params
from sharding.paths import flatten
from sharding.rules import ShardingRules
from train.config import TrainConfig
from train.optimizer import make_optimizer
from funasr_jax.data.datasets import load_text_tools
from funasr_jax.decode.sample import SamplingConfig
from train.rl import GRPOSettings, GRPOStepFns, make_grpo_steps, only_adapters_trained
from train.sharded import ShardedSteps, make_sharded_grpo_steps, make_sharded_steps, mesh_and_rules
from train.step import LossWeights, StepFns, init_state, loss_fn, make_steps, stop_frozen_gradients


@dataclass(frozen=True)
class StageParts:
    """Everything about one stage's step that needs no device.

    abstract_params: ShapeDtypeStruct tree of the params; mask: same tree of bools (True =
    trained); tx: the optax chain (frozen leaves carry no state); steps: the pure StepFns.
    """

    cfg: TrainConfig
    model: FunASRNano
    abstract_params: Any
    tx: optax.GradientTransformation
    mask: Any
    weights: LossWeights
    steps: StepFns
    grpo: GRPOStepFns | None = None  # stage.kind == "grpo": rollout / update / init (train.rl)

    def init_state(self, params, seed: int):
        """The stage's train state from params (GRPO may add a frozen `ref_params` copy)."""
        if self.grpo is not None:
            return self.grpo.init(params, self.tx, seed)
        return init_state(params, self.tx, seed)

    def frozen_loss(self, params, batch: Batch, rng, norm):
        """The scalar training loss with frozen parameters behind stop_gradient (what `grad` differentiates)."""
        return loss_fn(stop_frozen_gradients(params, self.mask), batch, rng, norm, model=self.model,
                       weights=self.weights)[0]

    def abstract_state(self, seed: int):
        """ShapeDtypeStruct tree of `init_state(params, tx, seed)`."""
        return jax.eval_shape(lambda p: self.init_state(p, seed), self.abstract_params)


def init_from_model_config(cfg: TrainConfig, source_cfg: FunASRConfig | None) -> FunASRConfig:
    """The model of a stage that starts from `run.init_from` (whose model config is `source_cfg`).

    The architecture is the source's; LoRA, the Best-RQ / AED heads, dtype, attention / CTC-loss
    kernels, remat, matmul precision, layer scanning and `ctc.detach_encoder` are this run's. A
    model field this run sets with `--set` (`TrainConfig.overrides`) is never dropped: it is
    applied when every parameter keeps the source's shape (dropout rates, norm eps, ...; a line on
    stderr says so), otherwise ConfigError names the field, the requested value and the source's.
    """
    if source_cfg is None:
        return cfg.model
    run = cfg.model
    llm = dataclasses.replace(source_cfg.llm, lora=run.llm.lora)
    ctc = dataclasses.replace(source_cfg.ctc, detach_encoder=run.ctc.detach_encoder)
    merged = source_cfg.replace(llm=llm, ctc=ctc, bestrq=run.bestrq, aed=run.aed, dtype=run.dtype,
                                attention_impl=run.attention_impl, ctc_loss_impl=run.ctc_loss_impl, remat=run.remat,
                                matmul_precision=run.matmul_precision, scan_layers=run.scan_layers)
    shapes = None
    for field in requested_model_fields(cfg.overrides):
        want, have = _get_field(run, field), _get_field(merged, field)
        if want == have:
            continue
        candidate = _set_field(merged, field, want)
        if shapes is None:
            shapes = _param_shapes(merged)
        source = f"run.init_from {cfg.run.init_from}"
        try:
            candidate.validate()
            fits = _param_shapes(candidate) == shapes
        except ValueError as e:
            raise ConfigError(f"model.{field}={want!r} (--set) does not fit the model of {source}: {e}") from None
        if not fits:
            raise ConfigError(f"model.{field}={want!r} (--set) cannot apply: the model of {source} has "
                              f"model.{field}={have!r}, and its parameter shapes follow from it (the architecture "
                              "comes from the source); drop the --set, or train from scratch without run.init_from")
        print(f"init_from: model.{field}={want!r} (--set) applied over the source's {have!r}", file=sys.stderr)
        merged = candidate
    return merged


def requested_model_fields(overrides) -> list[str]:
    """The model fields ("encoder.dropout_rate") of `--set model.a.b=v` items, in order, once each."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith("model.") and key[len("model."):] not in out:
            out.append(key[len("model."):])
    return out


def _get_field(obj, dotted: str):
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def _set_field(obj, dotted: str, value):
    head, _, rest = dotted.partition(".")
    return dataclasses.replace(obj, **{head: _set_field(getattr(obj, head), rest, value) if rest else value})


def _param_shapes(model_cfg: FunASRConfig) -> dict:
    return {path: (tuple(x.shape), str(x.dtype)) for path, x in flatten(abstract_params(model_cfg)).items()}


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(llm=cfg.stage.llm_weight, ctc=cfg.stage.ctc_weight, ctc_blank=cfg.model.ctc.blank,
                       ctc_impl=cfg.model.ctc_loss_impl, bestrq=cfg.stage.bestrq_weight,
                       aed=cfg.stage.aed_weight, aed_smoothing=cfg.model.aed.label_smoothing)


def stage_parts(cfg: TrainConfig, *, total_steps: int | None = None) -> StageParts:
    """Model, abstract params, optimizer + freeze mask, loss weights and pure steps of `cfg`.

    total_steps: length of the learning-rate schedule (default `cfg.run.steps`).
    """
    model = FunASRNano(cfg.model)
    abstract = abstract_params(cfg.model)
    tx, mask = make_optimizer(cfg.optim, abstract, cfg.stage.trainable, total_steps or cfg.run.steps)
    weights = loss_weights(cfg)
    grpo = make_grpo_steps(model, tx, mask, grpo_settings(cfg, mask)) if cfg.stage.kind == "grpo" else None
    steps = make_steps(model, tx, mask, weights, skip_nonfinite=cfg.run.on_nonfinite == "skip")
    return StageParts(cfg, model, abstract, tx, mask, weights, steps, grpo)


def grpo_settings(cfg: TrainConfig, mask, tokenizer=None) -> GRPOSettings:
    """`cfg.grpo` + the tokenizer's EOS / pad ids (read from `data.tokenizer` unless given) + the
    reference policy: adapters switched off when only LoRA adapters train, else a frozen copy."""
    g = cfg.grpo
    tok = tokenizer if tokenizer is not None else load_text_tools(cfg.data)[0]
    frame_s = cfg.frontend.lfr_n * cfg.frontend.frame_shift_ms / 1000.0
    return GRPOSettings(group_size=g.group_size, sampling=SamplingConfig(g.temperature, g.top_k, g.top_p, tok.vocab_size),
                        max_new_tokens=g.max_new_tokens, clip_eps=g.clip_eps, beta=g.beta, inner_steps=g.inner_steps,
                        adv_eps=g.adv_eps, eos_id=tok.eos_id, pad_id=tok.pad_id,
                        tokens_per_second=g.tokens_per_second, token_slack=g.token_slack, frame_seconds=frame_s,
                        reference="adapters_off" if only_adapters_trained(mask) else "copy")


@dataclass(frozen=True)
class BuiltSteps:
    """A stage's steps on a mesh: `steps.train(state, batch, norm)` etc. (train.sharded.ShardedSteps)."""

    parts: StageParts
    mesh: jax.sharding.Mesh
    rules: ShardingRules
    seed: int  # the state's RNG seed (init_state)
    abstract_state: Any
    steps: ShardedSteps  # (train.sharded.ShardedGRPOSteps for a grpo stage)

    def init_state(self, params):
        """A fresh state on the mesh from params already laid out as `steps.state_shardings["params"]`."""
        parts, seed = self.parts, self.seed
        return jax.jit(lambda p: parts.init_state(p, seed), out_shardings=self.steps.state_shardings)(params)


def build_steps(parts: StageParts, mesh, rules: ShardingRules, *, seed: int, min_sharded_size: int | None = None
                ) -> BuiltSteps:
    """Jit `parts.steps` for `mesh` with explicit shardings (state donated)."""
    abstract = parts.abstract_state(seed)
    msz = parts.cfg.mesh.min_sharded_size if min_sharded_size is None else min_sharded_size
    if parts.grpo is not None:
        steps = make_sharded_grpo_steps(parts.grpo, abstract, mesh, rules, min_sharded_size=msz)
    else:
        steps = make_sharded_steps(parts.steps, abstract, mesh, rules, min_sharded_size=msz)
    return BuiltSteps(parts, mesh, rules, seed, abstract, steps)


def prepare(cfg: TrainConfig, *, mesh_preset: str | None = None, devices=None, seed: int | None = None,
            min_sharded_size: int | None = None, total_steps: int | None = None) -> BuiltSteps:
    """`stage_parts` + the config's mesh (or `mesh_preset`) + `build_steps`.

    seed: the state's RNG seed (default `cfg.run.seed + 1`, what training uses).
    """
    mesh_cfg = cfg.mesh if mesh_preset is None else dataclasses.replace(cfg.mesh, preset=mesh_preset)
    mesh, rules = mesh_and_rules(mesh_cfg, devices)
    parts = stage_parts(cfg, total_steps=total_steps)
    return build_steps(parts, mesh, rules, seed=cfg.run.seed + 1 if seed is None else seed,
                       min_sharded_size=min_sharded_size)
