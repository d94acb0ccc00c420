"""What every generation engine is: k completions per prompt, for evaluation and for rollouts.

An engine is built one of two ways. `load(ref, cfg)` reads weights from a path, for evaluation.
`live(model, tok, rollout_cfg, thinking, trained)` follows a module a training stage holds: the `hf` engine samples
the module itself, the `vllm` engine keeps a copy whose weights are pushed before every rollout
of a trained model (once for a frozen teacher). Both kinds render prompts with
`protocol.render` and stop at `protocol.stop_ids`, so a number does not depend on the engine.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.errors import UserError
from s2d_bench.generation import ENGINES
from s2d_bench.generation.rollouts import Rollouts
from s2d_bench.generation.sampling import Sampling

if TYPE_CHECKING:
    from s2d_bench.config import RolloutConfig

Progress = Callable[[int], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, the stop token included
    ids: list[int] = field(default_factory=list, compare=False)  # the generated token ids


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA GPUs that support it, else float32
    prompts_per_batch: int = 8  # hf engine: prompts per forward (x k sequences); 0: all at once
    max_batch_tokens: int = 0  # hf engine: KV-cache positions per batch, k x (longest prompt + max_new_tokens); 0: no bound
    tensor_parallel_size: int = 1  # vllm engine, evaluation
    thinking: bool = False  # prompt.thinking: passed to the chat template as enable_thinking

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise UserError(f"dtype {self.dtype}: use auto, {', '.join(DTYPES)}")
        if self.prompts_per_batch < 0:
            raise UserError("prompts_per_batch must be >= 0 (0: every prompt in one batch)")
        if self.max_batch_tokens < 0:
            raise UserError("max_batch_tokens must be >= 0 (0: no bound)")


class Engine(Protocol):
    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        """len(prompts) * k completions; entry i * k + j is sample j of prompt i, drawn from seeds[i]."""
        ...

    def rollouts(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> Rollouts:
        """The same samples laid out for training (right-padded, mask up to and including the stop token)."""
        ...

    def check_prompts(self, prompts: list[str], names: list[str], max_new_tokens: int) -> None:
        """Refuse (UserError naming the problem) a prompt that with its completion does not fit the model's context."""
        ...

    def close(self) -> None:
        """Release what the engine holds (vLLM: its GPU memory)."""
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


@contextlib.contextmanager
def open_rollouts(cfg: RolloutConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase, thinking: bool, trained: bool) -> Iterator[Engine]:
    """The configured engine following `model`, closed when the block ends (a stage, or a crash in it).

    A stage opens one engine per model it samples from (config `rollout.engine`). `trained` says
    whether that model changes between rollouts (the policy in GRPO and OPD) or is frozen (the
    teacher in the warmup): the vLLM engine pushes weights before every rollout only of the first.
    """
    engine = ENGINES.get(cfg.engine).live(model, tok, cfg, thinking, trained)
    try:
        yield engine
    finally:
        engine.close()
