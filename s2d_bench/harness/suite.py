"""`s2d-bench eval`: one model, several benchmarks, results and completions on disk.

Each benchmark's defaults (samples, sampling, max tokens, graders) come from its definition in
`s2d_bench.tasks.benchmarks`; explicit options override them. Output, per benchmark:
`<out>/<model folder>/<benchmark>/results.json` (the record), `completions.jsonl` (every sample) and `problems.jsonl` (prompts,
gold answers); the model folder (`model_folder`) keys the model and the options, so evaluations sharing an `--out` never
overwrite each other.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2d_bench.config import BenchmarkConfig, EvalConfig, require
from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.harness.evaluate import evaluate
from s2d_bench.identity import config_hash, put_record
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.records import EvalRecord
from s2d_bench.harness.targets import Target, benchmark_target, entries
from s2d_bench.models.refs import resolve_model, with_revision
from s2d_bench.store import Store
from s2d_bench.tasks import BENCHMARKS
from s2d_bench.tasks.benchmarks import GROUPS
from s2d_bench.writable import check_file, check_folder


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
    extraction: str | None = None

    def entry(self, name: str) -> BenchmarkConfig:
        return BenchmarkConfig(name=name, samples=self.samples, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                               max_new_tokens=self.max_new_tokens, limit=self.limit, extraction=self.extraction)


def model_folder(model: str, engine_name: str, engine_cfg: EngineConfig, opts: SuiteOptions) -> str:
    """`<model name>-<hash>`: the folder under `--out` of one model under one set of options, so a second model (or the
    same one under another protocol, engine, dtype or seed) evaluated into the same `--out` keeps its own files."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model.split("@")[0].rstrip("/")).name or "model")
    options = {k: v for k, v in asdict(opts).items() if k not in ("grading_workers", "grading_timeout")  # how it is graded: not what
               and not (k == "extraction" and v is None)}  # unset: the folders of evaluations from before the option
    key = config_hash({"model": model, "engine": engine_name, "dtype": engine_cfg.dtype, "thinking": engine_cfg.thinking, **options})
    return f"{name}-{key[:8]}"


def run_suite(
    model: str, benchmarks: list[str], engine_name: str, engine_cfg: EngineConfig, opts: SuiteOptions, out: Path,
    store: Store | None = None, suite: str = "eval",
) -> tuple[list[dict[str, Any]], Path]:
    """Evaluate `model` on each benchmark; return one record per benchmark (also written to the store and under `out`,
    in `<out>/<model folder>/<benchmark>/`) and that model folder."""
    require(bool(benchmarks), "no benchmark named: give --tasks one or more of " + ", ".join([*BENCHMARKS.names(), *GROUPS]))
    require(opts.grading_timeout > 0, f"--grading-timeout must be > 0 seconds, got {opts.grading_timeout:g} (every answer would time out)")
    check_folder(out, "--out")  # before loading or generating anything
    if store is not None:
        check_file(store.path, "--store")
    chosen = entries([opts.entry(name) for name in benchmarks])  # a group (math-rl) is its members, as in eval.benchmarks
    specs = {entry.name: BENCHMARKS.get(entry.name) for entry in chosen}  # unknown names fail before loading
    engine_cls = ENGINES.get(engine_name)  # an unknown engine or a missing extra fails before anything loads
    eval_cfg = EvalConfig(prompts_per_batch=max(engine_cfg.prompts_per_batch, 1), engine=engine_name)
    targets = [benchmark_target(entry, specs[entry.name], eval_cfg, opts.data) for entry in chosen]
    model = resolve_model(model, "--model")  # ./m, its absolute path and m/ are one model; a typo never reaches the hub
    engine = engine_cls.load(model, engine_cfg)
    model = with_revision(model)  # a hub id is keyed with the commit just loaded
    folder = out / model_folder(model, engine_name, engine_cfg, opts)
    records = []
    with GradingPool(opts.grading_workers, opts.grading_timeout) as pool:
        for target in targets:
            record = evaluate_target(engine, target, opts.seed, folder / target.label, pool,
                                     dict(model=model, engine=engine_name, thinking=engine_cfg.thinking, seed=opts.seed, run=suite))
            if record is None:  # another rank's share, gathered by rank 0
                continue
            (folder / target.label / "results.json").write_text(record.to_json())
            row = record.to_dict()
            if store is not None:
                put_record(store, suite, row)
            records.append(row)
    return records, folder


def evaluate_target(engine, target: Target, seed: int, folder: Path, pool: GradingPool, fields: dict[str, Any],
                    completions: str = "completions.jsonl", desc: str = "eval") -> EvalRecord | None:  # noqa: ANN001 - any Engine
    """Evaluate one target with `engine`; the record (with `fields`: model, engine, workflow) on rank 0, None elsewhere."""
    result = evaluate(engine, target.problems, target.cfg, seed, target.grader, target.audit, folder / completions,
                      f"{desc} {target.label}", pool)
    if result is None:
        return None
    return EvalRecord.of(result, task=target.label, benchmark=target.benchmark, eval_config=target.protocol(), grader=target.grader,
                         audit_grader=target.audit, eval_seed=seed, data=target.data, limit=target.limit, **fields)


def render(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        k = r["k"]
        rows.append({
            "benchmark": r["task"], "n x k": f"{r['n']}x{k}", r["metric"]: f"{r['mean']:.3f}", "± se": f"{r['stderr']:.3f}",
            f"pass@{k}": f"{r['pass_at'][str(k)]:.3f}", f"maj@{k}": f"{r['maj']:.3f}",
            "no answer": f"{r['no_answer']:.3f}", "graders agree": "-" if r["agreement"] is None else f"{r['agreement']:.3f}",
            "timeouts": r["timeouts"], "samples/s": f"{r['samples_per_second']:.1f}",
        })
    import pandas as pd  # here: importing it costs every evaluating process 0.5 s, and only this table uses it

    return pd.DataFrame(rows).to_string(index=False)

