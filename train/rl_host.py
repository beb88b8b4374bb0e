"""The host's part of a GRPO step: rollout on the mesh -> detokenise -> rewards -> update on the mesh.

`GRPOHost(cfg, steps, tokenizer, examples).step(state, batch)` runs one step and returns the new
state, the step's device metrics and its host figures: the mean of every reward component over the
batch's samples and the time split (rollout, reward, update seconds; each phase waits for the one
before, as GRPO must: the update needs the rewards, the next rollout the updated policy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from funasr_jax.data.manifest import Example
from funasr_jax.models.batch import Batch
from funasr_jax.rewards import UtteranceMeta, score_hypotheses
from funasr_jax.text.tokenizer import decode_generated
from train.sharded import local_rows, shard_batch, shard_rows


def utterance_metas(examples: Sequence[Example], example_index: np.ndarray) -> list[UtteranceMeta]:
    """Reward metadata per batch row (a padding row, index -1, gets an empty record)."""
    return [UtteranceMeta(examples[i].target, examples[i].language, tuple(examples[i].hotwords)) if i >= 0
            else UtteranceMeta("") for i in np.asarray(example_index)]


class GRPOHost:
    def __init__(self, cfg, steps, tokenizer, examples: Sequence[Example]):
        self.cfg, self.steps, self.tokenizer, self.examples = cfg, steps, tokenizer, examples
        self.group = cfg.grpo.group_size
        self.weights = tuple((n, float(w)) for n, w in cfg.grpo.rewards)

    def step(self, state, batch: Batch):
        """One GRPO step on this process's rows of a global batch. Returns (state, device metrics,
        host figures {"r/<name>": mean, "t_rollout", "t_reward", "t_update", "hyps": first row's samples})."""
        mesh = self.steps.mesh
        dev_batch = shard_batch(batch, mesh)
        t0 = time.time()
        comps, lengths = self.steps.rollout(state["params"], state["rng"], dev_batch)
        tokens, n = local_rows(comps), local_rows(lengths)
        t1 = time.time()
        texts = decode_generated(self.tokenizer, tokens, n)
        metas = [m for m in utterance_metas(self.examples, batch.example_index) for _ in range(self.group)]
        rewards, parts = score_hypotheses(texts, metas, self.weights)
        real = np.repeat(np.asarray(batch.weight) > 0, self.group)
        t2 = time.time()
        state, metrics = self.steps.update(state, dev_batch, comps, lengths, shard_rows(rewards, mesh))
        jax.block_until_ready(metrics)
        t3 = time.time()
        host = {f"r/{k}": float(v[real].mean()) if real.any() else 0.0 for k, v in parts.items()}
        host.update(t_rollout=t1 - t0, t_reward=t2 - t1, t_update=t3 - t2)
        host["samples"] = texts[:self.group]
        return state, metrics, host
