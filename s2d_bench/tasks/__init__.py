"""Tasks: where prompts, answers and the grader come from."""

from s2d_bench.registry import Registry

TASKS: Registry = Registry("task")
TASKS.register(
    "add3mix",
    "s2d_bench.tasks.arithmetic:AdditionTask",
    "zero-padded addition of 1-3 digit operands, answered as \\boxed{dddd}; exact grading",
)
