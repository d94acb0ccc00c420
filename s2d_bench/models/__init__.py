"""Named model builders, the character tokenizer, and loading from a path or hub id."""

from s2d_bench.registry import Registry

MODELS: Registry = Registry("model builder")
MODELS.register("tiny-qwen3-teacher", "s2d_bench.models.builders:tiny_qwen3_teacher", "Qwen3, 4 layers, width 96 (~0.4M params), char vocab")
MODELS.register("tiny-qwen3-student", "s2d_bench.models.builders:tiny_qwen3_student", "Qwen3, 2 layers, width 48 (~60k params), char vocab")
