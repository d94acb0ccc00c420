import random

import pytest

from s2d_bench.config import TaskConfig
from s2d_bench.harness.grading import grade
from s2d_bench.tasks.arithmetic import AdditionTask
from s2d_bench.tasks.base import joined_boxes, last_boxed


def test_splits_are_disjoint_deterministic_and_sized():
    cfg = TaskConfig(n_labeled=50, n_unlabeled=500, n_test=40)
    a, b = AdditionTask(cfg).splits(), AdditionTask(cfg).splits()
    assert a == b
    ids = [set(p.id for p in s) for s in (a.labeled, a.unlabeled, a.test)]
    assert [len(s) for s in ids] == [50, 500, 40]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert AdditionTask(TaskConfig(seed=1, n_labeled=50, n_unlabeled=500, n_test=40)).splits().test != a.test


def test_problem_format_and_exact_grading():
    task = AdditionTask(TaskConfig(n_labeled=4, n_unlabeled=4, n_test=4))
    p = task.problem(7, 385)
    assert (p.prompt, p.answer) == ("007+385=", "0392")
    texts = ["\\boxed{0392}", "first \\boxed{1111} then \\boxed{0392}", "\\boxed{392}", "0392"]
    verdicts = [v.correct for v in grade(texts, [p.answer] * len(texts), task.grader, None)]
    # the last box counts; exact: the padded form is the answer; no box, no credit
    assert verdicts == [True, True, False, False]


def test_last_boxed_matches_braces():
    assert last_boxed("\\boxed{\\frac{1}{2}} and more") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None


@pytest.mark.parametrize("text, answer", [
    ("\\boxed 7", "7"),
    ("so the length is \\boxed 5 cm", "5 cm"),  # lm-eval's Hendrycks helper reads the unit too (it once gave '5')
    ("$\\boxed 5 cm$ as said", "5 cm"),
    ("\\boxed 12\nSo we are done.", "12"),
    ("\\boxed ", None),
])
def test_a_brace_less_box_holds_what_follows_it_to_a_dollar_or_the_line_end(text, answer):
    assert last_boxed(text) == answer


def test_pretrain_corpus_is_noisy_at_the_configured_rate_and_avoids_test():
    task = AdditionTask(TaskConfig(n_labeled=16, n_unlabeled=64, n_test=100, pretrain_correct_prob=0.35))
    examples = task.pretrain_examples(random.Random(0), 4000)
    test_prompts = {p.prompt for p in task.splits().test}
    assert not any(prompt in test_prompts for prompt, _ in examples)
    right = 0
    for prompt, completion in examples:
        a, b = prompt.rstrip("=").split("+")
        gold = f"{int(a) + int(b):04d}"
        got = last_boxed(completion)
        assert len(got) == 4 and sum(x != y for x, y in zip(got, gold)) <= 1  # at most one digit off
        right += got == gold
    assert 0.31 < right / len(examples) < 0.39


@pytest.mark.parametrize("text, answer", [
    ("\\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}", "-2, 1"),
    ("$\\boxed{3}$, $\\boxed{5}$, and $\\boxed{7}$.", "3, 5, 7"),
    ("\\fbox{3} or \\boxed{4}", "3, 4"),
    ("we found \\boxed{12} cases, so the answer is \\boxed{5}", "5"),  # words between: an earlier result, not joined
    ("\\boxed{\\boxed{1}}", "1"),  # a box inside a box: the inner one, as last_boxed reads it
    ("\\boxed{1} and \\boxed{2", None),  # the last box unclosed: truncated, no answer (as last_boxed)
    ("\\boxed{x} and \\boxed 5 cm", "x, 5 cm"),
    ("\\boxedx", None),
    ("nothing", None),
])
def test_joined_boxes_joins_the_boxes_of_one_answer(text, answer):
    assert joined_boxes(text) == answer
    if answer is not None and ", " not in answer:
        assert joined_boxes(text) == last_boxed(text)  # one box: both extractions agree
