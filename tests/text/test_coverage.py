"""`metrics.vocabulary_coverage`: share of test scoring units seen in train, counted by hand."""

from funasr_jax.text.metrics import vocabulary_coverage


def test_coverage_counts_cjk_characters_and_lowercased_words():
    train = ["我们去北京", "the Cat sat"]
    test = ["我去上海", "the cat ran", ""]
    # units: 我 去 上 海 the cat ran -> seen: 我 去 the cat (case-folded) = 4 of 7
    got = vocabulary_coverage(train, test)
    assert got == {"tokens": 7, "seen": 4, "coverage": 4 / 7}


def test_coverage_of_nothing_is_one():
    assert vocabulary_coverage(["a"], [""])["coverage"] == 1.0
