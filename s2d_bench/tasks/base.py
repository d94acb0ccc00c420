"""What every task hands the pipeline: problems in splits, and a grader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the user message, before any chat template
    answer: str  # the gold final answer, as the grader compares it
    subject: str = ""  # for per-subject breakdowns (MATH)
    level: int | None = None  # for per-level breakdowns (MATH 1-5)


@dataclass(frozen=True)
class Splits:
    """Disjoint problem sets. Only `labeled` answers may be used for training."""

    labeled: list[Problem]
    unlabeled: list[Problem]
    test: list[Problem]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces matched.

    The brace-less form `\\boxed 5 cm` yields what follows the space up to a `$` (as lm-eval's Hendrycks helper reads
    it, `5 cm`, not `5`) or the end of the line. None when there is no box, or the last one is unclosed: a truncated
    answer is no answer.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start + (5 if text.startswith("\\fbox", start) else 6) :]
    if rest.startswith(" "):
        answer = rest.split("$")[0].split("\n")[0].strip()
        return answer or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None
