"""CTC prefix scores and joint CTC/LLM greedy decoding against brute force on tiny inputs."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funasr_jax.decode import ctc_prefix

BLANK = 2  # labels 0, 1; blank 2


def brute_force_label_probs(logp: np.ndarray, length: int, blank: int) -> dict[tuple, float]:
    """P(label sequence) by summing over every frame path of `length` frames."""
    out: dict[tuple, float] = {}
    v = logp.shape[1]
    for path in itertools.product(range(v), repeat=length):
        p = float(np.exp(sum(logp[t, s] for t, s in enumerate(path))))
        labels, prev = [], None
        for s in path:
            if s != prev and s != blank:
                labels.append(s)
            prev = s
        out[tuple(labels)] = out.get(tuple(labels), 0.0) + p
    return out


def prefix_prob(probs: dict, g: tuple) -> float:
    return sum(p for y, p in probs.items() if y[: len(g)] == g)


@pytest.fixture
def posteriors():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 3)) * 1.5
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))
    return logp, np.array([6, 4], np.int32)


def test_prefix_scores_match_brute_force(posteriors):
    logp, lengths = posteriors
    brute = [brute_force_label_probs(logp[b], int(lengths[b]), BLANK) for b in range(2)]
    state = ctc_prefix.init_state(jnp.asarray(logp), lengths, BLANK)
    for prefix in [(), (0,), (0, 0), (0, 0, 1)]:  # a repeated label needs a blank in between
        psi, r_n, r_b, final = ctc_prefix.extend(state, jnp.asarray(logp), lengths, BLANK, 4)
        psi, final = np.asarray(psi), np.asarray(final)
        for b in range(2):
            np.testing.assert_allclose(np.exp(final[b]), brute[b].get(prefix, 0.0), rtol=1e-5, atol=1e-12)
            for c in (0, 1):
                np.testing.assert_allclose(np.exp(psi[b, c]), prefix_prob(brute[b], prefix + (c,)),
                                           rtol=1e-5, atol=1e-12)
            assert psi[b, BLANK] <= -1e29 and psi[b, 3] <= -1e29  # blank / ids beyond the CTC vocabulary
        if len(prefix) < 3:
            nxt = (0, 0, 1)[len(prefix)]
            token = jnp.full((2,), nxt, jnp.int32)
            state = ctc_prefix.advance(state, token, psi, r_n, r_b)
            for b in range(2):
                np.testing.assert_allclose(np.exp(state.score[b]), prefix_prob(brute[b], prefix + (nxt,)),
                                           rtol=1e-5, atol=1e-12)


def test_joint_greedy_generation_matches_step_by_step_reference(posteriors):
    """`greedy_generate` with CTC weight w picks, at each step, argmax_c of
    (1 - w) log p_llm(c | g) + w (log psi(g + c) - log psi(g)), with psi from brute force."""
    from funasr_jax.decode.generate import greedy_generate
    from funasr_jax.models.config import Qwen3Config
    from funasr_jax.models.qwen3 import Qwen3ForCausalLM

    logp, lengths = posteriors
    eos = 3
    cfg = Qwen3Config(vocab_size=5, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True)
    lm = Qwen3ForCausalLM(cfg)
    ids = jnp.array([[1, 4, 0], [4, 1, 1]], jnp.int32)
    params = lm.init(jax.random.PRNGKey(1), jnp.zeros((1, 3, 16)))["params"]
    params = jax.tree_util.tree_map(lambda x: x * 6.0, params)  # a peaky LM so that w matters
    embeds = lm.apply({"params": params}, ids, method="embed")
    for w in (0.0, 0.5, 0.9):
        tokens, n = greedy_generate(lm, params, embeds, jnp.array([3, 3]), max_new_tokens=5, eos_id=eos,
                                    pad_id=4, ctc_log_probs=jnp.asarray(logp), ctc_lengths=lengths,
                                    ctc_weight=w, ctc_blank=BLANK)
        tokens = np.asarray(tokens)
        for b in range(2):
            brute = brute_force_label_probs(logp[b], int(lengths[b]), BLANK)
            seq, g = list(np.asarray(ids[b])), ()
            want = []
            for _ in range(5):
                emb = lm.apply({"params": params}, jnp.asarray([seq], jnp.int32), method="embed")
                full = lm.apply({"params": params}, emb)[0]
                llm_lp = np.asarray(jax.nn.log_softmax(full[0, -1]))
                base = np.log(max(prefix_prob(brute, g), 1e-300))
                ctc_gain = np.full(5, -np.inf)
                for c in (0, 1):
                    ctc_gain[c] = np.log(max(prefix_prob(brute, g + (c,)), 1e-300)) - base
                ctc_gain[eos] = np.log(max(brute.get(g, 0.0), 1e-300)) - base
                score = (1 - w) * llm_lp + (w * ctc_gain if w > 0 else 0.0)
                c = int(np.argmax(score))
                want.append(c)
                if c == eos:
                    break
                seq.append(c)
                g = g + (c,) if c != BLANK else g
            got = tokens[b, : len(want)].tolist()
            assert got == want, (w, b, got, want)
            if w >= 0.5:  # with a strong CTC weight no token outside the CTC labels is chosen
                assert set(want) <= {0, 1, eos}


def test_force_prefix_scores_the_forced_labels_per_row(posteriors):
    """force_prefix runs each row's own prefix (ragged, padded) into the state: its score is the
    brute-force prefix probability, and the next extension scores g + c like brute force."""
    logp, lengths = posteriors
    brute = [brute_force_label_probs(logp[b], int(lengths[b]), BLANK) for b in range(2)]
    prefixes = [(0, 1, 0), (1,)]
    ids = np.array([[0, 1, 0], [1, 0, 0]], np.int32)  # row 1's padding must be ignored
    state = ctc_prefix.force_prefix(ctc_prefix.init_state(jnp.asarray(logp), lengths, BLANK), jnp.asarray(logp),
                                    lengths, BLANK, ids, np.array([3, 1], np.int32))
    psi = np.asarray(ctc_prefix.extend(state, jnp.asarray(logp), lengths, BLANK, 3)[0])
    for b, g in enumerate(prefixes):
        np.testing.assert_allclose(np.exp(state.score[b]), prefix_prob(brute[b], g), rtol=1e-5, atol=1e-12)
        assert int(state.last[b]) == g[-1]
        for c in (0, 1):
            np.testing.assert_allclose(np.exp(psi[b, c]), prefix_prob(brute[b], g + (c,)), rtol=1e-5, atol=1e-12)
