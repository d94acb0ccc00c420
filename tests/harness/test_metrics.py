import math

import pytest

from s2d_bench.harness.metrics import avg_at_k


def test_avg_at_k_is_mean_of_per_problem_means_with_problem_level_stderr():
    score = avg_at_k([[True, True, False, False], [True, True, True, True], [False] * 4], k=4)
    assert score.mean == pytest.approx(0.5)
    # per-problem means 0.5, 1, 0: sample std 0.5 -> se 0.5 / sqrt(3)
    assert score.stderr == pytest.approx(0.5 / math.sqrt(3))
    assert (score.n, score.k) == (3, 4)


def test_avg_at_k_refuses_problems_with_missing_samples():
    with pytest.raises(ValueError, match="exactly k=4"):
        avg_at_k([[True] * 4, [True]], k=4)
    with pytest.raises(ValueError, match="^avg@k of zero problems$"):
        avg_at_k([], k=4)


def test_the_standard_error_of_one_problem_is_zero_and_of_two_is_by_hand():
    """One problem has no spread to estimate (0, not a division by zero); two use the n - 1 sample variance."""
    assert avg_at_k([[True, False]], k=2).stderr == 0.0
    two = avg_at_k([[True, True], [False, False]], k=2)  # per-problem means 1 and 0: variance 0.5, se sqrt(0.5 / 2)
    assert two.stderr == pytest.approx(0.5)


def test_pass_at_k_unbiased_estimator_by_hand():
    from s2d_bench.harness.metrics import pass_at_k

    rows = [[True, False, False, False], [False] * 4, [True] * 4]
    # problem 1: c=1 of n=4 -> pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2
    assert pass_at_k(rows, 1) == pytest.approx((0.25 + 0 + 1) / 3)
    assert pass_at_k(rows, 2) == pytest.approx((0.5 + 0 + 1) / 3)
    assert pass_at_k(rows, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pass@5 needs at least 5 samples per problem, got 4"):
        pass_at_k(rows, 5)


def test_maj_at_k_votes_on_normalised_answers_and_breaks_ties_by_first_seen():
    from s2d_bench.harness.hendrycks import strip_string
    from s2d_bench.harness.metrics import maj_at_k

    answers = [["3", "1/2", "\\frac{1}{2}", None], ["3", "4", None, None], [None] * 4]
    correct = [[False, True, True, False], [False, True, False, False], [False] * 4]
    # raw strings: problem 1 is a three-way tie won by the first answer seen ("3", wrong)
    assert maj_at_k(answers, correct) == pytest.approx(0.0)
    # normalised, 1/2 and \frac{1}{2} are one answer with two votes: right
    assert maj_at_k(answers, correct, key=strip_string) == pytest.approx(1 / 3)
