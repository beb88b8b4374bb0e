"""Best-RQ pieces against brute-force numpy references on tiny inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.models.bestrq import (bestrq_loss, make_quantizer, mask_features,
                                      quantize, span_mask, stack_frames)
from funasr_jax.models.config import BestRQConfig, tiny_config
from funasr_jax.models.funasr import FunASRNano, init_params

RQ = BestRQConfig(codebook_size=32, code_dim=8, num_codebooks=2, stack=2, mask_prob=0.1, span=3, seed=7)


def brute_targets(q, feats, lengths, stack):
    b, t, d = feats.shape
    out = np.zeros((b, t, q["projection"].shape[0]), np.int64)
    for i in range(b):
        n = lengths[i]
        rows = []
        for f in range(n):
            row = np.concatenate([feats[i, f + s] if f + s < t else np.zeros(d) for s in range(stack)])
            rows.append(row)
        x = np.array(rows, np.float64)
        x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        for f in range(n):
            for k in range(q["projection"].shape[0]):
                v = x[f] @ q["projection"][k].astype(np.float64)
                v = v / np.linalg.norm(v)
                dist = np.linalg.norm(q["codebooks"][k].astype(np.float64) - v[None], axis=1)
                out[i, f, k] = np.argmin(dist)
    return out


def test_quantizer_is_drawn_from_its_seed():
    a, b = make_quantizer(RQ, 5), make_quantizer(RQ, 5)
    c = make_quantizer(BestRQConfig(**{**RQ.__dict__, "seed": 8}), 5)
    for name in ("projection", "codebooks"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
    assert a["projection"].shape == (2, 10, 8) and a["codebooks"].shape == (2, 32, 8)
    np.testing.assert_allclose(np.linalg.norm(a["codebooks"], axis=-1), 1.0, rtol=1e-6)


def test_targets_equal_brute_force_nearest_codeword():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 9, 5)).astype(np.float32) * 3 + 1
    lengths = np.array([9, 6])
    q = make_quantizer(RQ, 5)
    got = np.asarray(quantize({k: jnp.asarray(v) for k, v in q.items()}, jnp.asarray(feats), jnp.asarray(lengths),
                              RQ.stack))
    want = brute_targets(q, feats, lengths, RQ.stack)
    assert (got[1, 6:] == 0).all()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1, :6], want[1, :6])
    assert len(np.unique(got[0])) > 3  # the targets are not degenerate


def test_stack_frames_pads_with_zeros():
    x = jnp.arange(12.0).reshape(1, 4, 3)
    y = np.asarray(stack_frames(x, 2))
    np.testing.assert_array_equal(y[0, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y[0, 3], [9, 10, 11, 0, 0, 0])


def test_span_mask_against_brute_force_and_statistics():
    key = jax.random.PRNGKey(3)
    lengths = jnp.array([400, 250, 0, 1000])
    mask = np.asarray(span_mask(key, lengths, 1000, 0.08, 6))
    starts = np.asarray(jax.random.bernoulli(key, 0.08, (4, 1000)))
    want = np.zeros_like(mask)
    for b in range(4):
        n = int(lengths[b])
        for t in range(n):
            if starts[b, t]:
                want[b, t:min(t + 6, n)] = True
    np.testing.assert_array_equal(mask, want)
    assert not mask[1, 250:].any() and not mask[2].any()
    # statistics over many utterances: masked share ~ 1 - (1 - p) ** span
    big = np.asarray(span_mask(jax.random.PRNGKey(1), jnp.full((64,), 2000), 2000, 0.08, 6))
    expected = 1 - (1 - 0.08) ** 6
    assert abs(big.mean() - expected) < 0.01, (big.mean(), expected)
    runs = np.diff(np.concatenate([[0], big[0].astype(int), [0]]))
    lengths_of_runs = np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)
    assert lengths_of_runs.min() >= 6 or big[0, -1]  # only a run cut at the end can be shorter


def test_masked_frames_become_noise_and_others_stay():
    feats = jnp.full((2, 500, 4), 5.0)
    mask = jnp.zeros((2, 500), bool).at[:, ::2].set(True)
    out = np.asarray(mask_features(jax.random.PRNGKey(0), feats, mask, 0.1))
    np.testing.assert_array_equal(out[:, 1::2], 5.0)
    assert abs(out[:, ::2].std() - 0.1) < 0.01 and abs(out[:, ::2].mean()) < 0.01


def test_loss_counts_masked_frames_only():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 5, 2, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5, 2))
    mask = rng.random((2, 5)) < 0.5
    mask[0, 0] = True
    weight = np.array([1.0, 0.0])
    out = bestrq_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), jnp.asarray(weight))
    total, count, correct = 0.0, 0, 0
    for b in range(2):
        for t in range(5):
            if not mask[b, t] or weight[b] == 0:
                continue
            for k in range(2):
                z = logits[b, t, k].astype(np.float64)
                total += np.log(np.exp(z).sum()) - z[targets[b, t, k]]
                count += 1
                correct += int(np.argmax(z) == targets[b, t, k])
    np.testing.assert_allclose(float(out["sum"]), total, rtol=1e-5)
    assert float(out["count"]) == count and float(out["correct"]) == correct
    # changing logits of unmasked frames changes nothing
    noisy = logits + 100 * (~mask)[..., None, None]
    again = bestrq_loss(jnp.asarray(noisy), jnp.asarray(targets), jnp.asarray(mask), jnp.asarray(weight))
    np.testing.assert_allclose(float(again["sum"]), float(out["sum"]), rtol=1e-6)


@pytest.fixture(scope="module")
def model_and_params():
    rq = BestRQConfig(enabled=True, codebook_size=64, code_dim=8, num_codebooks=1, seed=3)
    cfg = tiny_config().replace(bestrq=rq)
    model = FunASRNano(cfg)
    feats = jnp.asarray(np.random.default_rng(0).standard_normal((2, 40, cfg.encoder.input_size)), jnp.float32)
    lengths = jnp.array([40, 31])
    params = init_params(cfg, jax.random.PRNGKey(0))
    return cfg, rq, model, params, feats, lengths


def forward(model, params, feats, lengths, rng=None):
    return model.apply({"params": params}, feats, lengths, rng, method=FunASRNano.bestrq_outputs)


def test_model_quantizer_is_frozen_and_seeded(model_and_params):
    cfg, rq, model, params, feats, lengths = model_and_params
    other = init_params(cfg, jax.random.PRNGKey(9))
    q = make_quantizer(rq, cfg.encoder.input_size)
    for name in ("projection", "codebooks"):
        np.testing.assert_array_equal(params["bestrq_quantizer"][name], q[name])
        np.testing.assert_array_equal(other["bestrq_quantizer"][name], q[name])

    def loss(p):
        out = forward(model, p, feats, lengths, jax.random.PRNGKey(1))
        return bestrq_loss(out["logits"], out["targets"], out["mask"])["loss"]

    grads = jax.grad(loss)(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads["bestrq_quantizer"]))
    assert float(jnp.abs(grads["bestrq_head"]["kernel"]).max()) > 0
    out = forward(model, params, feats, lengths, jax.random.PRNGKey(1))
    assert out["logits"].shape == (2, 40, 1, 64) and out["mask"].any() and not out["mask"][1, 31:].any()
    # targets are those of the clean input, whatever the masking
    clean = forward(model, params, feats, lengths)
    np.testing.assert_array_equal(out["targets"], clean["targets"])
    assert not clean["mask"].any()


def test_encoder_tree_matches_the_asr_model(model_and_params):
    cfg, _, _, params, _, _ = model_and_params
    asr = init_params(cfg.replace(bestrq=BestRQConfig()), jax.random.PRNGKey(0))
    assert "bestrq_head" not in asr and "bestrq_head" in params
    shapes = lambda t: jax.tree_util.tree_map(lambda x: x.shape, t)
    assert shapes(params["audio_encoder"]) == shapes(asr["audio_encoder"])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="bestrq.mask_prob"):
        tiny_config().replace(bestrq=BestRQConfig(enabled=True, mask_prob=1.5)).validate()
    with pytest.raises(ValueError, match="bestrq.codebook_size"):
        make_quantizer(BestRQConfig(codebook_size=0), 4)
