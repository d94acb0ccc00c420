"""avg@k evaluation of one model on a problem set, with every completion kept.

The same function serves the pipeline's after-stage evaluation and (later) `s2d-bench eval`, so a
number in a leaderboard and a number from the command line are computed the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.backends.base import Backend, Grader
from s2d_bench.config import EvalConfig
from s2d_bench.harness.metrics import AvgAtK, avg_at_k
from s2d_bench.harness.sampling import Sampling
from s2d_bench.tasks.base import Problem


@dataclass(frozen=True)
class EvalResult:
    score: AvgAtK
    seconds: float
    samples_per_second: float


def evaluate(
    backend: Backend,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    problems: list[Problem],
    grade: Grader,
    cfg: EvalConfig,
    seed: int,
    completions_path: Path | None = None,
    desc: str = "eval",
) -> EvalResult:
    """Sample cfg.samples completions per problem, grade each, and return avg@k."""
    sampling = Sampling(k=cfg.samples, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    start = time.perf_counter()
    correct: list[list[bool]] = []
    rows = []
    bar = tqdm(total=len(problems) * cfg.samples, desc=desc, unit="sample", dynamic_ncols=True)
    for first in range(0, len(problems), cfg.prompts_per_batch):
        chunk = problems[first : first + cfg.prompts_per_batch]
        roll = backend.generate(model, tok, [p.prompt for p in chunk], sampling, seed + first)
        for i, problem in enumerate(chunk):
            texts = roll.texts[i * cfg.samples : (i + 1) * cfg.samples]
            outcome = [bool(grade(t, problem)) for t in texts]
            correct.append(outcome)
            rows.extend({"id": problem.id, "sample": j, "text": t, "correct": c} for j, (t, c) in enumerate(zip(texts, outcome)))
        bar.update(len(chunk) * cfg.samples)
    bar.close()
    seconds = time.perf_counter() - start
    if completions_path is not None:
        completions_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return EvalResult(score=avg_at_k(correct, cfg.samples), seconds=seconds, samples_per_second=len(rows) / seconds)
