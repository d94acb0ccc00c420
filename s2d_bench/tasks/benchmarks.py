"""The real benchmarks as data: where each comes from, how it is prompted, sampled and graded.

A benchmark loads from a local JSON Lines file (fields `id`, `problem`, `answer`, optionally
`subject`, `level`) or, online, from its Hugging Face dataset, through `datasets` either way.
The package ships no copy of the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from s2d_bench.errors import UserError
from s2d_bench.models.refs import hub_offline
from s2d_bench.tasks.answer_rules import AnswerRules
from s2d_bench.tasks.base import Problem
from s2d_bench.tasks.jsonl import read_jsonl

DEFAULT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
DATA_ENV = "S2D_DATA_DIR"


@dataclass(frozen=True)
class Benchmark:
    name: str
    local_file: str  # file name looked up in a data directory
    hf_id: str
    hf_split: str = "test"
    hf_config: str | None = None
    hf_fields: dict[str, str] = field(default_factory=dict)  # ours -> the hub copy's, where they differ
    answer_after: str | None = None  # the hub copy's answer is the text after this marker (GSM8K "####")
    template: str = DEFAULT_TEMPLATE
    samples: int = 16
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 4096
    grader: str = "math_verify"
    audit: str | None = "hendrycks"
    gold_in_dollars: bool = False  # golds written as LaTeX fragments in `$...$` (OlympiadBench): the `$` are dropped on load
    # The answer a completion gives (tasks/base.EXTRACTIONS): boxes, as math-verify extracts, so a list answer boxed item by
    # item (`\boxed{-2} \quad \text{and} \quad \boxed{1}`) is read whole; 27 MATH-500 golds hold a comma
    extraction: str = "boxes"
    rewrites: tuple[str, ...] = ()  # answer rewrites on gold and answer alike (answer_rules.REWRITES)


MATH500 = Benchmark("math500", "math500.jsonl", "HuggingFaceH4/MATH-500", hf_fields={"id": "unique_id"})
AIME24 = Benchmark("aime24", "aime24.jsonl", "HuggingFaceH4/aime_2024", hf_split="train", max_new_tokens=8192)
AIME25 = Benchmark("aime25", "aime25.jsonl", "MathArena/aime_2025", hf_split="train", hf_fields={"id": "problem_idx"}, max_new_tokens=8192)
# The literature's wider suite (NeMo-Skills, lighteval, evalscope and OpenCompass ship most of it). Competition sets take
# AIME's protocol (16 samples, T 0.7, top-p 0.8, top-k 20, 8,192 tokens); Minerva Math, course problems, MATH-500's 4,096.
COMPETITION = dict(max_new_tokens=8192)
AMC23 = Benchmark("amc23", "amc23.jsonl", "math-ai/amc23", hf_split="test", **COMPETITION)
MINERVA = Benchmark("minerva_math", "minerva_math.jsonl", "knoveleng/Minerva-Math", hf_split="train",
                    rewrites=("trailing_unit", "e_notation"))
OLYMPIADBENCH = Benchmark("olympiadbench", "olympiadbench.jsonl", "Hothan/OlympiadBench", hf_split="train",
                          hf_config="OE_TO_maths_en_COMP", hf_fields={"problem": "question", "answer": "final_answer"},
                          gold_in_dollars=True, **COMPETITION)
HMMT_FEB25 = Benchmark("hmmt_feb25", "hmmt_feb25.jsonl", "MathArena/hmmt_feb_2025", hf_split="train", hf_fields={"id": "problem_idx"},
                       **COMPETITION)
BRUMO25 = Benchmark("brumo25", "brumo25.jsonl", "MathArena/brumo_2025", hf_split="train", hf_fields={"id": "problem_idx"}, **COMPETITION)
AIME26 = Benchmark("aime26", "aime26.jsonl", "MathArena/aime_2026", hf_split="train", hf_fields={"id": "problem_idx"}, **COMPETITION)
GSM8K = Benchmark(
    "gsm8k", "gsm8k_test.jsonl", "openai/gsm8k", hf_config="main",
    hf_fields={"problem": "question"}, answer_after="####", max_new_tokens=1024,
)


def _data_file(bench: Benchmark, data: str | None) -> Path | None:
    """The local file to read: `data` (a file or a folder), else $S2D_DATA_DIR, else None (hub)."""
    source = data or os.environ.get(DATA_ENV)
    if not source:
        return None
    path = Path(source)
    if path.is_dir():
        path = path / bench.local_file
    if not path.is_file():
        raise UserError(f"{bench.name}: no data file at {path}; give --data a JSON Lines file or a folder holding {bench.local_file}")
    return path


def _record_to_problem(bench: Benchmark, row: dict, index: int, mapped: bool) -> Problem:
    get = (lambda key: row.get(bench.hf_fields.get(key, key))) if mapped else row.get
    answer = str(get("answer"))
    if bench.gold_in_dollars:  # `$\frac{1}{2}$` -> `\frac{1}{2}`, `$69$,$84$` -> `69,84`: the grader boxes a gold, never a $
        answer = answer.replace("$", "").strip()
    if mapped and bench.answer_after:
        answer = answer.split(bench.answer_after)[-1].strip().replace(",", "")
    problem_id = get("id")
    level = get("level")
    if isinstance(level, str):  # the hub MATH copy says "Level 3"
        level = int(level.split()[-1]) if level.split()[-1].isdigit() else None
    tolerance = get("error")
    return Problem(
        id=str(problem_id if problem_id is not None else index),
        prompt=bench.template.format(problem=get("problem")),
        answer=answer,
        subject=str(get("subject") or ""),
        level=level,
        rules=AnswerRules(bench.rewrites + (("list_variable",) if get("is_multiple_answer") else ()), get("unit") or None,
                          float(tolerance) if tolerance else None),
    )


def load_problems(bench: Benchmark, data: str | None = None, limit: int | None = None) -> list[Problem]:
    """The benchmark's problems in file order, the first `limit` of them when given."""
    path = _data_file(bench, data)
    if path is not None:
        rows = read_jsonl(path, bench.name)
    else:
        rows = _hub_rows(bench)
    if limit is not None:
        rows = rows[:limit]
    problems = [_record_to_problem(bench, row, i, mapped=path is None) for i, row in enumerate(rows)]
    missing = [p.id for p in problems if not p.answer or p.answer == "None"]
    if missing:
        raise UserError(f"{bench.name}: {len(missing)} records have no answer (first: {missing[0]}); every record needs id, problem, answer")
    return problems


def _hub_rows(bench: Benchmark) -> list[dict]:
    import datasets

    if hub_offline():
        raise UserError(f"{bench.name}: no local data given and the hub is unreachable; pass --data (or task.data_dir, "
                        f"${DATA_ENV}) with a folder holding {bench.local_file}")
    try:
        return list(datasets.load_dataset(bench.hf_id, bench.hf_config, split=bench.hf_split))
    except (ConnectionError, OSError, ValueError) as exc:
        raise UserError(f"{bench.name}: cannot load {bench.hf_id} ({exc}); offline, pass --data with a local JSON Lines file") from None


# Named groups of benchmarks: `s2d-bench eval --tasks math-rl` and `eval.benchmarks: [{name: math-rl}]` run each member
# (harness/targets.entries); the leaderboard adds the group's macro average. The reasoning-RL literature's usual suite:
GROUPS: dict[str, tuple[str, ...]] = {
    "math-rl": ("math500", "aime24", "aime25", "aime26", "amc23", "minerva_math", "olympiadbench", "hmmt_feb25", "brumo25"),
}

