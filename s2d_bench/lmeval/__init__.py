"""lm-eval interop (extra `lmeval`): our tasks as lm-eval YAMLs, and our engine as an lm-eval model.

`lm_eval --include_path $(python -c "import s2d_bench.lmeval as m; print(m.TASKS_DIR)") --tasks s2d_math500`
reproduces s2d-bench's protocol inside lm-eval: the same prompts, 16 repeats that are all scored
(lm-eval's default filter keeps only the first), math-verify grading, avg@16. `--model s2d-hf`
(after `import s2d_bench.lmeval.model`) serves lm-eval tasks with s2d-bench's HF engine.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"
