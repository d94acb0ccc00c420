"""The graders: plain functions `(gold, pred) -> bool` in the GRADERS registry.

math-verify is called gold first, `verify(parse(gold), parse(pred))`: it is not symmetric (gold
`1 < x \\le 2` against the prediction `(1,2]` is right gold first and wrong the other way round).
Its own timeouts use `signal.alarm`, which fails outside the main thread and cannot stop a C-level
sympy hang, so they are off here; graders that can hang are listed in ISOLATED and only ever run
inside the killable pool (grading_pool.py).
"""

from __future__ import annotations

from s2d_bench.registry import Registry

GRADERS: Registry = Registry("grader")
GRADERS.register("math_verify", "s2d_bench.harness.graders:math_verify_equal", "math-verify, gold first, in a killable process pool")
GRADERS.register("hendrycks", "s2d_bench.harness.hendrycks:is_equiv", "Hendrycks MATH string normalisation (the audit grader)")
GRADERS.register("exact", "s2d_bench.harness.graders:exact_equal", "the boxed answer equals the gold string")
ISOLATED = {"math_verify"}


def exact_equal(gold: str, pred: str | None) -> bool:
    return pred is not None and pred.strip() == gold.strip()


def math_verify_equal(gold: str, pred: str | None) -> bool:
    """math-verify on boxed forms of both answers, gold first, with its alarm timeouts off."""
    if pred is None:
        return False
    from math_verify import parse, verify

    gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=None)
    pred_parsed = parse(f"$\\boxed{{{pred}}}$", parsing_timeout=None)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
