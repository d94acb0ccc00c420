"""Whole stages, plain-PyTorch backend against TRL backend: sampling plus training, set-up included.

Same tiny models (the embedded default's teacher and student, pretrained a few steps so they
emit answers), same task prompts, batch sizes and completion lengths (configs/tiny.yaml's stage
settings), one torch thread, rewards through the grading pool on both sides. Each stage runs
STEPS steps on each backend, alternating torch and TRL within one process, ROUNDS times; the
stage's wall time (from the stage call to its return: trainer set-up, every rollout, every update;
TRL's stage 2a includes generating its teacher rollouts) is reported as the median over rounds,
with the median gap between consecutive steps beside it.

The torch side runs the embedded default's settings, so its distillation stages keep their frozen teacher in a process of
its own (`teacher_process: true`, on the second core); `--override teacher_process=false` measures it in the trainer.

Usage: python benchmarks/backend_speed.py [--steps 8] [--rounds 3] [--stages warmup opd] [--override KEY=VALUE ...] [--out FILE]
Prints a table and writes benchmarks/results/backend_speed.json (or --out). Goal: torch <= 0.5x TRL per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from s2d_bench.backends import BACKENDS  # noqa: E402
from s2d_bench.config import PretrainConfig, TaskConfig, load_config  # noqa: E402
from s2d_bench.harness.grading import GradingPool  # noqa: E402
from s2d_bench.harness.rewards import PoolReward  # noqa: E402
from s2d_bench.models.builders import tiny_qwen3_student, tiny_qwen3_teacher  # noqa: E402
from s2d_bench.models.pretrain import pretrain  # noqa: E402
from s2d_bench.stages import STAGES, StageInputs  # noqa: E402
from s2d_bench.tasks import TASKS  # noqa: E402

ROOT = Path(__file__).resolve().parent
STAGE_NAMES = ["teacher_rl", "warmup", "opd", "student_rl"]
WARMUP = 2


def models(task):
    teacher, tok = tiny_qwen3_teacher(seed=0)
    student, _ = tiny_qwen3_student(seed=0)
    for model in (teacher, student):
        pretrain(model, tok, task.pretrain_examples, PretrainConfig(steps=60, batch_size=64), 0, lambda row: None, desc="pretrain")
    return teacher, student, tok


def one_run(backend: str, stage: str, teacher, student, tok, splits, reward, cfg, run_cfg) -> dict:
    """Fresh copies of the models, one stage of cfg.steps steps; per-step gaps and total wall time."""
    import copy

    model = copy.deepcopy(teacher if stage == "teacher_rl" else student)
    stamps: list[float] = []
    x = StageInputs(BACKENDS.get(backend)(run_cfg), model, copy.deepcopy(teacher), tok, splits, reward, cfg, 0, lambda row: stamps.append(time.perf_counter()))
    start = time.perf_counter()
    STAGES.get(stage).run(x)
    total = time.perf_counter() - start
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][WARMUP - 1 :]
    first_step = stamps[0] - start  # includes set-up and (TRL 2a) the teacher rollouts
    return {"gaps": gaps, "total": total, "first": first_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stages", nargs="+", choices=STAGE_NAMES, default=STAGE_NAMES)
    parser.add_argument("--override", action="append", default=[], help="a config override (key=value) for both backends")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "backend_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config(None, args.override)
    task = TASKS.get("add3mix")(TaskConfig(n_labeled=256, n_unlabeled=2000, n_test=50))
    splits = task.splits()
    teacher, student, tok = models(task)
    report: dict = {"device": "cpu", "torch_threads": 1, "steps": args.steps, "rounds": args.rounds, "overrides": args.override,
                    "teacher_process": base.teacher_process, "date": time.strftime("%Y-%m-%d"), "stages": {}}
    with GradingPool() as pool:
        reward = PoolReward(task.grader, pool)
        for stage in args.stages:
            cfg = type(getattr(base.stages, stage))(**{**vars(getattr(base.stages, stage)), "steps": args.steps})
            runs: dict[str, list[dict]] = {"torch": [], "trl": []}
            for _ in range(args.rounds):
                for backend in ("torch", "trl"):  # alternate, so drift hits both
                    runs[backend].append(one_run(backend, stage, teacher, student, tok, splits, reward, cfg, base))
            row = {}
            for backend, results in runs.items():
                row[backend] = {"stage_wall_s": statistics.median(r["total"] for r in results),
                                "stage_walls_s": [r["total"] for r in results],
                                "median_step_gap_s": statistics.median(g for r in results for g in r["gaps"])}
            row["ratio_torch_over_trl"] = row["torch"]["stage_wall_s"] / row["trl"]["stage_wall_s"]
            report["stages"][stage] = row
            print(f"{stage}: torch {row['torch']['stage_wall_s']:.1f} s, trl {row['trl']['stage_wall_s']:.1f} s", flush=True)

    print(f"\nwhole stage of {args.steps} steps (sampling + training + set-up), median of {args.rounds} alternating rounds, 1 thread")
    print(f"{'stage':<12}{'torch s':>9}{'trl s':>9}{'ratio':>8}{'torch ms/step':>15}{'trl ms/step':>13}")
    for stage, row in report["stages"].items():
        t, r = row["torch"], row["trl"]
        print(f"{stage:<12}{t['stage_wall_s']:>9.2f}{r['stage_wall_s']:>9.2f}{row['ratio_torch_over_trl']:>8.2f}"
              f"{t['median_step_gap_s'] * 1e3:>15.0f}{r['median_step_gap_s'] * 1e3:>13.0f}")
    out = args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}  (ratio = torch / trl, whole stages; goal <= 0.5)")


if __name__ == "__main__":
    main()
