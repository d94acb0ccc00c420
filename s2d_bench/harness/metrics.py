"""avg@k and its standard error, from a (problems, k) table of 0/1 outcomes."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AvgAtK:
    n: int
    k: int
    mean: float
    stderr: float


def avg_at_k(correct: list[list[bool]], k: int) -> AvgAtK:
    """Mean over problems of the per-problem mean over k samples.

    The standard error is the sample std of the per-problem means over sqrt(n): problems, not
    samples, are the independent units. Every problem must have exactly k samples; fewer means
    an evaluation went wrong, and silently averaging the rest is how avg@16 numbers go bad.
    """
    if not correct:
        raise ValueError("avg@k of zero problems")
    short = [i for i, row in enumerate(correct) if len(row) != k]
    if short:
        raise ValueError(f"{len(short)} problems do not have exactly k={k} samples (first: index {short[0]})")
    per_problem = [sum(row) / k for row in correct]
    n = len(per_problem)
    mean = sum(per_problem) / n
    var = sum((p - mean) ** 2 for p in per_problem) / (n - 1) if n > 1 else 0.0
    return AvgAtK(n=n, k=k, mean=mean, stderr=math.sqrt(var / n))


def pass_at_k(correct: list[list[bool]], k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) from n >= k samples per problem, averaged over problems.

    Per problem with c of n samples right: 1 - C(n - c, k) / C(n, k), the chance that k samples
    drawn without replacement contain a right one.
    """
    total = 0.0
    for row in correct:
        n, c = len(row), sum(row)
        if k > n:
            raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
        total += 1.0 - (math.comb(n - c, k) / math.comb(n, k))
    return total / len(correct)


def maj_at_k(answers: list[list[str | None]], correct: list[list[bool]], key=lambda a: a) -> float:
    """Majority vote: per problem, the most frequent answer (by `key`) among those given is
    scored; ties go to the answer seen first; a problem with no answers at all is wrong."""
    right = 0
    for row, outcome in zip(answers, correct):
        votes: dict[object, list[int]] = {}
        for i, a in enumerate(row):
            if a is not None:
                votes.setdefault(key(a), []).append(i)
        if votes:
            winner = max(votes.values(), key=len)  # dicts keep insertion order: first wins ties
            right += outcome[winner[0]]
    return right / len(answers)
