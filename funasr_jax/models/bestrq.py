"""Best-RQ self-supervised pre-training of the SAN-M encoder (BEST-RQ, Chiu et al. 2022; report §4.1).

A frozen random-projection quantiser turns each (stacked, normalised) input frame into integer
targets; spans of input frames are masked (replaced by noise); softmax heads on the encoder output
predict the targets of the masked frames; the loss is the cross-entropy over masked frames only.

Frames are the encoder's input frames: LFR frames of 60 ms, 560 features (80 mel x 7 stacked).
The SAN-M encoder keeps the frame rate, so encoder frame t predicts the target of input frame t;
`stack` > 1 stacks that many consecutive input frames (t .. t+stack-1, zero past the end) into
the quantiser's input of frame t.

The quantiser is drawn once from `BestRQConfig.seed` with numpy (projection: Xavier-normal
[K, D_in * stack, code_dim]; codebooks: standard normal, l2-normalised, [K, C, code_dim]) and
lives in the parameter tree under `bestrq_quantizer` (frozen: never trained, saved with the
checkpoint), so targets are identical across steps and after a resume. The nearest codeword is
found by l2 distance between the l2-normalised projection and the (unit) codewords, i.e. the
largest dot product.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from funasr_jax.models.config import BestRQConfig


def make_quantizer(rq: BestRQConfig, input_dim: int) -> dict[str, np.ndarray]:
    """The frozen quantiser drawn from rq.seed: {"projection" [K, D_in*stack, d], "codebooks" [K, C, d]}."""
    rq.validate()
    rng = np.random.default_rng(rq.seed)
    fan_in, fan_out = input_dim * rq.stack, rq.code_dim
    std = np.sqrt(2.0 / (fan_in + fan_out))
    projection = rng.standard_normal((rq.num_codebooks, fan_in, fan_out)) * std
    codebooks = rng.standard_normal((rq.num_codebooks, rq.codebook_size, rq.code_dim))
    codebooks /= np.linalg.norm(codebooks, axis=-1, keepdims=True)
    return {"projection": projection.astype(np.float32), "codebooks": codebooks.astype(np.float32)}


def stack_frames(feats, stack: int):
    """[B, T, D] -> [B, T, D * stack]: frame t concatenates frames t .. t+stack-1 (zeros past T)."""
    if stack == 1:
        return feats
    b, t, d = feats.shape
    padded = jnp.pad(feats, ((0, 0), (0, stack - 1), (0, 0)))
    return jnp.concatenate([padded[:, i:i + t] for i in range(stack)], axis=-1)


def normalise_frames(x, lengths, eps: float = 1e-5):
    """Per-utterance, per-feature zero mean / unit variance over the valid frames. x [B, T, D]."""
    valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None].astype(x.dtype)
    n = jnp.maximum(valid.sum(axis=1, keepdims=True), 1.0)
    mean = (x * valid).sum(axis=1, keepdims=True) / n
    var = (((x - mean) * valid) ** 2).sum(axis=1, keepdims=True) / n
    return (x - mean) * jax.lax.rsqrt(var + eps) * valid


def quantize(quantizer, feats, lengths, stack: int = 1):
    """Integer targets [B, T, K] (int32) of input frames feats [B, T, D_in]; padding frames get 0."""
    x = normalise_frames(stack_frames(feats.astype(jnp.float32), stack), lengths)
    proj = jnp.einsum("btf,kfd->btkd", x, quantizer["projection"], precision=jax.lax.Precision.HIGHEST)
    proj = proj / jnp.maximum(jnp.linalg.norm(proj, axis=-1, keepdims=True), 1e-12)
    scores = jnp.einsum("btkd,kcd->btkc", proj, quantizer["codebooks"], precision=jax.lax.Precision.HIGHEST)
    valid = jnp.arange(feats.shape[1])[None, :] < lengths[:, None]
    return jnp.where(valid[..., None], jnp.argmax(scores, axis=-1), 0).astype(jnp.int32)


def span_mask(rng, lengths, num_frames: int, mask_prob: float, span: int):
    """bool [B, T]: each valid frame starts a span of `span` frames with probability mask_prob.

    Spans are cut at the utterance's length; padding frames are never masked.
    """
    b = lengths.shape[0]
    starts = jax.random.bernoulli(rng, mask_prob, (b, num_frames))
    valid = jnp.arange(num_frames)[None, :] < lengths[:, None]
    starts &= valid
    # frame t is masked when a span starts in (t - span, t]: a running count of starts over a window
    counts = jnp.cumsum(starts.astype(jnp.int32), axis=1)
    shifted = jnp.pad(counts, ((0, 0), (span, 0)))[:, :num_frames]
    return ((counts - shifted) > 0) & valid


def mask_features(rng, feats, mask, noise_std: float):
    """feats [B, T, D] with masked frames (mask [B, T]) replaced by N(0, noise_std^2) noise."""
    noise = noise_std * jax.random.normal(rng, feats.shape, jnp.float32)
    return jnp.where(mask[..., None], noise.astype(feats.dtype), feats)


def bestrq_loss(logits, targets, mask, row_weight=None):
    """Cross-entropy over masked frames only, summed over codebooks.

    logits [B, T, K, C] (unnormalised), targets [B, T, K] int, mask [B, T] bool, row_weight [B]
    (0 drops a padding row). Returns dict(loss = sum / count, sum, count = masked frames x K,
    correct = argmax hits).
    """
    scored = mask
    if row_weight is not None:
        scored = scored & (row_weight > 0)[:, None]
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    w = scored[..., None].astype(jnp.float32)
    total = ((logz - picked) * w).sum()
    count = w.sum() * targets.shape[-1]
    correct = ((jnp.argmax(logits, -1) == targets) * w).sum()
    return {"loss": total / jnp.maximum(count, 1.0), "sum": total, "count": count, "correct": correct}


def bestrq_forward(rq: BestRQConfig, quantizer, feats, feat_lengths, rng, encode, head):
    """The Best-RQ forward: targets of the clean input, masked input -> encoder -> heads.

    quantizer: {"projection", "codebooks"} (gradient stopped here); encode: masked feats [B, T, 560]
    -> encoder output [B, T, D_enc]; head: [B, T, D_enc] -> [B, T, K * C]. With rng None nothing is
    masked (for probing). Returns dict(logits [B, T, K, C] f32, targets [B, T, K] int32, mask [B, T]).
    """
    targets = quantize(jax.lax.stop_gradient(quantizer), feats, feat_lengths, rq.stack)
    if rng is None:
        mask = jnp.zeros(feats.shape[:2], bool)
        inputs = feats
    else:
        k_mask, k_noise = jax.random.split(rng)
        mask = span_mask(k_mask, feat_lengths, feats.shape[1], rq.mask_prob, rq.span)
        inputs = mask_features(k_noise, feats, mask, rq.noise_std)
    logits = head(encode(inputs)).astype(jnp.float32)
    b, t, _ = logits.shape
    return {"logits": logits.reshape(b, t, rq.num_codebooks, rq.codebook_size), "targets": targets, "mask": mask}


class QuantizerParams(nn.Module):
    """Holds the frozen quantiser as params (so checkpoints carry it); init ignores the key."""

    rq: BestRQConfig
    input_dim: int

    @nn.compact
    def __call__(self):
        drawn = {}

        def frozen(name):
            def init(_key):
                if not drawn:
                    drawn.update(make_quantizer(self.rq, self.input_dim))
                return jnp.asarray(drawn[name])
            return init

        return {name: self.param(name, frozen(name)) for name in ("projection", "codebooks")}
