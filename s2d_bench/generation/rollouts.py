"""Samples laid out for the training losses.

Every engine builds its `Rollouts` with `rollouts_from_tokens`, so the engine that sampled a batch
never changes how the batch is laid out or decoded. (The engine a stage samples with is opened by
`engine.open_rollouts`; this module knows no engine.)
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from s2d_bench.generation.protocol import completion_texts
from s2d_bench.models.sequences import Batch, join, right_pad


@dataclass
class Rollouts:
    """k samples per prompt; sequence i answers prompt i // k."""

    texts: list[str]
    batch: Batch
    k: int


def rollouts_from_tokens(tok: PreTrainedTokenizerBase, rows: list[list[int]], k: int, completions: list[list[int]]) -> Rollouts:
    """Rollouts from prompt rows and k token lists per prompt, each ending with a stop token or at the cap.

    The layout is the sampler's: right-padded with the pad id, mask 1 up to and including the stop token. Every
    completion holds at least one token (max_new_tokens >= 1), and a step at least one prompt.
    """
    ids, mask = right_pad(completions, tok.pad_token_id)
    batch = join([r for r in rows for _ in range(k)], ids, mask, tok.pad_token_id)
    return Rollouts(texts=completion_texts(tok, ids), batch=batch, k=k)
