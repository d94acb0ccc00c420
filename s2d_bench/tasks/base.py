"""What every task hands the pipeline: problems in splits, and a grader."""

from __future__ import annotations

import re

from dataclasses import dataclass

from s2d_bench.tasks.answer_rules import PLAIN, AnswerRules


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str  # the user message, before any chat template
    answer: str  # the gold final answer, as the grader compares it
    subject: str = ""  # for per-subject breakdowns (MATH)
    level: int | None = None  # for per-level breakdowns (MATH 1-5)
    rules: AnswerRules = PLAIN  # the benchmark's rewrites, the record's unit and tolerance (answer_rules.py)


@dataclass(frozen=True)
class Splits:
    """Disjoint problem sets. Only `labeled` answers may be used for training."""

    labeled: list[Problem]
    unlabeled: list[Problem]
    test: list[Problem]


def _box_at(text: str, start: int) -> tuple[str, int] | None:
    """The content of the box whose `\\boxed` (or `\\fbox`) starts at `start`, and where the box ends; None when it
    is unclosed or empty. The brace-less form `\\boxed 5 cm` runs to a `$` or the end of the line."""
    head = start + (5 if text.startswith("\\fbox", start) else 6)
    rest = text[head:]
    if rest.startswith(" "):
        answer = rest.split("$")[0].split("\n")[0]
        return (answer.strip(), head + len(answer)) if answer.strip() else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i], head + i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces matched.

    The brace-less form `\\boxed 5 cm` yields what follows the space up to a `$` (as lm-eval's Hendrycks helper reads
    it, `5 cm`, not `5`) or the end of the line. None when there is no box, or the last one is unclosed: a truncated
    answer is no answer.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    box = _box_at(text, start)
    return box[0] if box else None


BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# What may stand between two boxes of one answer: whitespace, commas, `$`, LaTeX spacing, "and"/"or" (plain or \text)
CONNECTOR = re.compile(r"(?:\s|[,;.$]|\\[,;:! ]|\\q?quad|\\\\|\\text\{\s*(?:and|or)\s*\}|\b(?:and|or)\b)*")


def joined_boxes(text: str) -> str | None:
    """The last box and the boxes right before it that one answer spreads over (`\\boxed{3}, \\boxed{5}`,
    `\\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}`), joined by ", " as one list: math-verify's own extraction
    joins consecutive boxes so. A box earlier in the reasoning, with words between it and the answer, is not joined.
    None when the last box is unclosed (a truncated answer, as `last_boxed`)."""
    boxes = []
    for match in BOX.finditer(text):
        box = _box_at(text, match.start())
        found = (box[0] if box else None, match.start(), box[1] if box else len(text))
        if boxes and match.start() < boxes[-1][2]:
            boxes[-1] = found  # a box inside a box: the inner one is the answer, as last_boxed reads it
        else:
            boxes.append(found)
    if not boxes or boxes[-1][0] is None:
        return None
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if box[0] is None or not CONNECTOR.fullmatch(text[box[2] : run[0][1]]):
            break
        run.insert(0, box)
    return ", ".join(content for content, _, _ in run)


EXTRACTIONS = {"last_box": last_boxed, "boxes": joined_boxes}  # the answer a completion gives, by protocol setting
