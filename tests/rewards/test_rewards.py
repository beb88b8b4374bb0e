"""The four ASR rewards on hand-worked cases, the total (R4 overrides), and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from funasr_jax import rewards as R
from funasr_jax.rewards import UtteranceMeta as M


def test_error_reward_is_one_minus_error_rate_clipped():
    assert R.error_reward("今天天气好", M("今天天气好")) == 1.0
    assert R.error_reward("今天天汽好", M("今天天气好")) == pytest.approx(0.8)  # 1 substitution of 5 chars
    assert R.error_reward("the cat sat", M("the cat sat down")) == pytest.approx(0.75)  # WER: 1 deletion of 4
    assert R.error_reward("a b c d e f g h", M("x")) == 0.0  # 8 errors on 1 word: clipped at 0
    assert R.error_reward("", M("hello world")) == 0.0
    assert R.error_reward("", M("")) == 1.0  # noise-only clip, nothing written
    assert R.error_reward("嗯", M("")) == 0.0
    assert R.error_reward("Hello, World!", M("hello world")) == 1.0  # case and punctuation do not count


def test_keyword_reward_is_accuracy_plus_recall():
    meta = M("我在合肥见到王芳", hotwords=("合肥", "王芳"))
    assert R.keyword_reward("我在合肥见到王芳", meta) == 2.0
    # one of two hotwords recognised, none written wrongly: recall 1/2, accuracy 1/1
    assert R.keyword_reward("我在合肥见到王方", meta) == pytest.approx(1.5)
    # hotword inserted where it was not spoken: recall 1, accuracy 2/3
    ins = R.keyword_scores("合肥我在合肥见到王芳", meta.ref, meta.hotwords)
    assert (ins["matched"], ins["in_ref"], ins["in_hyp"]) == (2, 2, 3)
    assert R.keyword_reward("合肥我在合肥见到王芳", meta) == pytest.approx(1 + 2 / 3)
    assert R.keyword_reward("", meta) == pytest.approx(1.0)  # recall 0, accuracy 1 (nothing written)
    assert R.keyword_reward("anything", M("anything")) == 0.0  # no hotwords: no signal
    en = M("we met in Dublin", hotwords=("Dublin",))
    assert R.keyword_reward("we met in dublin", en) == 2.0  # case-insensitive, whole words
    assert R.keyword_reward("we met in dublins", en) == pytest.approx(1.0)


def test_hallucination_penalty_grows_with_the_span():
    ref = "我们今天去公园"  # 7 units
    assert R.hallucination_reward(ref, M(ref)) == 0.0
    # "去公园" x 4 after the sentence: a 3-gram run of 4 (+ the original) -> 12 units beyond the first
    loop = "我们今天去公园去公园去公园去公园"
    assert R.repeated_units(R.tokens(loop)) == 9
    assert R.hallucination_reward(loop, M(ref)) == pytest.approx(-1.0)  # span 9 >= 7: clipped
    short_loop = "我们今天去公园园园园"  # "园" x 4: 3 units beyond the first
    assert R.hallucination_reward(short_loop, M(ref)) == pytest.approx(-3 / 7)
    # a genuine repetition in the reference is not penalised
    rep = "very very very good"
    assert R.hallucination_reward(rep, M(rep)) == 0.0
    # far too long, no repeats: 10 words vs ref 2 -> beyond ceil(1.5 x 2) + 2 = 5 by 5 -> -min(1, 5/2)
    assert R.hallucinated_span("a b c d e f g h i j", "a b") == 5
    assert R.hallucination_reward("a b c d e f g h i j", M("a b")) == -1.0
    # noise-only clips: every unit is hallucinated
    assert R.hallucination_reward("", M("")) == 0.0
    assert R.hallucination_reward("好", M("")) == -1.0
    assert R.hallucination_reward("hello there", M("hello there friend")) == 0.0


def test_language_match_by_script():
    assert R.language_reward("今天天气好", M("", language="zh")) == 0.0
    assert R.language_reward("the weather is nice", M("", language="zh")) == -1.0
    assert R.language_reward("今天天气好", M("", language="en")) == -1.0
    assert R.language_reward("hello world 好", M("", language="en")) == 0.0  # mostly Latin
    assert R.language_reward("我朋友下午开始 party", M("", language="cs")) == 0.0
    assert R.language_reward("my friend starts the party", M("", language="cs")) == -1.0
    assert R.language_reward("", M("", language="zh")) == 0.0  # empty: no script to judge
    assert R.language_reward("whatever", M("", language=None)) == 0.0


def test_total_sums_additive_rewards_and_the_language_override_wins():
    weights = (("error", 1.0), ("keyword", 0.5), ("hallucination", 2.0), ("language", 1.0))
    hyps = ["我在合肥", "I am in Hefei", ""]
    metas = [M("我在合肥", "zh", ("合肥",))] * 3
    total, parts = R.score_hypotheses(hyps, metas, weights)
    assert set(parts) == {"error", "keyword", "hallucination", "language"}
    np.testing.assert_allclose(total[0], 1.0 + 0.5 * 2.0 + 0.0)
    assert total[1] == -1.0  # English output of a Chinese utterance
    np.testing.assert_allclose(total[2], 0.0 + 0.5 * 1.0 + 0.0)  # deletion: R1 0, recall 0 + accuracy 1
    # weight 0 on the override switches it off
    off, _ = R.score_hypotheses(hyps[1:2], metas[1:2], (("error", 1.0), ("language", 0.0)))
    assert off[0] == 0.0


def test_registry_adds_a_reward_in_one_place_and_names_unknown_ones():
    R.register_reward("length_bonus", lambda hyp, meta: float(len(hyp) > 0))
    try:
        total, parts = R.score_hypotheses(["x", ""], [M("x"), M("x")], (("length_bonus", 2.0),))
        np.testing.assert_allclose(total, [2.0, 0.0])
    finally:
        del R.REWARDS["length_bonus"]
    with pytest.raises(R.RewardError, match="unknown reward 'eror'.*registered: error"):
        R.check_weights((("eror", 1.0),))
    with pytest.raises(R.RewardError, match="weight must be"):
        R.check_weights((("error", -1.0),))
    with pytest.raises(R.RewardError, match="twice"):
        R.check_weights((("error", 1.0), ("error", 2.0)))
