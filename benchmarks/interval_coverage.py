"""Coverage and width of 95% intervals for a leaderboard delta, by method and number of seeds (simulated).

Grids are drawn as an ablation makes them (the model of tests/leaderboards/test_intervals.py, which
imports `grids` from here): P problems of spread difficulty, k samples each, two arms whose every
seed moves the arm's whole score by a known seed SD, and a per-problem arm difference of mean 0.
For each method and seed count it reports how often the interval of a null difference holds 0
(coverage, nominal 0.95) and the mean width for a real difference of 3 seed SDs of the delta,
relative to the known-variance interval (2 x 1.96 x the estimator's true SD over the grids).

Methods:
  problems-bootstrap  the leaderboard's method before: seeds averaged per problem, problems resampled
  seed-bootstrap      a two-stage percentile bootstrap: seeds resampled, then problems (rliable's idea)
  satterthwaite       one t interval, variance over seeds and problems, Satterthwaite's degrees of freedom
  s2d-bench           leaderboards/intervals.py: each term's own t quantile, root-sum-squared

    python benchmarks/interval_coverage.py [--grids 1000] [--seed-sd 0.012]
Writes benchmarks/results/interval_coverage.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from s2d_bench.leaderboards.intervals import interval, variance_terms

OUT = Path(__file__).resolve().parent / "results" / "interval_coverage.json"
PROBLEMS, K = 200, 16


def grids(rng: np.random.Generator, seeds: int, n: int, effect: float = 0.0, seed_sd: float = 0.012,
          problems: int = PROBLEMS, k: int = K) -> np.ndarray:
    """(n, seeds, problems) paired deltas arm A - arm B with true mean difference `effect`; each arm's seeds move its
    whole score by N(0, seed_sd), its problems differ from the other arm's by N(0, 0.05) with mean 0."""
    difficulty = 1 / (1 + np.exp(-rng.normal(0.0, 1.5, (n, 1, problems))))
    per_problem = rng.normal(0.0, 0.05, (n, 1, problems))
    p_a = np.clip(difficulty + effect + per_problem / 2 + rng.normal(0.0, seed_sd, (n, seeds, 1)), 0, 1)
    p_b = np.clip(difficulty - per_problem / 2 + rng.normal(0.0, seed_sd, (n, seeds, 1)), 0, 1)
    return (rng.binomial(k, p_a) - rng.binomial(k, p_b)) / k


def problems_bootstrap(m: np.ndarray, rng: np.random.Generator, iters: int = 1000) -> tuple[float, float]:
    per_problem = m.mean(axis=0)
    stats_ = per_problem[rng.integers(0, per_problem.size, (iters, per_problem.size))].mean(axis=1)
    return float(np.percentile(stats_, 2.5)), float(np.percentile(stats_, 97.5))


def seed_bootstrap(m: np.ndarray, rng: np.random.Generator, iters: int = 1000) -> tuple[float, float]:
    s, p = m.shape
    rows = rng.integers(0, s, (iters, s))
    cols = rng.integers(0, p, (iters, p))
    stats_ = np.array([m[r][:, c].mean() for r, c in zip(rows, cols)])
    return float(np.percentile(stats_, 2.5)), float(np.percentile(stats_, 97.5))


def satterthwaite(m: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The same variance terms as ours, one t quantile with Satterthwaite's pooled degrees of freedom."""
    s, p = m.shape
    mean, (seed_var, b) = m.mean(), variance_terms(m.astype(float))
    a = seed_var / s
    if a + b == 0:
        return mean, mean
    df = (a + b) ** 2 / (a**2 / (s - 1) + b**2 / (p - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(a + b)
    return mean - half, mean + half


def ours(m: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    it = interval(m)
    return it.low, it.high


METHODS = {"problems-bootstrap": problems_bootstrap, "seed-bootstrap": seed_bootstrap, "satterthwaite": satterthwaite,
           "s2d-bench": ours}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", type=int, default=1000)
    ap.add_argument("--seed-sd", type=float, default=0.012, help="each arm's seed SD (0.012: the reseeded yardstick's size)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for seeds in args.seeds:
        null = grids(rng, seeds, args.grids, seed_sd=args.seed_sd)
        effect = 3 * args.seed_sd * math.sqrt(2)
        real = grids(rng, seeds, args.grids, effect=effect, seed_sd=args.seed_sd)
        known = 2 * 1.96 * float(np.std(real.mean(axis=(1, 2))))
        for name, method in METHODS.items():
            if name != "problems-bootstrap" and seeds < 2:
                continue
            held = np.mean([lo <= 0 <= hi for lo, hi in (method(g, rng) for g in null)])
            widths = [hi - lo for lo, hi in (method(g, rng) for g in real)]
            rows.append({"seeds": seeds, "method": name, "coverage": float(held), "width_vs_known": float(np.mean(widths) / known)})
            print(f"seeds {seeds}  {name:<20} coverage {held:.3f}  width / known-variance width {rows[-1]['width_vs_known']:.2f}",
                  flush=True)
    result = {"grids": args.grids, "problems": PROBLEMS, "k": K, "seed_sd_per_arm": args.seed_sd,
              "effect_for_width": "3 seed SDs of the delta", "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
