"""`s2d-bench eval`: one model, several benchmarks, results and completions on disk.

Each benchmark's defaults (samples, sampling, max tokens, graders) come from its definition in
`s2d_bench.tasks.benchmarks`; explicit options override them. Output, per benchmark:
`<out>/<benchmark>/results.json` (the record) and `completions.jsonl` (every sample).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from s2d_bench.config import EvalConfig, config_hash
from s2d_bench.harness.engines import ENGINES, EngineConfig
from s2d_bench.harness.evaluate import evaluate
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.provenance import git_commit, package_versions
from s2d_bench.store import Store
from s2d_bench.tasks import BENCHMARKS
from s2d_bench.tasks.benchmarks import Benchmark, load_problems


@dataclass(frozen=True)
class SuiteOptions:
    """Overrides of the benchmarks' own settings; None keeps the benchmark's default."""

    samples: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    data: str | None = None
    seed: int = 0
    grading_timeout: float = 5.0
    grading_workers: int | None = None


def eval_config(bench: Benchmark, opts: SuiteOptions, prompts_per_batch: int) -> EvalConfig:
    pick = lambda ours, theirs: theirs if ours is None else ours  # noqa: E731
    return EvalConfig(
        samples=pick(opts.samples, bench.samples),
        temperature=pick(opts.temperature, bench.temperature),
        top_p=pick(opts.top_p, bench.top_p),
        top_k=pick(opts.top_k, bench.top_k),
        max_new_tokens=pick(opts.max_new_tokens, bench.max_new_tokens),
        prompts_per_batch=prompts_per_batch,
    )


def run_suite(
    model: str, benchmarks: list[str], engine_name: str, engine_cfg: EngineConfig, opts: SuiteOptions, out: Path,
    store: Store | None = None, suite: str = "eval",
) -> list[dict[str, Any]]:
    """Evaluate `model` on each benchmark; return (and write, to `out` and the store) one record per benchmark."""
    specs = {name: BENCHMARKS.get(name) for name in benchmarks}  # unknown names fail before loading
    problem_sets = {name: load_problems(spec, opts.data, opts.limit) for name, spec in specs.items()}
    engine = ENGINES.get(engine_name).load(model, engine_cfg)
    records = []
    with GradingPool(opts.grading_workers, opts.grading_timeout) as pool:
        for name, spec in specs.items():
            cfg = eval_config(spec, opts, engine_cfg.prompts_per_batch)
            folder = out / name
            result = evaluate(engine, problem_sets[name], cfg, opts.seed, spec.grader, spec.audit, folder / "completions.jsonl", f"eval {name}", pool)
            record = {
                "model": model, "benchmark": name, "engine": engine_name, "engine_config": engine_cfg.__dict__,
                "eval_config": cfg.__dict__, "grader": spec.grader, "audit_grader": spec.audit,
                "metric": f"avg@{cfg.samples}", "n": result.score.n, "k": result.score.k,
                "mean": result.score.mean, "stderr": result.score.stderr, **_rest(result.summary()),
                "seed": opts.seed, "data": opts.data or spec.hf_id, "limit": opts.limit, "task": name, "stage": "eval",
                "git_commit": git_commit(), "versions": package_versions(), "timestamp": time.time(),
            }
            (folder / "results.json").write_text(json.dumps(record, indent=2))
            if store is not None:  # one row per model, benchmark and protocol: a re-evaluation replaces it
                protocol = config_hash({"eval": cfg.__dict__, "engine": engine_name, "seed": opts.seed, "limit": opts.limit, "data": record["data"]})
                store.put_eval(f"eval:{model}:{name}:{protocol}", suite, record)
            records.append(record)
    return records


def _rest(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "score"}


def render(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        k = r["k"]
        rows.append({
            "benchmark": r["benchmark"], "n x k": f"{r['n']}x{k}", r["metric"]: f"{r['mean']:.3f}", "± se": f"{r['stderr']:.3f}",
            f"pass@{k}": f"{r['pass_at'][k]:.3f}", f"maj@{k}": f"{r['maj']:.3f}",
            "no answer": f"{r['no_answer']:.3f}", "graders agree": "-" if r["agreement"] is None else f"{r['agreement']:.3f}",
            "timeouts": r["timeouts"], "samples/s": f"{r['samples_per_second']:.1f}",
        })
    return pd.DataFrame(rows).to_string(index=False)

