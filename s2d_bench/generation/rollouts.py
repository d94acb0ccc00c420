"""Samples laid out for the training losses, and the engine a training stage samples with.

A stage opens one engine per model it samples from (`open_rollouts`, config `rollout.engine`) and
closes it when the stage ends. `trained` says whether that model changes between rollouts (the
policy in GRPO and OPD) or is frozen (the teacher in the warmup). Every engine builds its
`Rollouts` with `rollouts_from_tokens`, so the engine that sampled a batch never changes how the
batch is laid out or decoded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.generation.protocol import completion_texts
from s2d_bench.models.sequences import Batch, join

if TYPE_CHECKING:
    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.engine import Engine


@dataclass
class Rollouts:
    """k samples per prompt; sequence i answers prompt i // k."""

    texts: list[str]
    batch: Batch
    k: int


@contextlib.contextmanager
def open_rollouts(cfg: "RolloutConfig", model: PreTrainedModel, tok: PreTrainedTokenizerBase, thinking: bool, trained: bool) -> Iterator["Engine"]:
    """The configured engine following `model`, closed when the block ends (a stage, or a crash in it)."""
    from s2d_bench.generation import ENGINES

    engine = ENGINES.get(cfg.engine).live(model, tok, cfg, thinking, trained)
    try:
        yield engine
    finally:
        engine.close()


def rollouts_from_tokens(tok: PreTrainedTokenizerBase, rows: list[list[int]], k: int, completions: list[list[int]]) -> Rollouts:
    """Rollouts from prompt rows and k token lists per prompt, each ending with a stop token or at the cap.

    The layout is the sampler's: right-padded with the pad id, mask 1 up to and including the stop token.
    """
    width = max(1, max((len(c) for c in completions), default=1))
    ids = torch.full((len(completions), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width), dtype=torch.bool)
    for i, c in enumerate(completions):
        ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, : len(c)] = True
    batch = join([r for r in rows for _ in range(k)], ids, mask, tok.pad_token_id)
    return Rollouts(texts=completion_texts(tok, ids), batch=batch, k=k)
