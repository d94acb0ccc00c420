"""Generation for training and evaluation alike: one prompt and stop protocol, one engine per kind.

`protocol.py` renders prompts and names the stop tokens; `sampling.py` and `shared_prefix.py`
are the built-in KV-cache sampler (`static_decode.py` its compiled variant); `hf.py` and `vllm.py` are the engines (evaluation from a path,
rollouts from a live or pushed model); `rollouts.py` lays samples out for the training losses.
Config: `prompt.thinking`, `eval.engine` and `rollout.engine` name what is used.
"""

from s2d_bench.registry import Registry

ENGINES: Registry = Registry("engine")
ENGINES.register("hf", "s2d_bench.generation.hf:HFEngine", "s2d-bench KV-cache sampler, shared-prefix decoding (CPU/CUDA); live weights in training")
ENGINES.register("hf-compiled", "s2d_bench.generation.hf:CompiledHFEngine",
                 "hf with a static-shape KV cache and a torch.compile'd decode step (CUDA graphs on a GPU): compiles once per "
                 "process and batch shape, then decodes about 13x faster on a GPU (slower than hf on a CPU); same tokens up to float rounding")
ENGINES.register("vllm", "s2d_bench.generation.vllm:VLLMEngine", "vLLM: tensor parallel evaluation; in training a colocated copy, weights pushed before each rollout (GPU)", extra="vllm")
