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
