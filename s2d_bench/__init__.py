"""s2d-bench: a benchmark harness for the sparse-to-dense post-training workflow.

Teacher GRPO (sparse reward) -> forward-KL warmup -> on-policy distillation (dense) -> optional
student GRPO, evaluated with avg@k after every stage. See README.md.
"""

from s2d_bench import lean_imports

__version__ = "0.1.0"

lean_imports.install()  # before anything imports transformers' generation package (lean_imports.py says why)
