"""Grading verdicts on an idle machine and beside CPU-bound neighbours: they must be identical.

It imports torch and transformers' model classes at the top, as a user's script or lm-eval's CLI
does: the slow start that once made deadlines expire under load, when the pool's workers were
spawned by multiprocessing and each re-ran this script (they are fresh interpreters now, which
import the graders only: grading_pool.py). It grades the
same completions (right answers, respaced ones, other problems' answers, random integers:
benchmarks/eval_throughput.py's set) idle, then beside `--burners` CPU-bound processes, and
prints and writes (`--out`) the timeouts, the score and the verdicts that differ.

    python benchmarks/grading_load.py --data ../shared/data            # 8,000 items, 2 burners
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402,F401 - the imports a user's main module carries (once carried into every worker)
from transformers import Qwen3ForCausalLM  # noqa: E402,F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import grading_items  # noqa: E402

from s2d_bench.harness.grading import GradingPool, grade  # noqa: E402

ROOT = Path(__file__).resolve().parent


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _graded(completions: list[str], golds: list[str], workers: int, timeout: float) -> tuple[list[bool], int, float]:
    start = time.perf_counter()
    with GradingPool(workers=workers, timeout=timeout) as pool:
        verdicts = grade(completions, golds, "math_verify", None, pool)
    return [v.correct for v in verdicts], sum(v.timed_out for v in verdicts), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data"))
    parser.add_argument("--items", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound neighbour processes during the loaded run")
    parser.add_argument("--timeout", type=float, default=5.0, help="the pool's per-item deadline (seconds of worker CPU time)")
    parser.add_argument("--out", default=None, help="JSON file for the figures (default: print only)")
    args = parser.parse_args()

    completions, golds = grading_items(args.data, args.items)
    idle, idle_timeouts, idle_s = _graded(completions, golds, args.workers, args.timeout)
    burners = [mp.get_context("spawn").Process(target=_burn, args=(3600.0,), daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    try:
        busy, busy_timeouts, busy_s = _graded(completions, golds, args.workers, args.timeout)
    finally:
        for b in burners:
            b.kill()
    result = {
        "items": args.items, "workers": args.workers, "burners": args.burners, "timeout_s": args.timeout,
        "idle": {"seconds": round(idle_s, 1), "timeouts": idle_timeouts, "score": sum(idle) / len(idle)},
        "loaded": {"seconds": round(busy_s, 1), "timeouts": busy_timeouts, "score": sum(busy) / len(busy)},
        "verdicts_differ": sum(a != b for a, b in zip(idle, busy)),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
