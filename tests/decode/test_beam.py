"""beam_search: beam 1 vs greedy_generate, and wider beams vs brute force / a reference beam search
over scores from the model's full forward pass (no KV cache) and from CTC path enumeration."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.decode import GenerateInputError, beam_search, greedy_generate, left_pad
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

D = 32


def tiny_lm(vocab: int, seed: int, scale: float = 4.0):
    """A random 2-layer Qwen3 (hidden 32) with weights scaled up so that its distributions are peaky."""
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    lm = Qwen3ForCausalLM(cfg)
    params = lm.init(jax.random.PRNGKey(seed), jnp.zeros((1, 3, D)))["params"]
    return lm, jax.tree_util.tree_map(lambda x: x * scale, params)


def prompts(lm, params, ids: np.ndarray, lengths):
    """Right-padded ids [B, P] -> left-padded prompt embeddings [B, P, D] (row b: its first lengths[b] ids)."""
    emb = lm.apply({"params": params}, jnp.asarray(ids, jnp.int32), method="embed")
    return left_pad(emb, jnp.asarray(lengths))


def random_ctc(seed: int, b: int, t: int, v_ctc: int, sharp: float = 2.0):
    rng = np.random.default_rng(seed)
    return np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(size=(b, t, v_ctc)) * sharp, jnp.float32), axis=-1))


# ----------------------------------------------------------------------------- brute-force references


def llm_prefix_logprobs(lm, params, prompt_ids, v: int, n: int) -> dict[tuple, float]:
    """log p(h | prompt) for every token sequence h of length 1..n, from ONE full forward pass (no
    cache, positions 0..) over prompt + every length-n sequence."""
    seqs = np.array(list(itertools.product(range(v), repeat=n)), np.int32)  # [V^n, n]
    full = np.concatenate([np.broadcast_to(np.asarray(prompt_ids, np.int32), (len(seqs), len(prompt_ids))), seqs], 1)
    emb = lm.apply({"params": params}, jnp.asarray(full), method="embed")
    logits, _ = lm.apply({"params": params}, emb)
    lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), np.float64)
    p = len(prompt_ids)
    tok_lp = np.take_along_axis(lp[:, p - 1:p - 1 + n], seqs[..., None], axis=2)[..., 0]  # [V^n, n]
    cum = np.cumsum(tok_lp, axis=1)
    out = {}
    for s, c in zip(seqs, cum):
        for length in range(1, n + 1):
            out[tuple(int(x) for x in s[:length])] = float(c[length - 1])
    return out


def ctc_label_probs(logp: np.ndarray, length: int, blank: int) -> dict[tuple, float]:
    """P(label sequence) summed over every frame path of `length` frames."""
    out: dict[tuple, float] = {}
    for path in itertools.product(range(logp.shape[1]), repeat=length):
        pr = math.exp(sum(float(logp[t, s]) for t, s in enumerate(path)))
        labels, prev = [], None
        for s in path:
            if s != prev and s != blank:
                labels.append(s)
            prev = s
        out[tuple(labels)] = out.get(tuple(labels), 0.0) + pr
    return out


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def joint_totals(llm: dict, labels: dict | None, eos: int, w: float) -> dict[tuple, float]:
    """Total score of every prefix h: the LLM sum, or with CTC (the per-token gains telescope)
    (1 - w) llm(h) + w log psi(h) — and w log P(g) for h = g + EOS."""
    if labels is None:
        return dict(llm)
    out = {}
    for h, s in llm.items():
        if h[-1] == eos:
            ctc = _log(labels.get(h[:-1], 0.0))
        else:
            ctc = _log(sum(p for y, p in labels.items() if y[:len(h)] == h))
        out[h] = (1 - w) * s + w * ctc
    return out


def finished_hyps(v: int, n: int, eos: int, cap: int):
    """Every complete hypothesis: ends with EOS (no earlier EOS), or is EOS-free of length min(cap, n)."""
    cap = min(cap, n)
    out = []
    for length in range(1, cap + 1):
        for h in itertools.product(range(v), repeat=length):
            if eos in h[:-1]:
                continue
            if h[-1] == eos or length == cap:
                out.append(h)
    return out


def reference_beam(total: dict, v: int, n: int, eos: int, cap: int, k: int, lp: float):
    """Textbook beam search over precomputed prefix scores: keep the k best candidates by raw sum;
    a finished hypothesis is its own only candidate; the winner maximises total / len ** lp."""
    cap = min(cap, n)
    beams = [((), False)]
    for _ in range(n):
        cands = []
        for h, done in beams:
            if done:
                cands.append((total[h], h, True))
            else:
                for c in range(v):
                    h2 = h + (c,)
                    cands.append((total[h2], h2, c == eos or len(h2) >= cap))
        cands.sort(key=lambda x: -x[0])
        beams = [(h, d) for s, h, d in cands[:k] if s > -math.inf]
        if all(d for _, d in beams):
            break
    return max((h for h, _ in beams), key=lambda h: total[h] / len(h) ** lp)


def as_hyp(tokens, length) -> tuple:
    return tuple(int(x) for x in np.asarray(tokens)[: int(length)])


# ----------------------------------------------------------------------------- beam 1 == greedy


@pytest.mark.parametrize("joint", [False, True])
def test_beam_one_equals_greedy(joint):
    v, n, pad = 32, 8, 31
    lm, params = tiny_lm(v, seed=0)
    rng = np.random.default_rng(1)
    lengths = np.array([5, 2, 4])
    embeds = prompts(lm, params, rng.integers(0, v, (3, 5)), lengths)
    caps = jnp.asarray([8, 3, 6])
    kw = {}
    if joint:
        t, v_ctc = 6, 8  # labels 0..6 shared with the LLM, blank 7
        kw = dict(ctc_log_probs=jnp.asarray(random_ctc(2, 3, t, v_ctc)), ctc_lengths=jnp.asarray([6, 4, 5]),
                  ctc_weight=0.4, ctc_blank=v_ctc - 1)
    free, _ = greedy_generate(lm, params, embeds, jnp.asarray(lengths), max_new_tokens=n, eos_id=v, pad_id=pad, **kw)
    eos = int(np.asarray(free)[0, 2])  # row 0 emits EOS at step 2 (or earlier)
    want_t, want_l = greedy_generate(lm, params, embeds, jnp.asarray(lengths), max_new_tokens=n, eos_id=eos,
                                     pad_id=pad, row_max_new_tokens=caps, **kw)
    got_t, got_l, score = beam_search(lm, params, embeds, jnp.asarray(lengths), beam=1, max_new_tokens=n, eos_id=eos,
                                      pad_id=pad, row_max_new_tokens=caps, **kw)
    np.testing.assert_array_equal(np.asarray(got_t), np.asarray(want_t))
    np.testing.assert_array_equal(np.asarray(got_l), np.asarray(want_l))
    assert int(got_l[0]) <= 3 and int(got_l[1]) <= 3 and score.shape == (3,) and np.all(np.isfinite(score))
    if joint:  # the CTC scores matter: plain greedy picks differently somewhere
        plain, _ = greedy_generate(lm, params, embeds, jnp.asarray(lengths), max_new_tokens=n, eos_id=eos,
                                   pad_id=pad, row_max_new_tokens=caps)
        assert not np.array_equal(np.asarray(plain), np.asarray(want_t))


# ----------------------------------------------------------------------------- vs brute force


V, N, EOS, PAD = 6, 3, 2, 5
T_CTC, V_CTC = 4, 4  # CTC labels 0, 1, 2(=EOS, never a CTC label in practice), blank 3


@pytest.fixture(scope="module")
def brute_setup():
    lm, params = tiny_lm(V, seed=3, scale=3.0)
    ids = np.array([[1, 4, 0, 3], [4, 1, 5, 0]])
    lengths = np.array([4, 3])
    caps = np.array([3, 2])
    embeds = prompts(lm, params, ids, lengths)
    llm = [llm_prefix_logprobs(lm, params, ids[b, : lengths[b]], V, N) for b in range(2)]
    ctc_lp = random_ctc(4, 2, T_CTC, V_CTC, sharp=1.5)
    ctc_len = np.array([4, 3])
    labels = [ctc_label_probs(ctc_lp[b], int(ctc_len[b]), V_CTC - 1) for b in range(2)]
    return dict(lm=lm, params=params, embeds=embeds, lengths=lengths, caps=caps, llm=llm, ctc_lp=ctc_lp,
                ctc_len=ctc_len, labels=labels)


@pytest.mark.parametrize("w", [0.0, 0.5])
def test_beam_matches_reference_and_brute_force(brute_setup, w):
    s = brute_setup
    kw = {}
    if w > 0:
        kw = dict(ctc_log_probs=jnp.asarray(s["ctc_lp"]), ctc_lengths=jnp.asarray(s["ctc_len"]), ctc_weight=w,
                  ctc_blank=V_CTC - 1)
    totals = [joint_totals(s["llm"][b], s["labels"][b] if w > 0 else None, EOS, w) for b in range(2)]
    greedy_t, greedy_l = greedy_generate(s["lm"], s["params"], s["embeds"], jnp.asarray(s["lengths"]),
                                         max_new_tokens=N, eos_id=EOS, pad_id=PAD,
                                         row_max_new_tokens=jnp.asarray(s["caps"]), **kw)
    optima = {}
    for k in (2, 3, V * V, V ** N):
        for lp in (0.0, 1.0, 2.0):
            toks, lens, scores = beam_search(s["lm"], s["params"], s["embeds"], jnp.asarray(s["lengths"]), beam=k,
                                             max_new_tokens=N, eos_id=EOS, pad_id=PAD, length_penalty=lp,
                                             row_max_new_tokens=jnp.asarray(s["caps"]), **kw)
            toks, lens, scores = np.asarray(toks), np.asarray(lens), np.asarray(scores)
            for b in range(2):
                cap = int(s["caps"][b])
                hyp = as_hyp(toks[b], lens[b])
                total = totals[b]
                assert np.all(toks[b, lens[b]:] == PAD)
                assert hyp in finished_hyps(V, N, EOS, cap), (k, lp, b, hyp)
                # the returned score is the full-forward score of the returned sequence, normalised
                np.testing.assert_allclose(scores[b], total[hyp] / len(hyp) ** lp, rtol=1e-5, atol=1e-4)
                assert hyp == reference_beam(total, V, N, EOS, cap, k, lp), (k, lp, b)
                norm = {h: total[h] / len(h) ** lp for h in finished_hyps(V, N, EOS, cap)}
                best = max(norm, key=norm.get)
                if k == V ** N or (k >= V * V and lp == 0.0):  # exhaustive at depth 3
                    assert hyp == best, (k, lp, b, hyp, best)
                    optima.setdefault((b, lp), best)
                if k >= V * V and lp == 0.0:
                    assert total[hyp] >= total[as_hyp(greedy_t[b], greedy_l[b])] - 1e-5
    # planted: the length penalty changes the winner of some row
    assert any(optima[(b, 0.0)] != optima[(b, lp)] for b in range(2) for lp in (1.0, 2.0)), optima


# ----------------------------------------------------------------------------- batch independence


def test_batch_independence_and_determinism():
    v, n, pad, eos, k = 32, 6, 31, 7, 3
    lm, params = tiny_lm(v, seed=5)
    rng = np.random.default_rng(6)
    lengths = np.array([5, 2, 4])
    ids = rng.integers(0, v, (3, 5))
    embeds = prompts(lm, params, ids, lengths)
    caps = np.array([6, 6, 4])
    run = lambda e, ln, c: [np.asarray(x) for x in beam_search(
        lm, params, e, jnp.asarray(ln), beam=k, max_new_tokens=n, eos_id=eos, pad_id=pad, length_penalty=0.5,
        row_max_new_tokens=jnp.asarray(c))]
    toks, lens, scores = run(embeds, lengths, caps)
    again = run(embeds, lengths, caps)
    for a, b in zip((toks, lens, scores), again):
        np.testing.assert_array_equal(a, b)
    for b in range(3):
        t1, l1, s1 = run(embeds[b:b + 1], lengths[b:b + 1], caps[b:b + 1])  # the row alone, same left padding
        np.testing.assert_array_equal(t1[0], toks[b])
        assert l1[0] == lens[b]
        np.testing.assert_allclose(s1[0], scores[b], rtol=1e-5, atol=1e-5)
    assert lens[2] <= 4


# ----------------------------------------------------------------------------- errors


def test_bad_beam_inputs():
    lm, params = tiny_lm(8, seed=0)
    x = jnp.zeros((2, 4, D))
    ln = jnp.asarray([4, 1])
    ok = dict(beam=2, max_new_tokens=3, eos_id=1, pad_id=0)
    cases = [
        ("beam", dict(ok, beam=0), {}),
        ("max_new_tokens", dict(ok, max_new_tokens=0), {}),
        ("length_penalty", dict(ok, length_penalty=float("nan")), {}),
        ("prompt_embeds", ok, dict(embeds=jnp.zeros((2, 4)))),
        ("prompt_lengths", ok, dict(lengths=jnp.asarray([4]))),
        ("prompt_lengths", ok, dict(lengths=jnp.asarray([5, 1]))),
        ("row_max_new_tokens", dict(ok, row_max_new_tokens=jnp.asarray([1, 0])), {}),
        ("row_max_new_tokens", dict(ok, row_max_new_tokens=jnp.asarray([1, 2, 3])), {}),
        ("ctc_log_probs", dict(ok, ctc_log_probs=jnp.zeros((3, 5, 4)), ctc_lengths=jnp.asarray([5, 5]),
                               ctc_weight=0.3, ctc_blank=3), {}),
        ("ctc_lengths", dict(ok, ctc_log_probs=jnp.zeros((2, 5, 4)), ctc_lengths=None, ctc_weight=0.3,
                             ctc_blank=3), {}),
        ("ctc_blank", dict(ok, ctc_log_probs=jnp.zeros((2, 5, 4)), ctc_lengths=jnp.asarray([5, 5]),
                           ctc_weight=0.3, ctc_blank=4), {}),
        ("ctc_weight", dict(ok, ctc_log_probs=jnp.zeros((2, 5, 4)), ctc_lengths=jnp.asarray([5, 5]),
                            ctc_weight=1.0, ctc_blank=3), {}),
    ]
    for name, kw, over in cases:
        with pytest.raises(GenerateInputError, match=name):
            beam_search(lm, params, over.get("embeds", x), over.get("lengths", ln), **kw)
