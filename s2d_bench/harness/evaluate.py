"""avg@k evaluation of one model on a problem set, with every completion kept.

The same function serves the pipeline's after-stage evaluation and `s2d-bench eval`, so a number
in a leaderboard and a number from the command line are computed the same way. Generation comes
first (any engine), grading second (in a process pool), and every completion is written out with
its extracted answer and verdicts, so re-grading never needs to regenerate.

Under a launcher every rank generates: rank r samples problems r, r + world, ... with each
problem's own seed (`protocol.prompt_seeds` over the whole list), so the samples, and the score,
are the ones a single process draws; rank 0 gathers them, grades and summarises.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from s2d_bench import distributed
from s2d_bench.config import EvalConfig
from s2d_bench.generation.engine import Completion, Engine
from s2d_bench.generation.protocol import prompt_seeds
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness.grading import GradingPool, Verdict, grade
from s2d_bench.harness.hendrycks import strip_string
from s2d_bench.harness.metrics import AvgAtK, avg_at_k, maj_at_k, pass_at_k
from s2d_bench.harness.records import problems_path
from s2d_bench.tasks.base import Problem


@dataclass(frozen=True)
class EvalResult:
    score: AvgAtK
    pass_at: dict[int, float]  # unbiased pass@k' for k' = 1, 2, 4, ... <= k
    maj: float  # maj@k
    agreement: float | None  # share of samples on which the audit grader agrees with the primary
    timeouts: int  # samples whose grading was killed (counted wrong)
    no_answer: float  # share of samples without a boxed answer
    seconds: float  # generation and grading
    samples_per_second: float  # generation only
    tokens_per_second: float  # generation only
    breakdown: list[dict[str, Any]] = field(default_factory=list)  # per subject and per level
    per_problem: dict[str, float] = field(default_factory=dict)  # problem id -> mean over its k samples

    def summary(self) -> dict[str, Any]:
        return asdict(self)  # the score too: asdict recurses into dataclass fields


def sampling_of(cfg: EvalConfig) -> Sampling:
    return Sampling(k=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens)


def _powers_of_two(k: int) -> list[int]:
    return [2**i for i in range(k.bit_length())]  # 2**(bit_length - 1) <= k


def _breakdown(problems: list[Problem], per_problem: list[float]) -> list[dict[str, Any]]:
    import pandas as pd  # here, not at the top: a process that only imports the pipeline (a scheduler's parent) saves 0.5 s

    frame = pd.DataFrame({"subject": [p.subject for p in problems], "level": [p.level for p in problems], "mean": per_problem})
    rows = []
    for column in ("subject", "level"):
        if frame[column].replace("", None).notna().any():
            for key, group in frame.groupby(column):
                rows.append({"by": column, "group": str(key), "n": len(group), "mean": float(group["mean"].mean())})
    return rows


def evaluate(
    engine: Engine,
    problems: list[Problem],
    cfg: EvalConfig,
    seed: int,
    grader: str = "exact",
    audit: str | None = None,
    completions_path: Path | None = None,
    desc: str = "eval",
    pool: GradingPool | None = None,
) -> EvalResult | None:
    """Sample cfg.samples completions per problem, grade each, and summarise (on rank 0; None elsewhere)."""
    sampling = sampling_of(cfg)
    k = sampling.k
    engine.check_prompts([p.prompt for p in problems], [p.id for p in problems], sampling.max_new_tokens)
    start = time.perf_counter()
    completions = generate_shared(engine, problems, sampling, seed, desc)
    gen_seconds = time.perf_counter() - start
    if completions is None:
        return None
    golds = [p.answer for p in problems for _ in range(k)]
    verdicts = grade([c.text for c in completions], golds, grader, audit, pool, cfg.extraction, [p.rules for p in problems for _ in range(k)])
    correct = [[v.correct for v in verdicts[i * k : (i + 1) * k]] for i in range(len(problems))]
    answers = [[v.extracted for v in verdicts[i * k : (i + 1) * k]] for i in range(len(problems))]
    score = avg_at_k(correct, k)
    if completions_path is not None:
        _write_completions(completions_path, problems, completions, verdicts, k, grader, audit)
    tokens = sum(c.tokens for c in completions)
    return EvalResult(
        score=score,
        pass_at={kk: pass_at_k(correct, kk) for kk in _powers_of_two(k)},
        maj=maj_at_k(answers, correct, key=_vote_key),
        agreement=None if audit is None else sum(v.correct == v.audit for v in verdicts) / len(verdicts),
        timeouts=sum(v.timed_out for v in verdicts),
        no_answer=sum(v.extracted is None for v in verdicts) / len(verdicts),
        seconds=time.perf_counter() - start,
        samples_per_second=len(completions) / gen_seconds,
        tokens_per_second=tokens / gen_seconds,
        breakdown=_breakdown(problems, [sum(row) / k for row in correct]),
        per_problem={p.id: sum(row) / k for p, row in zip(problems, correct)},
    )


def generate_shared(engine: Engine, problems: list[Problem], sampling: Sampling, seed: int, desc: str) -> list[Completion] | None:
    """All len(problems) * k completions on rank 0 (None on other ranks); each rank samples its share."""
    seeds = prompt_seeds(seed, len(problems))
    rank, world = distributed.rank(), distributed.world()
    mine = list(range(rank, len(problems), world))
    with tqdm(total=len(mine) * sampling.k, desc=desc, unit="sample", dynamic_ncols=True, disable=rank > 0) as bar:
        part = engine.generate([problems[i].prompt for i in mine], sampling, [seeds[i] for i in mine], progress=bar.update)
    if len(part) != len(mine) * sampling.k:
        raise RuntimeError(f"engine returned {len(part)} completions for {len(mine)} problems x k={sampling.k}")
    parts = distributed.gather(part)
    if parts is None:
        return None
    k, out = sampling.k, [None] * (len(problems) * sampling.k)
    for r, samples in enumerate(parts):
        for n, i in enumerate(range(r, len(problems), world)):
            out[i * k : (i + 1) * k] = samples[n * k : (n + 1) * k]
    return out


def _vote_key(answer: str) -> str:
    try:
        return strip_string(answer)
    except Exception:  # noqa: BLE001 - an odd string still votes, as itself
        return answer


def _write_completions(path: Path, problems, completions, verdicts: list[Verdict], k: int, grader: str, audit: str | None) -> None:
    """The completions file (a row a sample, with its verdicts) and beside it its problems file (a row a problem: the
    prompt and gold answer, `problems_path`), so a reader (`s2d-bench browse`) needs nothing but the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(problems_path(path), "w") as f:
        for p in problems:
            f.write(json.dumps({"id": p.id, "prompt": p.prompt, "answer": p.answer, "subject": p.subject, "level": p.level},
                               ensure_ascii=False) + "\n")
    with open(path, "w") as f:
        for i, (c, v) in enumerate(zip(completions, verdicts)):
            row = {
                "id": problems[i // k].id, "sample": i % k, "text": c.text, "tokens": c.tokens,
                "extracted": v.extracted, "correct": v.correct, "grader": grader,
                "audit": v.audit, "audit_grader": audit, "timed_out": v.timed_out,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
