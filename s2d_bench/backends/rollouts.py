"""Rollout engines: how the training loops sample completions (config `rollout.engine`).

A stage opens one engine per model it samples from (`open_rollouts`) and closes it when the stage
ends. `live` says whether that model is trained between rollouts (the policy in GRPO and OPD) or
frozen (the teacher in the warmup). The `hf` engine samples the live module itself with the
s2d-bench KV-cache sampler, so there is nothing to sync. The `vllm` engine (vllm_rollouts.py)
keeps its own copy of the weights, pushed from the trainer before every rollout of a live model
and once for a frozen one. Both engines build their `Rollouts` with `rollouts_from_tokens`, so
the engine that sampled a batch never changes how the batch is laid out or decoded.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.backends import ROLLOUTS
from s2d_bench.backends.base import Rollouts
from s2d_bench.config import RolloutConfig
from s2d_bench.harness.sampling import Sampling, sample
from s2d_bench.models.sequences import encode_prompts, join, left_pad


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        """k = sampling.k samples per prompt, from the model's current weights."""
        ...

    def close(self) -> None:
        """Release what the engine holds (vLLM: its GPU memory)."""
        ...


@contextlib.contextmanager
def open_rollouts(cfg: RolloutConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase, live: bool) -> Iterator[RolloutEngine]:
    """The configured engine for `model`, closed when the block ends (a stage, or a crash in it)."""
    engine = ROLLOUTS.get(cfg.engine)(model, tok, cfg, live)
    try:
        yield engine
    finally:
        engine.close()


def _rollouts(tok: PreTrainedTokenizerBase, rows: list[list[int]], k: int, ids: torch.Tensor, mask: torch.Tensor) -> Rollouts:
    batch = join([r for r in rows for _ in range(k)], ids, mask, tok.pad_token_id)
    return Rollouts(texts=tok.batch_decode(ids.cpu(), skip_special_tokens=True), batch=batch, k=k)


def rollouts_from_tokens(tok: PreTrainedTokenizerBase, rows: list[list[int]], k: int, completions: list[list[int]]) -> Rollouts:
    """Rollouts from prompt rows and k token lists per prompt, each ending with EOS or at the cap.

    The layout is the sampler's: right-padded with the pad id, mask 1 up to and including EOS.
    """
    width = max(1, max(len(c) for c in completions))
    ids = torch.full((len(completions), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width), dtype=torch.bool)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, : len(c)] = True
    return _rollouts(tok, rows, k, ids, mask)


def hf_generate(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
    """k samples per prompt from `model` as it is now, all prompts in one batch."""
    rows = encode_prompts(tok, prompts)
    ids, mask = left_pad(rows, tok.pad_token_id)
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    completion, cmask = sample(model, ids.to(device), mask.to(device), sampling, tok.eos_token_id, tok.pad_token_id, generator)
    return _rollouts(tok, rows, sampling.k, completion, cmask)


class HFRollouts:
    """The s2d-bench sampler on the live module: always the current weights, no copy."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: RolloutConfig, live: bool) -> None:
        self.model, self.tok = model, tok

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        return hf_generate(self.model, self.tok, prompts, sampling, seed)

    def close(self) -> None:
        return None
