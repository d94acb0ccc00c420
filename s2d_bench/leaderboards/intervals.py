"""95% intervals over training seeds and test problems, and how many seeds a claim needs.

A leaderboard number is the mean of a (seeds, problems) matrix of per-problem avg@k scores (or,
for a paired delta, of the difference of two arms' matrices on the same seeds and problem ids).
Two sources of variance move it, and both are random draws a reader wants the interval to hold:
- **seeds**: retraining under another seed moves every problem's score of that seed together;
- **problems**: the test set is a draw from the task, common to every seed.

So the matrix is a crossed two-way random-effects design, and the variance of its grand mean is
sigma_seed^2 / S + sigma_problem^2 / P + sigma_residual^2 / (S P). Its method-of-moments estimate
is `var(seed means) / S + [var(problem means) - MS_residual / S] / P`: the first term holds the
seed variance (with the residual's share) and has only S - 1 degrees of freedom, the second the
problem variance, with P - 1. The half-width widens each term by the t quantile of its own degrees
of freedom and adds them in quadrature: sqrt(t_{S-1}^2 var(seed means) / S + t_{P-1}^2 problem
term). Where seeds dominate this is the exact t interval over seed means; where problems dominate,
the usual problem interval; in between it errs wide.

Why this and not the alternatives (simulated in tests/leaderboards/test_intervals.py; the README
has the coverage table):
- resampling problems alone (the old method) leaves seed noise out: a reseeded null effect read
  +0.016 [0.007, 0.025];
- a percentile bootstrap over seeds (`rliable`'s stratified bootstrap) under-covers at 3 seeds: a
  resample of 3 values has at most 10 distinct means and its spread is biased low by (S-1)/S;
- one t interval with Satterthwaite's degrees of freedom (lme4/lmerTest's way) under-covers at 2
  and 3 seeds (88% and 92% for a nominal 95%): a seed variance estimated low by chance also makes
  the estimated degrees of freedom large, so the quantile shrinks exactly when it should not.
The price of holding the level is width when seeds dominate: at 2 seeds t_1 is 12.7, at 3 seeds
t_2 is 4.3. Nothing that estimates the seed variance from the comparison's own seeds can do
better; the way out is more seeds (`seeds_to_resolve` says how many).

With one seed no seed variance can be estimated: the interval covers problems only (t with P - 1
degrees of freedom) and `Interval.seeds == 1` lets every caption and verdict say so.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
MAX_SEEDS = 100  # seeds_to_resolve looks no further: past this an effect is, for a benchmark, zero


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval; `seeds` and `seed_sd` say what it was estimated from."""

    mean: float
    low: float
    high: float
    seeds: int = 1
    seed_sd: float = math.nan  # SD of the per-seed means (NaN with one seed: not estimable)
    problem_var: float = 0.0  # the problem term of the mean's variance (sigma_problem^2 / P), kept for seeds_to_resolve
    problems: int = 0

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"

    @property
    def problems_only(self) -> bool:
        """One seed: the interval holds problem sampling and no seed noise."""
        return self.seeds < 2

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@functools.lru_cache(maxsize=None)
def _t(df: int) -> float:
    """The two-sided 95% t quantile (cached: a leaderboard asks for the same few degrees of freedom many times)."""
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def _half_width(seed_var: float, problem_var: float, seeds: int, problems: int) -> float:
    """Half-width of the interval for a mean of `seeds` seeds (seed_var: variance of one seed's mean, residual included)
    and problem variance `problem_var` (sigma_problem^2 / P): each term widened by the t quantile of its own degrees
    of freedom, root-sum-squared (module docstring: why not Satterthwaite's pooled degrees of freedom)."""
    if seeds < 2:
        return _t(max(problems - 1, 1)) * math.sqrt(problem_var)
    return math.sqrt(_t(seeds - 1) ** 2 * seed_var / seeds + _t(max(problems - 1, 1)) ** 2 * problem_var)


def variance_terms(matrix: np.ndarray) -> tuple[float, float]:
    """The method-of-moments estimates of the module docstring for a (seeds, problems) float matrix of 2 or more
    scores: var(seed means) (0 with one seed) and the problem term sigma_problem^2 / P (with one seed, all of the
    mean's variance)."""
    seeds, problems = matrix.shape
    problem_means = matrix.mean(axis=0)
    problem_spread = float(problem_means.var(ddof=1)) if problems > 1 else 0.0
    if seeds < 2:
        return 0.0, problem_spread / problems
    seed_means = matrix.mean(axis=1)
    residual = matrix - seed_means[:, None] - problem_means[None, :] + matrix.mean()
    ms_residual = float((residual**2).sum()) / ((seeds - 1) * max(problems - 1, 1))
    return float(seed_means.var(ddof=1)), max(problem_spread - ms_residual / seeds, 0.0) / problems  # residual: in the first


def interval(matrix: np.ndarray, bounds: tuple[float, float] = (-1.0, 1.0)) -> Interval:
    """Mean of a (seeds, problems) matrix with its 95% interval over seeds and problems (module docstring).

    `bounds` is the range the mean can take (0..1 for a score, -1..1 for a delta); the interval is clipped to it."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"interval needs a non-empty (seeds, problems) matrix, got shape {matrix.shape}")
    seeds, problems = matrix.shape
    mean = float(matrix.mean())
    if seeds * problems == 1:  # one score: no variance of any kind to estimate
        return Interval(mean, bounds[0], bounds[1], 1, math.nan, 0.0, 1)
    seed_var, problem_var = variance_terms(matrix)
    seed_sd = math.sqrt(seed_var) if seeds > 1 else math.nan
    half = _half_width(seed_var, problem_var, seeds, problems)
    return Interval(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), seeds, seed_sd, problem_var, problems)


def pooled(matrices: list[np.ndarray], bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """The macro average of several benchmarks (each a (seeds, problems) matrix) with its 95% interval.

    Each benchmark weighs the same, as papers' "average" columns do (problem-weighted, OlympiadBench's 675 problems
    would outweigh eight other sets). The variance of the average is the sum of the benchmarks' variances over B^2,
    with each benchmark's half-width widened by its own t quantiles as `interval` does, added in quadrature."""
    parts = [np.asarray(m, dtype=float) for m in matrices]
    if not parts or any(m.ndim != 2 or m.size == 0 for m in parts):
        raise ValueError("pooled needs one or more non-empty (seeds, problems) matrices")
    halves = []
    for m in parts:
        seeds, problems = m.shape
        halves.append(math.inf if seeds * problems == 1 else _half_width(*variance_terms(m), seeds, problems))
    mean = float(np.mean([m.mean() for m in parts]))
    half = math.sqrt(sum(h * h for h in halves)) / len(parts)
    seeds = min(m.shape[0] for m in parts)
    return Interval(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), seeds, math.nan, 0.0, sum(m.shape[1] for m in parts))


def verdict(delta: Interval) -> str:
    """'holds' (interval above 0), 'reversed' (below 0) or 'not resolved'; a one-seed interval says it covers problems only."""
    word = "holds" if delta.low > 0 else "reversed" if delta.high < 0 else "not resolved"
    return f"{word} (one seed: problems only)" if delta.problems_only else word


def seeds_to_resolve(delta: Interval, limit: int = MAX_SEEDS) -> int | None:
    """The fewest seeds at which an effect of the observed size, at the estimated seed SD and problem variance,
    would have an interval that excludes 0 (a projection from point estimates, not a power analysis); None when
    no number of seeds up to `limit` would, or when one seed gave no seed SD to project from."""
    if delta.problems_only or not math.isfinite(delta.seed_sd):
        return None
    effect = abs(delta.mean)
    for n in range(2, limit + 1):
        if _half_width(delta.seed_sd**2, delta.problem_var, n, delta.problems) < effect:
            return n
    return None


def seed_note(delta: Interval) -> str:
    """What a comparison's seeds say: its seed SD and, unless resolved, how many seeds an effect of its size needs.
    No '|' in it: the note goes into Markdown table cells."""
    if delta.problems_only:
        return "one seed: seed noise not covered"
    note = f"seed SD {delta.seed_sd:.3f}"
    if delta.low <= 0 <= delta.high:
        needed = seeds_to_resolve(delta)
        note += (f"; ~{needed} seeds would resolve an effect of {abs(delta.mean):.3f}" if needed is not None
                 else f"; an effect of {abs(delta.mean):.3f} needs over {MAX_SEEDS} seeds")
    return note
