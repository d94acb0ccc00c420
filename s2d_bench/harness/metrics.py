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
