"""Glue between the pure steps of `train.step` and a device mesh.

`train.setup.build_steps` is the one caller of `make_sharded_steps`; the loop then does::

    state = built.init_state(shard_state(params, steps.state_shardings["params"]))
    state, metrics = steps.train(state, shard_batch(batch, mesh), replicate(norm, mesh))
    state, metrics = steps.accumulate(state, shard_micro_batches(micro, mesh), replicate(norm, mesh))
    steps.counter.count                                                 # compiles so far

Every jit has explicit in/out shardings; the state argument is donated. A batch's rows lie over
data x fsdp; micro-batches stacked [k, B, ...] keep the k axis whole on every device. The traced
functions run inside `sharding.activation_sharding(mesh, rules)`, so the models' `constrain`
calls take effect. `CompileCounter` counts traces (one per new input-shape signature = one
compile); the loop compiles `accumulate` ahead of time, once per bucket (`train.precompile`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funasr_jax.models.axes import logical_axes_for
from funasr_jax.models.batch import Batch
from kernels import kernel_layout, record_selections
from sharding.context import activation_sharding
from sharding.mesh import make_mesh
from sharding.rules import ShardingRules, get_rules
from sharding.specs import (
    batch_sharding,
    batch_shards,
    batch_spec,
    check_sufficiently_sharded,
    opt_state_shardings,
    param_shardings,
    replicated,
)


class BatchShapeError(ValueError):
    """A batch does not fit the mesh (rows not divisible by the batch shards)."""


@dataclass
class CompileCounter:
    """Counts traces of the wrapped step functions: `count` in all, `by_name[name]`, the
    batch-shape signature of every trace in `signatures` (name, ((key, shape), ...)), and in
    `kernels` the implementation each kernel op ran in those traces (op -> names, e.g.
    {"attention": ["xla"], "ctc_loss": ["pallas_gpu"]})."""

    count: int = 0
    by_name: dict = field(default_factory=dict)
    signatures: list = field(default_factory=list)
    kernels: dict = field(default_factory=dict)

    def record(self, name: str, batch) -> None:
        self.count += 1
        self.by_name[name] = self.by_name.get(name, 0) + 1
        sig = tuple(sorted((k, tuple(v.shape)) for k, v in batch.arrays().items())) if isinstance(batch, Batch) else ()
        self.signatures.append((name, sig))


def mesh_and_rules(mesh_cfg, devices=None) -> tuple[jax.sharding.Mesh, ShardingRules]:
    """`MeshConfig` (preset, rules, rule_overrides) -> (Mesh, ShardingRules)."""
    mesh = make_mesh(mesh_cfg.preset, devices)
    rules = get_rules(getattr(mesh_cfg, "rules", "default"), getattr(mesh_cfg, "rule_overrides", ()))
    return mesh, rules


def state_shardings(abstract_state, mesh, rules: ShardingRules, *, min_sharded_size: int = 1_000_000):
    """NamedSharding tree for a train state {"step", "params", "opt_state", "rng", ...}.

    Keys ending in "params" are sharded by the parameter rules, "opt_state" like the params it
    mirrors, anything else replicated. Raises InsufficientShardingError (naming the tensors) when
    tensors above `min_sharded_size` elements stay replicated on a mesh with fsdp / tensor > 1.
    """
    rep = replicated(mesh)
    p_sh = param_shardings(abstract_state["params"], mesh, rules, logical_axes_for)
    out = {}
    for k, v in abstract_state.items():
        if k == "params":
            out[k] = p_sh
        elif k.endswith("params"):
            out[k] = param_shardings(v, mesh, rules, logical_axes_for)
        elif k == "opt_state":
            out[k] = opt_state_shardings(v, abstract_state["params"], p_sh, mesh)
        else:
            out[k] = jax.tree_util.tree_map(lambda _: rep, v)
    check_sufficiently_sharded(abstract_state["params"], p_sh, mesh, min_size=min_sharded_size, what="parameter")
    if "opt_state" in abstract_state:
        check_sufficiently_sharded(abstract_state["opt_state"], out["opt_state"], mesh, min_size=min_sharded_size,
                                   what="optimizer-state")
    return out


def _traced(fn: Callable, name: str, counter: CompileCounter, mesh, rules, batch_arg: int | None):
    @functools.wraps(fn)
    def run(*args):
        counter.record(name, args[batch_arg] if batch_arg is not None else None)
        with activation_sharding(mesh, rules), record_selections(counter.kernels), kernel_layout(
                mesh, batch_axes=rules.activation_axes("batch"), head_axes=rules.activation_axes("heads")):
            return fn(*args)

    return run


def micro_batch_sharding(mesh) -> NamedSharding:
    """Micro-batches stacked [k, B, ...]: the k axis unsharded, rows over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(None, *batch_spec(mesh)))


def check_batch(abstract_batch: Batch, mesh, row_axis: int = 0) -> None:
    n = batch_shards(mesh)
    for k, v in abstract_batch.arrays().items():
        if v.shape[row_axis] % n:
            raise BatchShapeError(f"batch[{k!r}] has {v.shape[row_axis]} rows, not a multiple of the {n} batch "
                                  f"shards (data x fsdp) of mesh {dict(mesh.shape)}; change data.batch_size or "
                                  "mesh.preset")


def jit_sharded_train_step(train_step, abstract_state, abstract_batch, mesh, rules: ShardingRules, *,
                           counter: CompileCounter | None = None, min_sharded_size: int = 1_000_000,
                           shardings=None):
    """jax.jit of `train_step(state, batch, norm) -> (state, metrics)` with explicit shardings.

    in: state (sharded by `state_shardings`, donated), batch (rows over data x fsdp), norm
    (replicated); out: (state with the same shardings, metrics replicated).
    `abstract_batch` (arrays or ShapeDtypeStructs) is only checked for divisibility.
    """
    counter = counter if counter is not None else CompileCounter()
    sh = shardings or state_shardings(abstract_state, mesh, rules, min_sharded_size=min_sharded_size)
    if abstract_batch is not None:
        check_batch(abstract_batch, mesh)
    rep = replicated(mesh)
    fn = _traced(train_step, "train", counter, mesh, rules, 1)
    return jax.jit(fn, in_shardings=(sh, batch_sharding(mesh), rep), out_shardings=(sh, rep),
                   donate_argnums=(0,))


@dataclass
class ShardedSteps:
    """`train.step.StepFns` jitted for one mesh: the fused one-batch step, the accumulating step
    the loop runs, and eval."""

    mesh: jax.sharding.Mesh
    rules: ShardingRules
    state_shardings: dict
    counter: CompileCounter
    train: Callable  # (state, batch, norm) -> (state, metrics); state donated
    accumulate: Callable  # (state, micro-batches [k, B, ...], norm) -> (state, metrics); state donated
    eval: Callable  # (params, batch) -> metrics


def make_sharded_steps(steps, abstract_state, mesh, rules: ShardingRules, *, min_sharded_size: int = 1_000_000
                       ) -> ShardedSteps:
    """`steps` (a `train.step.StepFns`) -> ShardedSteps."""
    counter = CompileCounter()
    sh = state_shardings(abstract_state, mesh, rules, min_sharded_size=min_sharded_size)
    rep, bsh, psh = replicated(mesh), batch_sharding(mesh), sh["params"]
    train = jit_sharded_train_step(steps.train, abstract_state, None, mesh, rules, counter=counter, shardings=sh)

    def accumulate(state, micro, norm):
        return steps.accumulate(state, micro, norm, grad_sharding=psh)

    accumulate = jax.jit(_traced(accumulate, "accumulate", counter, mesh, rules, 1),
                         in_shardings=(sh, micro_batch_sharding(mesh), rep), out_shardings=(sh, rep),
                         donate_argnums=(0,))
    evaluate = jax.jit(_traced(steps.eval, "eval", counter, mesh, rules, 1), in_shardings=(psh, bsh),
                       out_shardings=rep)
    return ShardedSteps(mesh, rules, sh, counter, train, accumulate, evaluate)


@dataclass
class ShardedGRPOSteps:
    """`train.rl.GRPOStepFns` jitted for one mesh (rows of the batch and of the B x G samples
    over data x fsdp)."""

    mesh: jax.sharding.Mesh
    rules: ShardingRules
    state_shardings: dict
    counter: CompileCounter
    rollout: Callable  # (params, rng, batch) -> (completions [S, N], lengths [S])
    update: Callable  # (state, batch, completions, lengths, rewards) -> (state, metrics); state donated


def make_sharded_grpo_steps(steps, abstract_state, mesh, rules: ShardingRules, *,
                            min_sharded_size: int = 1_000_000) -> ShardedGRPOSteps:
    counter = CompileCounter()
    sh = state_shardings(abstract_state, mesh, rules, min_sharded_size=min_sharded_size)
    rep, bsh = replicated(mesh), batch_sharding(mesh)
    rollout = jax.jit(_traced(steps.rollout, "rollout", counter, mesh, rules, 2), in_shardings=(sh["params"], rep, bsh),
                      out_shardings=(bsh, bsh))
    update = jax.jit(_traced(steps.update, "update", counter, mesh, rules, 1), in_shardings=(sh, bsh, bsh, bsh, bsh),
                     out_shardings=(sh, rep), donate_argnums=(0,))
    return ShardedGRPOSteps(mesh, rules, sh, counter, rollout, update)


def local_rows(x) -> np.ndarray:
    """This process's rows of a global array sharded along dim 0 (the whole array on one process)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    seen, parts = set(), []
    for shard in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0):
        start = shard.index[0].start or 0
        if start not in seen:
            seen.add(start)
            parts.append(np.asarray(shard.data))
    return np.concatenate(parts, axis=0)


def shard_rows(x, mesh):
    """This process's rows (numpy) -> a global array, rows over data x fsdp."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(x))


def _global_from_host(x, sharding: NamedSharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def shard_state(state, shardings):
    """Place a state onto the mesh: host numpy / single-device arrays (identical on every
    process) are split into shards; global arrays already laid out as asked are kept."""
    multi = jax.process_count() > 1

    def put(x, s):
        if isinstance(x, jax.Array):
            if x.sharding == s:
                return x
            if not multi or not x.is_fully_addressable:
                return jax.device_put(x, s)
        elif not multi:
            return jax.device_put(x, s)
        return _global_from_host(x, s)

    return jax.tree_util.tree_map(put, state, shardings)


def restore_target(abstract_state, shardings):
    """ShapeDtypeStructs carrying the CURRENT mesh's shardings: the target for orbax
    `StandardRestore` (e.g. `TrainCheckpointer.restore(restore_target(...))`), so a checkpoint
    written on any mesh / device count is read straight into this layout."""
    return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                  abstract_state, shardings)


def replicate(tree, mesh):
    """Small host values (the step's `norm`, scalars) -> replicated global arrays."""
    rep = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: _global_from_host(x, rep), tree)


def shard_micro_batches(micro, mesh) -> Batch:
    """The k micro-batches of one optimizer step (this process's rows of each, numpy `Batch`es of
    one shape) -> one `Batch` of global arrays [k, B, ...], k unsharded, rows over data x fsdp.
    Host-only fields are dropped."""
    micro = [b.on_device_fields() for b in micro]
    shapes = [tuple((k, np.shape(v)) for k, v in b.arrays().items()) for b in micro]
    if any(s != shapes[0] for s in shapes[1:]):
        raise BatchShapeError(f"the {len(micro)} micro-batches of one optimizer step differ in shape ({shapes}); "
                              "the planner gives every micro-batch of a step the same bucket")
    sh = micro_batch_sharding(mesh)
    n_local = max(1, batch_shards(mesh) // jax.process_count())

    def put(name, vs):
        v = np.stack([np.asarray(x) for x in vs])
        if v.shape[1] % n_local:
            raise BatchShapeError(f"batch.{name}: {v.shape[1]} local rows are not a multiple of the {n_local} "
                                  f"batch shards this process holds on mesh {dict(mesh.shape)}")
        return jax.make_array_from_process_local_data(sh, v)

    names = list(micro[0].arrays())
    return Batch(**{k: put(k, [b.arrays()[k] for b in micro]) for k in names})


def shard_batch(batch: Batch, mesh) -> Batch:
    """This process's rows of a global batch (numpy arrays) -> global arrays, rows over data x fsdp.

    Process p must hold rows [p*B/P, (p+1)*B/P) of the global batch (what the data pipeline
    gives with process_index / process_count). Host-only fields are dropped.
    """
    sh = batch_sharding(mesh)
    n_local = max(1, batch_shards(mesh) // jax.process_count())  # row shards held by this process

    def put(name, v):
        v = np.asarray(v)
        if v.shape[0] % n_local:
            raise BatchShapeError(f"batch.{name}: {v.shape[0]} local rows are not a multiple of the {n_local} "
                                  f"batch shards this process holds on mesh {dict(mesh.shape)}")
        return jax.make_array_from_process_local_data(sh, v)

    return Batch(**{k: put(k, v) for k, v in batch.on_device_fields().arrays().items()})
