"""Tasks: where prompts, answers and the grader come from."""

from s2d_bench.registry import Registry

TASKS: Registry = Registry("task")
TASKS.register(
    "add3mix",
    "s2d_bench.tasks.arithmetic:AdditionTask",
    "zero-padded addition of 1-3 digit operands, answered as \\boxed{dddd}; exact grading",
)
TASKS.register(
    "math",
    "s2d_bench.tasks.math_task:MathTask",
    "competition maths: training problems from task.train_data, evaluation on task.test_benchmark; math-verify grading",
)

BENCHMARKS: Registry = Registry("benchmark")
BENCHMARKS.register("math500", "s2d_bench.tasks.benchmarks:MATH500", "MATH-500 (PRM800K test split), avg@16, math-verify")
BENCHMARKS.register("aime24", "s2d_bench.tasks.benchmarks:AIME24", "AIME 2024 I+II, 30 problems, avg@16")
BENCHMARKS.register("aime25", "s2d_bench.tasks.benchmarks:AIME25", "AIME 2025 I+II, 30 problems, avg@16")
BENCHMARKS.register("gsm8k", "s2d_bench.tasks.benchmarks:GSM8K", "GSM8K test, 1,319 problems")
BENCHMARKS.register("amc23", "s2d_bench.tasks.benchmarks:AMC23", "AMC 12 2023 with numeric answers (Qwen2.5-Math's), 40 problems, avg@16")
BENCHMARKS.register("minerva_math", "s2d_bench.tasks.benchmarks:MINERVA", "Minerva Math (MIT OCW science courses), 272 problems, avg@16")
BENCHMARKS.register("olympiadbench", "s2d_bench.tasks.benchmarks:OLYMPIADBENCH",
                    "OlympiadBench, English text-only open-ended maths, 675 problems, avg@16")
BENCHMARKS.register("hmmt_feb25", "s2d_bench.tasks.benchmarks:HMMT_FEB25", "HMMT February 2025, 30 problems, avg@16")
BENCHMARKS.register("brumo25", "s2d_bench.tasks.benchmarks:BRUMO25", "BrUMO 2025, 30 problems, avg@16")
BENCHMARKS.register("aime26", "s2d_bench.tasks.benchmarks:AIME26", "AIME 2026 I+II, 30 problems, avg@16")
