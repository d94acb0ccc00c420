"""Whole on-policy stages at two threads, the trainer sampling alone against sharing each step with a sampling process.

`sampling_process: true` gives a GRPO or OPD stage that has two threads or more (a node the scheduler runs alone, like
`make run`'s OPD and final student RL) a second process that samples the last half of each step's prompts with the
policy's current weights (backends/sampling_process.py). This measures what that buys: the embedded default's tiny
models (pretrained a few steps, as in backend_speed.py), its stage settings with STEPS steps, two torch threads,
on and off alternately in one process (so drift hits both), ROUNDS times; the stage's wall time from the stage call to
its return (the process's start included), median over rounds. Each pair's logged numbers must be equal (checked).

Usage: python benchmarks/sampling_share.py [--steps 60] [--rounds 3] [--stages opd student_rl] [--out FILE]
Prints a table and writes benchmarks/results/sampling_share.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402
from backend_speed import models, one_run  # noqa: E402

from s2d_bench.config import TaskConfig, load_config  # noqa: E402
from s2d_bench.harness.grading import GradingPool  # noqa: E402
from s2d_bench.harness.rewards import PoolReward  # noqa: E402
from s2d_bench.tasks import TASKS  # noqa: E402

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", nargs="+", choices=["teacher_rl", "opd", "student_rl"], default=["opd", "student_rl"])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "sampling_share.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = TASKS.get("add3mix")(TaskConfig(n_labeled=256, n_unlabeled=2000, n_test=50))
    splits = task.splits()
    teacher, student, tok = models(task)
    report: dict = {"device": "cpu", "torch_threads": args.threads, "cpu_count": os.cpu_count(), "steps": args.steps,
                    "rounds": args.rounds, "date": time.strftime("%Y-%m-%d"), "stages": {}}
    with GradingPool() as pool:
        reward = PoolReward(task.grader, pool)
        for stage in args.stages:
            walls: dict[str, list[float]] = {"alone": [], "shared": []}
            for _ in range(args.rounds):
                logged = []
                for name, flag in (("shared", "true"), ("alone", "false")):
                    base = load_config(None, [f"sampling_process={flag}"])
                    cfg = type(getattr(base.stages, stage))(**{**vars(getattr(base.stages, stage)), "steps": args.steps})
                    rows: list[dict] = []
                    run = one_run("torch", stage, teacher, student, tok, splits, reward, cfg, base, rows)
                    walls[name].append(run["total"])
                    logged.append(rows)
                if logged[0] != logged[1]:
                    raise SystemExit(f"{stage}: the shared stage logged other numbers than the trainer alone")
            row = {name: {"stage_wall_s": statistics.median(w), "stage_walls_s": w} for name, w in walls.items()}
            row["ratio_shared_over_alone"] = row["shared"]["stage_wall_s"] / row["alone"]["stage_wall_s"]
            report["stages"][stage] = row
    print(f"\n{args.steps} steps a stage, {args.threads} threads, median of {args.rounds} alternating rounds (equal numbers checked)")
    print(f"{'stage':<12}{'alone s':>9}{'shared s':>10}{'ratio':>8}")
    for stage, row in report["stages"].items():
        print(f"{stage:<12}{row['alone']['stage_wall_s']:>9.2f}{row['shared']['stage_wall_s']:>10.2f}{row['ratio_shared_over_alone']:>8.2f}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
