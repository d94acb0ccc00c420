"""How a step's sequences are split: over ranks, into mini-batches (optimizer steps) and micro-batches (passes).

Every backend that runs the plain-PyTorch loops splits here, and only here: `shard` gives a rank its
share of a globally drawn list, `mini_batch_rows` cuts a rank's rollouts into GRPO's optimizer steps,
`micro_batches` into forward/backward passes (padded with weightless stand-ins so ZeRO-3 ranks make
equal numbers of module calls), and `token_shares` weights each pass so that the accumulated
gradient, averaged over ranks, is the single-process gradient of the step's token mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, TypeVar

if TYPE_CHECKING:
    from s2d_bench.backends.runtime import Runtime
    from s2d_bench.models.sequences import Batch

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's share of a globally drawn list: every world-th item, starting at rank."""
    return list(items[rank::world])


@dataclass(frozen=True)
class MicroBatch:
    """Rows `rows` of a rank's batch, or (weight 0) a stand-in that only keeps the ranks' module calls equal."""

    rows: slice
    weight: float = 1.0


def micro_batches(n: int, size: int, rt: Runtime) -> list[MicroBatch]:
    """A rank's n sequences in forward/backward passes of `size` (0: all at once).

    Under ZeRO-3 every forward is a collective, so every rank makes as many as the rank with the
    most: a rank with fewer repeats its first micro-batch with weight 0 (as `most` pads chunks).
    """
    size = size if size > 0 else max(n, 1)
    parts = [MicroBatch(slice(start, min(start + size, n))) for start in range(0, n, size)]
    return parts + [MicroBatch(slice(0, min(size, n)), 0.0)] * (rt.most(len(parts)) - len(parts))


def token_shares(batch: Batch, parts: list[MicroBatch], rt: Runtime) -> list[float]:
    """Each micro-batch's loss weight: its share of the whole step's completion tokens, over ranks.

    A micro-batch's token-mean loss times its share sums to the step's token mean over every rank's
    tokens, whatever the micro-batch size (the gradient DeepSpeed averages over ranks included).
    """
    local = float(batch.completion_mask.sum())
    weight = rt.token_weight(batch.completion_mask)  # this rank's share of the step's tokens, times world
    return [part.weight * weight * float(batch.completion_mask[part.rows].sum()) / local if local > 0 else 0.0 for part in parts]


def mini_batch_rows(n: int, count: int) -> list[slice]:
    """A rank's n sequences in `count` contiguous, near-equal parts (verl's ppo_mini_batch), one optimizer step each."""
    edges = [round(i * n / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]
