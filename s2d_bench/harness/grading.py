"""Grading model answers against gold answers, safely.

Three rules make the numbers trustworthy:
- the answer is the content of the *last* `\\boxed{}` (with `extraction: boxes`, joined with the boxes of one
  answer right before it, as math-verify extracts); a completion without one is wrong;
- math-verify is called gold first (graders.py): it is not symmetric;
- math-verify runs in worker processes with a hard per-item deadline (grading_pool.py); a timeout
  after one retry counts as wrong and is counted.

`grade` turns completions into Verdicts: extraction, the primary and audit graders, each
distinct (grader, gold, answer) graded once.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2d_bench.harness.graders import GRADERS, ISOLATED
from s2d_bench.harness.grading_pool import GradingPool
from s2d_bench.tasks.answer_rules import PLAIN, AnswerRules
from s2d_bench.tasks.base import EXTRACTIONS

__all__ = ["GRADERS", "GradingPool", "Verdict", "grade"]


@dataclass(frozen=True)
class Verdict:
    extracted: str | None
    correct: bool  # by the primary grader
    audit: bool | None  # by the audit grader, None when there is none
    timed_out: bool = False


def grade(
    completions: list[str],
    golds: list[str],
    grader: str = "math_verify",
    audit: str | None = "hendrycks",
    pool: GradingPool | None = None,
    extraction: str = "last_box",
    rules: list[AnswerRules] | None = None,
) -> list[Verdict]:
    """One Verdict per completion (completions[i] answers golds[i]), its answer read by `extraction`
    (tasks/base.EXTRACTIONS: the last box, or the last boxes of one answer joined) and compared under rules[i]
    (tasks/answer_rules.py: rewrites of both sides, the record's unit and tolerance; none given: plain)."""
    for name in (grader, audit):
        if name is not None:
            GRADERS.check(name)
    extract = EXTRACTIONS[extraction]
    extracted = [extract(c) for c in completions]
    rules = rules or [PLAIN] * len(golds)
    compared = [(r.gold(g), r.answer(e) if e is not None else None) for r, g, e in zip(rules, golds, extracted)]
    decided = [r.decide(g, e) for r, (g, e) in zip(rules, compared)]  # settled by the rules (a tolerance, two numbers)
    names = [n for n in (grader, audit) if n is not None]
    items = [(n, g, e) for n in names for (g, e), d in zip(compared, decided) if e is not None and d is None]
    isolated = [it for it in items if it[0] in ISOLATED]
    verdicts: dict[tuple, bool | None] = {}
    if isolated:
        owned = pool is None
        pool = pool or GradingPool()
        try:
            verdicts.update(pool.run(isolated))
        finally:
            if owned:
                pool.close()
    for item in dict.fromkeys(it for it in items if it[0] not in ISOLATED):
        verdicts[item] = GRADERS.get(item[0])(item[1], item[2])
    out = []
    for (g, e), d, raw in zip(compared, decided, extracted):
        if d is not None:
            out.append(Verdict(extracted=raw, correct=d, audit=None if audit is None else d))
            continue
        main = verdicts.get((grader, g, e), False)  # no answer extracted: never graded, wrong
        second = bool(verdicts.get((audit, g, e), False)) if audit else None
        out.append(Verdict(extracted=raw, correct=bool(main), audit=second, timed_out=main is None))
    return out
