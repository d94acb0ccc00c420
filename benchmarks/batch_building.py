"""Building a training batch from token rows: today's padding (`sequences.left_pad` / `right_pad`: one tensor from
padded lists, the mask from the lengths) against the row-at-a-time fill it replaced (a small tensor and two slice writes
a row), on the embedded default's shapes, one torch thread:

- `join_texts` of a pretraining step's 128 examples (chat template, tokenizer, padding): the base models' data;
- `rollouts_from_tokens` of GRPO's 32 prompts x 8 samples of up to 16 tokens: every rollout call's batch.

Both sides must build the same tensors (checked before timing). Each figure is the median of `--calls` calls; the whole
comparison runs `--repeats` times, alternating sides, because this host's speed drifts.

Usage: python benchmarks/batch_building.py [--calls 200] [--repeats 3] [--out benchmarks/results/batch_building.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from s2d_bench.config import TaskConfig  # noqa: E402
from s2d_bench.generation.protocol import completion_texts, render  # noqa: E402
from s2d_bench.generation.rollouts import rollouts_from_tokens  # noqa: E402
from s2d_bench.models.builders import tiny_qwen3_teacher  # noqa: E402
from s2d_bench.models.sequences import Batch, encode_completions, join_texts, positions  # noqa: E402
from s2d_bench.tasks import TASKS  # noqa: E402

ROOT = Path(__file__).resolve().parent


def _rows_one_at_a_time(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fill the padding replaced (before 5a8f9d1), for comparison only."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            cols = slice(width - len(row), None) if left else slice(None, len(row))
            ids[i, cols] = torch.tensor(row)
            mask[i, cols] = 1
    return ids, mask


def _join_before(prompt_rows: list[list[int]], ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> Batch:
    p_ids, p_mask = _rows_one_at_a_time(prompt_rows, pad_id, left=True)
    attention = torch.cat([p_mask, mask], dim=1)
    input_ids = torch.cat([p_ids, ids], dim=1)
    return Batch(input_ids=input_ids, attention_mask=attention, position_ids=positions(attention), completion_ids=ids,
                 completion_mask=mask.float(), prompt_len=p_ids.shape[1])


def join_texts_before(tok, prompts: list[str], completions: list[str]) -> Batch:  # noqa: ANN001
    ids, mask = _rows_one_at_a_time(encode_completions(tok, completions), tok.pad_token_id, left=False)
    return _join_before(render(tok, prompts, False), ids, mask, tok.pad_token_id)


def rollouts_before(tok, rows: list[list[int]], k: int, completions: list[list[int]]) -> tuple[list[str], Batch]:  # noqa: ANN001
    ids, mask = _rows_one_at_a_time(completions, tok.pad_token_id, left=False)
    return completion_texts(tok, ids), _join_before([r for r in rows for _ in range(k)], ids, mask, tok.pad_token_id)


def _same(a: Batch, b: Batch) -> bool:
    return a.prompt_len == b.prompt_len and all(
        torch.equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
        for f in ("input_ids", "attention_mask", "position_ids", "completion_ids", "completion_mask"))


def _median_ms(call: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "batch_building.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = TASKS.get("add3mix")(TaskConfig())
    _, tok = tiny_qwen3_teacher(seed=0)
    prompts, completions = map(list, zip(*task.pretrain_examples(random.Random(0), 128)))
    rows = render(tok, prompts[:32], False)
    gen = random.Random(1)
    sampled = [[gen.randrange(4, len(tok)) for _ in range(gen.randint(1, 16))] for _ in range(32 * 8)]
    cases = {
        "join_texts, 128 pretraining examples": (lambda: join_texts(tok, prompts, completions),
                                                 lambda: join_texts_before(tok, prompts, completions)),
        "rollouts_from_tokens, 32 prompts x 8": (lambda: rollouts_from_tokens(tok, rows, 8, sampled),
                                                 lambda: rollouts_before(tok, rows, 8, sampled)),
    }
    now, before = cases["join_texts, 128 pretraining examples"]
    assert _same(now(), before()), "join_texts builds other tensors than the row-at-a-time fill"
    roll, (texts, batch) = rollouts_from_tokens(tok, rows, 8, sampled), rollouts_before(tok, rows, 8, sampled)
    assert roll.texts == texts and _same(roll.batch, batch), "rollouts_from_tokens builds other tensors"
    report = {"date": time.strftime("%Y-%m-%d"), "torch_threads": 1, "calls": args.calls, "repeats": args.repeats, "cases": {}}
    for name in cases:
        report["cases"][name] = {"now_ms": [], "row_at_a_time_ms": []}
    for _ in range(args.repeats):
        for name, (now, before) in cases.items():
            report["cases"][name]["now_ms"].append(_median_ms(now, args.calls))
            report["cases"][name]["row_at_a_time_ms"].append(_median_ms(before, args.calls))
    print(f"{'case':<40}{'now ms':>22}{'row at a time ms':>26}")
    for name, row in report["cases"].items():
        print(f"{name:<40}{', '.join(f'{x:.2f}' for x in row['now_ms']):>22}{', '.join(f'{x:.2f}' for x in row['row_at_a_time_ms']):>26}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
