"""greedy_generate (jit + while_loop + KV cache) vs transformers `generate(do_sample=False)`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the Python 3.12 CI leg has no CPU torch wheel)")
from helpers.qwen3 import make_pair

from funasr_jax.decode import CausalDecoder, GenerateInputError, greedy_generate, left_pad
from funasr_jax.models.config import Qwen3Config
from funasr_jax.models.qwen3 import Qwen3ForCausalLM

N_NEW = 10
PAD = 96


def hf_generate(hf, embeds, mask, eos):
    with torch.no_grad():
        out = hf.generate(inputs_embeds=torch.tensor(np.asarray(embeds)), attention_mask=torch.tensor(mask),
                          max_new_tokens=N_NEW, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    out = out.numpy()
    return np.pad(out, ((0, 0), (0, N_NEW - out.shape[1])), constant_values=PAD)


@pytest.mark.parametrize("tie,theta,head_dim,seed", [(True, 1e6, 16, 0), (False, 1e4, 32, 1)])
def test_greedy_generate_matches_hf(tie, theta, head_dim, seed):
    hf, model, params = make_pair(tie, theta, head_dim, seed)
    rng = np.random.default_rng(seed)
    lengths = np.array([5, 9, 2])
    b, p = len(lengths), int(lengths.max())
    # Prompt = token embeddings with "audio" rows (arbitrary vectors) spliced in, like the ASR model.
    ids = rng.integers(0, 96, (b, p))
    right = np.array(model.apply({"params": params}, jnp.asarray(ids), method="embed"))
    right[:, 1:3] = rng.normal(0.0, 0.5, (b, 2, 64))
    right[np.arange(p)[None] >= lengths[:, None]] = 0.0
    embeds = left_pad(jnp.asarray(right, jnp.float32), jnp.asarray(lengths))
    mask = (np.arange(p)[None] >= (p - lengths)[:, None]).astype(np.int64)

    # An EOS that row 0 emits at step 3 (or earlier): exercises stopping and padding.
    free = hf_generate(hf, embeds, mask, eos=None)
    eos = int(free[0, 3])
    ref = hf_generate(hf, embeds, mask, eos=eos)
    tokens, lens = greedy_generate(CausalDecoder(model), params, embeds, jnp.asarray(lengths),
                                   max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD)
    np.testing.assert_array_equal(np.asarray(tokens), ref)
    want_lens = [int(np.argmax(r == eos)) + 1 if (r == eos).any() else N_NEW for r in ref]
    assert np.asarray(lens).tolist() == want_lens and want_lens[0] <= 4

    # Row 0 alone: every row finishes, so the loop stops early; module accepted directly.
    ref0 = hf_generate(hf, embeds[:1, p - 5:], mask[:1, p - 5:], eos=eos)
    t0, l0 = greedy_generate(model, {"params": params}, embeds[:1, p - 5:], jnp.asarray([5]),
                             max_new_tokens=N_NEW, eos_id=eos, pad_id=PAD)
    np.testing.assert_array_equal(np.asarray(t0), ref0)
    assert int(l0[0]) == want_lens[0] and np.all(np.asarray(t0)[0, want_lens[0]:] == PAD)


def test_single_new_token_and_unpadded_rows():
    hf, model, params = make_pair(True, 1e6, 16, 3)
    ids = np.random.default_rng(4).integers(0, 96, (2, 6))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids)).logits[:, -1].argmax(-1).numpy()
    embeds = model.apply({"params": params}, jnp.asarray(ids), method="embed")
    tokens, lens = greedy_generate(model, params, embeds, jnp.asarray([6, 6]), max_new_tokens=1,
                                   eos_id=95, pad_id=PAD)
    assert tokens.shape == (2, 1)
    np.testing.assert_array_equal(np.asarray(tokens)[:, 0], ref)
    assert np.asarray(lens).tolist() == [1, 1]


def test_left_pad_matches_loop():
    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    lengths = np.array([5, 2, 3])
    want = np.zeros_like(x)
    for i, n in enumerate(lengths):
        want[i, 5 - n:] = x[i, :n]
    np.testing.assert_array_equal(np.asarray(left_pad(jnp.asarray(x), jnp.asarray(lengths))), want)


def test_bad_generate_inputs():
    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    model = Qwen3ForCausalLM(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 64)))["params"]
    x = jnp.zeros((2, 4, 64))
    with pytest.raises(GenerateInputError, match="prompt_lengths"):
        greedy_generate(model, params, x, jnp.asarray([5, 1]), max_new_tokens=3, eos_id=1, pad_id=0)
    with pytest.raises(GenerateInputError, match="prompt_lengths"):
        greedy_generate(model, params, x, jnp.asarray([3]), max_new_tokens=3, eos_id=1, pad_id=0)
    with pytest.raises(GenerateInputError, match="max_new_tokens"):
        greedy_generate(model, params, x, jnp.asarray([3, 1]), max_new_tokens=0, eos_id=1, pad_id=0)


def test_vocab_limit_keeps_ids_the_tokenizer_has():
    """CausalDecoder(vocab_size=K): ids >= K are never chosen (an embedding padded past the
    tokenizer, as Qwen3's 151,936 rows against 151,669 tokens); the choice equals HF's argmax
    over the first K logits."""
    hf, model, params = make_pair(True, 1e6, 16, 5)
    ids = np.random.default_rng(6).integers(0, 96, (4, 6))
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor(ids)).logits[:, -1].numpy()
    k = 8
    unrestricted = logits.argmax(-1)
    assert (unrestricted >= k).any()  # the limit changes something for these rows
    embeds = model.apply({"params": params}, jnp.asarray(ids), method="embed")
    tokens, _ = greedy_generate(CausalDecoder(model, vocab_size=k), params, embeds, jnp.asarray([6] * 4),
                                max_new_tokens=1, eos_id=95, pad_id=PAD)
    np.testing.assert_array_equal(np.asarray(tokens)[:, 0], logits[:, :k].argmax(-1))
