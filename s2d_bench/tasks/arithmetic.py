"""`add3mix`: the embedded default's verifiable task.

A prompt is two zero-padded operands of 1 to `max_digits` digits (`007+385=`); the answer is the
zero-padded sum in `\\boxed{}` (`\\boxed{0392}`), the form the real benchmarks use. Grading is
exact on the last boxed answer.

The pretraining corpus is deliberately noisy: an example is right with probability
`pretrain_correct_prob`, otherwise one digit of its answer is replaced. That makes base models
mediocre but not hopeless, so sparse reward has a signal to find; ../shared/research/toy.md
found that this kind of noise (not "forgot to carry") reproduces the paper's ordering.
"""

from __future__ import annotations

import random

from s2d_bench.config import TaskConfig
from s2d_bench.errors import UserError
from s2d_bench.tasks.base import Problem, Splits


class AdditionTask:
    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg
        self.width = cfg.max_digits
        self._splits = self._make_splits()
        self._test_pairs = {self._pair(p) for p in self._splits.test}

    # -- problems
    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(1, self.width)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    def problem(self, a: int, b: int) -> Problem:
        w = self.width
        return Problem(id=f"{a}+{b}", prompt=f"{a:0{w}d}+{b:0{w}d}=", answer=f"{a + b:0{w + 1}d}")

    @staticmethod
    def _pair(problem: Problem) -> tuple[int, int]:
        a, b = problem.id.split("+")
        return int(a), int(b)

    def _make_splits(self) -> Splits:
        cfg = self.cfg
        needed = cfg.n_test + cfg.n_labeled + cfg.n_unlabeled
        space = (10**self.width) ** 2
        if needed > space // 2:
            raise UserError(f"task asks for {needed} distinct problems (n_test + n_labeled + n_unlabeled); {self.width}-digit addition "
                            f"has {space} pairs, of which at most half are used: lower them or raise task.max_digits")
        rng = random.Random(cfg.seed)
        seen: dict[tuple[int, int], None] = {}
        while len(seen) < needed:
            seen.setdefault((self._operand(rng), self._operand(rng)))
        problems = [self.problem(a, b) for a, b in seen]
        test = problems[: cfg.n_test]
        labeled = problems[cfg.n_test : cfg.n_test + cfg.n_labeled]
        return Splits(labeled=labeled, unlabeled=problems[cfg.n_test + cfg.n_labeled :], test=test)

    def splits(self) -> Splits:
        return self._splits

    # -- grading
    @staticmethod
    def completion(answer: str) -> str:
        return f"\\boxed{{{answer}}}"

    grader = "exact"  # registered grader (harness/graders.py) of rewards and evaluations alike

    # -- pretraining corpus
    def pretrain_examples(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """`n` (prompt, completion) pairs, never from the test split, with digit noise."""
        out = []
        while len(out) < n:
            a, b = self._operand(rng), self._operand(rng)
            if (a, b) in self._test_pairs:
                continue
            problem = self.problem(a, b)
            answer = problem.answer
            if rng.random() >= self.cfg.pretrain_correct_prob:
                i = rng.randrange(len(answer))
                wrong = rng.choice([d for d in "0123456789" if d != answer[i]])
                answer = answer[:i] + wrong + answer[i + 1 :]
            out.append((problem.prompt, self.completion(answer)))
        return out
