"""What every task hands the pipeline: problems in splits, and a grader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the user message, before any chat template
    answer: str  # the gold final answer, as the grader compares it


@dataclass(frozen=True)
class Splits:
    """Disjoint problem sets. Only `labeled` answers may be used for training."""

    labeled: list[Problem]
    unlabeled: list[Problem]
    test: list[Problem]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, braces matched; None when absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None
