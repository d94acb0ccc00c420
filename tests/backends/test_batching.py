"""How a step is split over ranks, optimizer steps and passes, and how each pass is weighted (backends/batching.py)."""

import torch

from s2d_bench.backends.batching import MicroBatch, micro_batches, mini_batch_rows, shard, token_shares
from s2d_bench.backends.runtime import LocalRuntime
from s2d_bench.models.sequences import Batch


class _Ranks(LocalRuntime):
    """A rank whose peers need `peers` micro-batches (what `most` would answer under a launch), holding `weight`
    times an average rank's share of the step's tokens (what `token_weight` would answer)."""

    def __init__(self, peers: int, weight: float = 1.0) -> None:
        self.peers, self.weight = peers, weight

    def most(self, n: int) -> int:
        return max(n, self.peers)

    def token_weight(self, mask: torch.Tensor) -> float:
        return self.weight


def _batch(lengths: list[int]) -> Batch:
    width = max(lengths)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.bool)
    ids = torch.ones((len(lengths), 2 + width), dtype=torch.long)
    return Batch(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1]).expand_as(ids),
                 completion_ids=ids[:, 2:], completion_mask=mask, prompt_len=2)


def test_a_rank_with_fewer_sequences_pads_with_weightless_micro_batches():
    assert micro_batches(5, 2, LocalRuntime()) == [MicroBatch(slice(0, 2)), MicroBatch(slice(2, 4)), MicroBatch(slice(4, 5))]
    assert micro_batches(5, 0, LocalRuntime()) == [MicroBatch(slice(0, 5))]
    padded = micro_batches(3, 2, _Ranks(4))  # as many forwards as the busiest rank (ZeRO-3 gathers are collectives)
    assert [p.weight for p in padded] == [1.0, 1.0, 0.0, 0.0] and padded[2].rows == slice(0, 2)
    assert micro_batches(1, 4, _Ranks(2)) == [MicroBatch(slice(0, 1)), MicroBatch(slice(0, 1), 0.0)]


def test_each_pass_weighs_its_share_of_the_step_tokens_and_a_stand_in_weighs_nothing():
    batch = _batch([1, 3, 2, 4])  # 10 tokens
    parts = micro_batches(4, 2, _Ranks(3))  # rows 0-1 (4 tokens), rows 2-3 (6 tokens), one stand-in
    assert token_shares(batch, parts, LocalRuntime()) == [0.4, 0.6, 0.0]
    shares = token_shares(batch, parts, _Ranks(3, weight=1.5))  # a rank holding 1.5 times the average share of tokens
    torch.testing.assert_close(torch.tensor(shares), torch.tensor([0.6, 0.9, 0.0]))
    empty = _batch([1, 1])
    empty.completion_mask[:] = False
    assert token_shares(empty, micro_batches(2, 1, LocalRuntime()), LocalRuntime()) == [0.0, 0.0]  # no token: no weight, no NaN
    single = _batch([1, 1])
    single.completion_mask[1] = False  # one token in the whole step: its pass carries all of it
    assert token_shares(single, micro_batches(2, 1, LocalRuntime()), LocalRuntime()) == [1.0, 0.0]


def test_mini_batches_are_contiguous_near_equal_and_cover_every_row_once():
    assert mini_batch_rows(10, 1) == [slice(0, 10)]
    assert mini_batch_rows(10, 2) == [slice(0, 5), slice(5, 10)]
    assert mini_batch_rows(10, 3) == [slice(0, 3), slice(3, 7), slice(7, 10)]
    assert mini_batch_rows(8, 4) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]


def test_ranks_split_a_drawn_list_by_stride_and_together_hold_all_of_it():
    items = list(range(7))
    assert shard(items, 0, 1) == items
    assert [shard(items, r, 3) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
