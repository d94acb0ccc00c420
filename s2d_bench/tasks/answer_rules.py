"""A benchmark's answer rules, beyond what math-verify compares: rewrites of both answers, a record's unit and tolerance.

Checked against each set's reference grader (benchmarks/reference_graders.py: lm-eval's Minerva normalisation,
OlympiadBench's judger, Qwen2.5-Math's `math_equal`), on every gold and on variants whose verdict is known:
- Minerva Math writes 58 golds in e-notation (`4.5e33`), which math-verify reads as 4.5 x e x 33 (Euler's e), so a
  model's `4.5 \\times 10^{33}` was wrong; the `e_notation` rewrite turns either side's `4.5e33` into `4.5\\times 10^{33}`.
- OlympiadBench records name a unit (`%`, `km/h`, `^{\\circ}`, ...) and a tolerance (`error`): a model that boxes the
  unit with the number, or answers inside the tolerance, is right, as the official judger has it.
Rules are data: `Benchmark.rewrites` names entries of REWRITES; unit and tolerance come from the record (Problem.rules).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")


def e_notation(text: str) -> str:
    """`4.5e33` -> `4.5\\times 10^{33}`, `1e-5` -> `1\\times 10^{-5}`; a symbol such as `e^{2}` or `\\hbar e` is left alone."""
    return _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times 10^{{{int(m.group(2))}}}", text)


def list_variable(text: str) -> str:
    """`x=a, b, c` or `x=a, x=b` -> `a, b, c` / `a, b`: a list of answers that names its variable (OlympiadBench's
    multiple answers), so the list compares as a set whatever its order, as the official judger pairs items. Only when
    the first item names it and the others name nothing, or all name the same one (`f(x)=x, f(x)=-x` is left alone)."""
    items = _top_level_items(text)
    named = [re.match(r"\s*([A-Za-z])\s*=(?!=)", item) for item in items]
    if len(items) < 2 or named[0] is None:
        return text
    variable = named[0].group(1)
    if all("=" not in item for item in items[1:]) or all(m is not None and m.group(1) == variable for m in named):
        return ",".join(item[m.end():] if m is not None else item for item, m in zip(items, named)).strip()
    return text


def _top_level_items(text: str) -> list[str]:
    """`text` split at the commas outside brackets and braces."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]


def trailing_unit(text: str) -> str:
    """`6.4 \\text { days }` -> `6.4`: a unit in text after the value (Minerva's answers carry units, its golds none)."""
    return re.sub(r"(?<=\S)\s*\\(?:text|mathrm)\s*\{[^{}]*\}\s*$", "", text)


REWRITES: dict[str, Callable[[str], str]] = {"e_notation": e_notation, "list_variable": list_variable, "trailing_unit": trailing_unit}
_SCIENTIFIC = re.compile(r"(-?\d+(?:\.\d+)?)(?:[eE]([-+]?\d+)|\\times10\^\{?(-?\d+)\}?)?")


def number(text: str) -> float | None:
    """A plain number, in e-notation or as `a \\times 10^{n}`; None for anything else, and for a number past a float's
    range (left to the grader): a sampled `\\boxed{5e999}` once ended a whole run with an OverflowError, and a
    thousand-digit exponent would build a thousand-digit integer first."""
    match = _SCIENTIFIC.fullmatch("".join(text.split()))
    if match is None:
        return None
    exponent = match.group(2) or match.group(3)
    if exponent and len(exponent.lstrip("+-")) > 3:  # |n| >= 1000: far past a float's 1e308
        return None
    try:
        value = float(match.group(1)) * 10 ** int(exponent) if exponent else float(match.group(1))
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class AnswerRules:
    """How one problem's answers compare: `rewrites` (REWRITES names) on gold and answer alike; `unit` the record's unit,
    dropped from the end of an answer that boxes it; `tolerance` an absolute one for numeric answers (OlympiadBench's
    judger: |gold - answer| <= 1.01 x tolerance)."""

    rewrites: tuple[str, ...] = ()
    unit: str | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        unknown = [r for r in self.rewrites if r not in REWRITES]
        if unknown:
            raise ValueError(f"unknown answer rewrites {unknown}; known: {sorted(REWRITES)}")

    def gold(self, text: str) -> str:
        for name in self.rewrites:
            text = REWRITES[name](text)
        return text

    def answer(self, text: str) -> str:
        text = self.gold(text)
        if self.unit:
            for unit in sorted({self.unit.strip("$ "), self.unit.replace("%", "\\%").strip("$ ")}, key=len, reverse=True):
                if unit and text.rstrip().endswith(unit):  # `\%` before `%`
                    return text.rstrip()[: -len(unit)].rstrip()
        return text

    def decide(self, gold: str, answer: str | None) -> bool | None:
        """The verdict these rules settle before any grader (gold and answer as `gold`/`answer` left them), else None:
        - inside the record's tolerance: right (outside it, the grader decides);
        - with `e_notation`, two numbers compare by value, relative 1e-9: math-verify rounds to 6 decimal places, so
          Minerva's 2.88e-19 and 4.32e-19 were equal."""
        if answer is None:
            return None
        gold_value, value = number(gold), number(answer)
        if gold_value is None or value is None:
            return None
        if self.tolerance is not None and abs(gold_value - value) <= self.tolerance * 1.01:
            return True
        if "e_notation" in self.rewrites:
            return math.isclose(gold_value, value, rel_tol=1e-9, abs_tol=0.0)
        return None


PLAIN = AnswerRules()
