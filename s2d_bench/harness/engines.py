"""Generation engines: k completions per prompt behind one interface.

`hf` runs the harness's own KV-cache sampler on a transformers model (CPU or CUDA, bf16 on
GPUs that support it): one prefill per prompt, whose cache the k samples share. `vllm` (optional extra)
asks vLLM for `n=k` samples per prompt. Both render prompts with the model's chat template, so
a score does not depend on the engine that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.errors import UserError
from s2d_bench.harness.sampling import Sampling, sample
from s2d_bench.harness.shared_prefix import use_shared_prefix_attention
from s2d_bench.models.builders import load_pretrained
from s2d_bench.models.sequences import encode_prompts, left_pad
from s2d_bench.registry import Registry

ENGINES: Registry = Registry("engine")
ENGINES.register("hf", "s2d_bench.harness.engines:HFEngine", "transformers model + s2d-bench KV-cache sampler (CPU/CUDA)")
ENGINES.register("vllm", "s2d_bench.harness.vllm_engine:VLLMEngine", "vLLM, n=k sampling, tensor parallel", extra="vllm")

Progress = Callable[[int], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, EOS included


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA GPUs that support it, else float32
    prompts_per_batch: int = 8  # HF engine: prompts per forward (x k sequences)
    tensor_parallel_size: int = 1  # vLLM engine
    thinking: bool = False  # Qwen3 thinking mode, passed to the chat template as enable_thinking

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise UserError(f"dtype {self.dtype}: use auto, {', '.join(DTYPES)}")


class Engine(Protocol):
    def generate(self, prompts: list[str], sampling: Sampling, seed: int, progress: Progress | None = None) -> list[Completion]:
        """len(prompts) * k completions; entry i * k + j is sample j of prompt i."""
        ...


def resolve_device(name: str) -> str:
    """'auto' is CUDA when torch sees a GPU, else CPU; asking for a GPU that is not there is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but torch sees no GPU: use device=cpu (or auto)")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[name]


class HFEngine:
    """The harness's sampler over an in-memory transformers model."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: EngineConfig = EngineConfig()) -> None:
        self.model, self.tok, self.cfg = model, tok, cfg
        use_shared_prefix_attention(model)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = sorted({*eos, tok.eos_token_id} - {None})

    @classmethod
    def load(cls, ref: str, cfg: EngineConfig = EngineConfig()) -> "HFEngine":
        device = resolve_device(cfg.device)
        model, tok = load_pretrained(ref, device, resolve_dtype(cfg.dtype, device))
        return cls(model, tok, cfg)

    def generate(self, prompts: list[str], sampling: Sampling, seed: int, progress: Progress | None = None) -> list[Completion]:
        rows = encode_prompts(self.tok, prompts, enable_thinking=self.cfg.thinking)
        return self.generate_ids(rows, sampling, seed, progress)

    def generate_ids(self, rows: list[list[int]], sampling: Sampling, seed: int, progress: Progress | None = None) -> list[Completion]:
        """As `generate`, for prompts already templated and tokenized."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch
        out: list[list[Completion]] = [[] for _ in rows]
        device = self.model.device
        generator = torch.Generator(device=device).manual_seed(seed)
        step = self.cfg.prompts_per_batch
        for first in range(0, len(order), step):
            chunk = order[first : first + step]
            ids, mask = left_pad([rows[i] for i in chunk], self.tok.pad_token_id)
            tokens, alive = sample(self.model, ids.to(device), mask.to(device), sampling, self.eos_ids, self.tok.pad_token_id, generator)
            texts = self.tok.batch_decode(tokens.cpu(), skip_special_tokens=True)
            lengths = alive.sum(1).long().tolist()
            for n, i in enumerate(chunk):
                out[i] = [Completion(texts[n * sampling.k + j], lengths[n * sampling.k + j]) for j in range(sampling.k)]
            if progress is not None:
                progress(len(chunk) * sampling.k)
        return [c for per_prompt in out for c in per_prompt]
