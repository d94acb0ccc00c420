"""The graders: plain functions `(gold, pred) -> bool` in the GRADERS registry.

math-verify is called gold first, `verify(parse(gold), parse(pred))`: it is not symmetric (gold
`1 < x \\le 2` against the prediction `(1,2]` is right gold first and wrong the other way round).
Its own timeouts use `signal.alarm`, which fails outside the main thread and cannot stop a C-level
sympy hang, so they are off here; graders that can hang are listed in ISOLATED and only ever run
inside the killable pool (grading_pool.py).
"""

from __future__ import annotations

import functools

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
    if "".join(pred.split()) == "".join(gold.split()):  # the gold as written (math-verify fails some: `x \in [-2,7]`)
        return True
    from math_verify import verify

    if _tautology(gold):  # math-verify folds letter case: the gold `N=n` reads n = n, which any equation then matched
        return False  # (the gold as written was right above)
    return bool(verify(list(_parsed(gold)), list(_parsed(pred)), timeout_seconds=None))


@functools.lru_cache(maxsize=4096)
def _parsed(answer: str) -> tuple:
    """math-verify's parse of a boxed answer, kept: a gold is graded against each of its k samples, and a grading worker
    parsed it k times (sympy objects are immutable, so one parse serves every comparison).

    LaTeX extraction only: math-verify's default also reads plain expressions from the text, and when the LaTeX of an
    answer fails to parse it falls back to a number inside it (Minerva's `\\hbar \\omega(v+1/2) - ...` read as 2), so a
    wrong answer that fails the same way was right (benchmarks/reference_graders.py); unparsed, both compare as strings."""
    from math_verify import LatexExtractionConfig, parse

    return tuple(parse(f"$\\boxed{{{answer}}}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None))


@functools.lru_cache(maxsize=4096)
def _tautology(gold: str) -> bool:
    """A gold that parses to an equation with the same expression on both sides (OlympiadBench's `N=n`, case folded)."""
    import sympy

    parsed = _parsed(gold)
    if not parsed or not isinstance(parsed[0], sympy.Equality):
        return False
    lhs, rhs = parsed[0].lhs, parsed[0].rhs
    if isinstance(lhs, sympy.Expr) and isinstance(rhs, sympy.Expr):
        return sympy.simplify(lhs - rhs) == 0
    return lhs == rhs  # a set or interval side (`x \in [-2,7]` parses as x = Interval): no difference to simplify
