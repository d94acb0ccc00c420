"""Functions the s2d_* lm-eval task YAMLs call: data loading, keep-all filter, avg@k scoring.

Scoring uses s2d-bench's own grading (last `\\boxed{}`, math-verify gold first, hard timeouts in a
process pool), so lm-eval and `s2d-bench eval` cannot disagree about what is correct.
"""

from __future__ import annotations

import atexit

import datasets

from s2d_bench.harness.grading import GradingPool, grade
from s2d_bench.tasks import BENCHMARKS
from s2d_bench.tasks.benchmarks import load_problems

_POOL: GradingPool | None = None


def _pool() -> GradingPool:
    global _POOL
    if _POOL is None:
        _POOL = GradingPool()
        atexit.register(_POOL.close)
    return _POOL


def load(benchmark: str, data: str | None = None, limit: int | None = None, **_: object) -> dict[str, datasets.Dataset]:
    """custom_dataset: the benchmark's problems, prompted as s2d-bench prompts them.

    `data` (task metadata) or $S2D_DATA_DIR names local JSON Lines; otherwise the hub copy.
    """
    bench = BENCHMARKS.get(benchmark)
    problems = load_problems(bench, data, limit)
    rows = [{"id": p.id, "prompt": p.prompt, "answer": p.answer, "extraction": bench.extraction} for p in problems]
    return {"test": datasets.Dataset.from_list(rows)}


def keep_all(resps, docs):
    """Keep every repeat: lm-eval's default `take_first` would score only sample 0 of 16."""
    return resps


def process_results(doc: dict, results: list) -> dict[str, float]:
    samples = results[0] if results and isinstance(results[0], list) else results
    verdicts = grade(list(samples), [doc["answer"]] * len(samples), "math_verify", None, _pool(), doc.get("extraction", "last_box"))
    right = [v.correct for v in verdicts]
    return {"avg_at_k": sum(right) / len(right), "pass_at_k": float(any(right))}
