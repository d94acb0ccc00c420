"""A grid on a served teacher: what the teacher cache saves, and what serving costs against a resident teacher.

Saves the tiny teacher (pretrained briefly on the task), serves it with `s2d-bench serve` on 127.0.0.1, and runs a
grid of warmup arms (`--lrs` learning rates) over `--seeds` seeds with `teacher.server`, then the same grid with the
teacher resident (`teacher.path`). Prints and writes (`--out`) each warmup node's training seconds, how many cache files
the served grid wrote and how many of its warmups found every step in the cache, and each grid's wall time.

    python benchmarks/served_teacher.py                  # 4 learning rates x 2 seeds, 8 steps of 16 prompts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "served"))

from served_server import serving  # noqa: E402

from s2d_bench.config import PretrainConfig, TaskConfig, load_config  # noqa: E402
from s2d_bench.models.builders import save, tiny_qwen3_teacher  # noqa: E402
from s2d_bench.models.pretrain import pretrain  # noqa: E402
from s2d_bench.pipeline import Runner, run_all  # noqa: E402
from s2d_bench.tasks.arithmetic import AdditionTask  # noqa: E402

TASK = {"n_test": 20, "n_labeled": 16, "n_unlabeled": 256}


def _grid(root: Path, teacher: dict, lrs: list[float], seeds: int, steps: int, batch: int, k: int) -> tuple[list[Runner], float]:
    arms = {f"w{i}": {"stages": ["warmup"], "overrides": {"warmup.lr": lr}} for i, lr in enumerate(lrs)}
    raw = [f"run_dir={root}", f"store={root / 'store.sqlite'}", "device=cpu", "jobs=1", "eval.samples=2",
           "diagnostics.c2_prompts=4", "diagnostics.c2_samples=1", "student.pretrain.steps=30", "student.pretrain.batch_size=16",
           *[f"task.{key}={value}" for key, value in TASK.items()],
           f"stages.warmup.steps={steps}", f"stages.warmup.batch_size={batch}", "stages.warmup.estimator=topk", f"stages.warmup.top_k={k}",
           f"arms={json.dumps(arms)}", f"teacher={json.dumps(teacher)}"]
    runners = [Runner(load_config(None, [*raw, f"seed={seed}"])) for seed in range(seeds)]
    start = time.perf_counter()
    run_all(runners)
    return runners, time.perf_counter() - start


def _warmups(runners: list[Runner]) -> list[dict]:
    rows = []
    for runner in runners:
        for node in runner.nodes.values():
            if node.stage == "warmup":
                info = runner.dir.stage_info(node)
                rows.append({"seed": runner.cfg.seed, "arm": node.arms[0], "node": node.id, "draw_seed": node.seed,
                             "train_seconds": round(info["seconds"], 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", default="1e-3,5e-4,2e-3,3e-4")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "served_teacher.json"))
    args = ap.parse_args()
    lrs = [float(x) for x in args.lrs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, tok = tiny_qwen3_teacher(seed=0)
        pretrain(model, tok, AdditionTask(TaskConfig(**TASK)).pretrain_examples, PretrainConfig(steps=60, batch_size=16, lr=3e-3), 0,
                 lambda row: None)
        save(model, tok, tmp / "teacher")
        with serving(tmp / "teacher", name="teacher", max_logprobs=args.top_k) as (url, _):
            served, served_wall = _grid(tmp / "served", {"server": url, "served_model": "teacher"}, lrs, args.seeds, args.steps,
                                        args.batch, args.top_k)
        files = len(list((tmp / "served" / "teacher-cache").glob("*.pt")))
        local, local_wall = _grid(tmp / "local", {"path": str(tmp / "teacher")}, lrs, args.seeds, args.steps, args.batch, args.top_k)
        served_rows, local_rows = _warmups(served), _warmups(local)
    first = {}
    for row in served_rows:  # the first warmup of a draw seed drew from the server; the others read its files
        row["from_cache"] = row["draw_seed"] in first
        first.setdefault(row["draw_seed"], row["node"])
    report = {"lrs": lrs, "seeds": args.seeds, "steps": args.steps, "batch": args.batch, "top_k": args.top_k,
              "cache_files": files, "served_wall_seconds": round(served_wall, 1), "local_wall_seconds": round(local_wall, 1),
              "served_warmups": served_rows, "local_warmups": local_rows}
    print(f"{'grid':<7} {'seed':>4} {'arm':<4} {'warmup s':>9} {'from cache':>10}")
    for row in served_rows:
        print(f"{'served':<7} {row['seed']:>4} {row['arm']:<4} {row['train_seconds']:>9.2f} {str(row['from_cache']):>10}")
    for row in local_rows:
        print(f"{'local':<7} {row['seed']:>4} {row['arm']:<4} {row['train_seconds']:>9.2f} {'-':>10}")
    drawn = [r["train_seconds"] for r in served_rows if not r["from_cache"]]
    cached = [r["train_seconds"] for r in served_rows if r["from_cache"]]
    print(f"cache files {files} (steps x seeds = {args.steps * args.seeds}); warmups drawing from the server {len(drawn)}, "
          f"reading the cache {len(cached)}; mean warmup seconds: drawing {sum(drawn) / max(len(drawn), 1):.2f}, from the cache "
          f"{sum(cached) / max(len(cached), 1):.2f}, local teacher {sum(r['train_seconds'] for r in local_rows) / len(local_rows):.2f}; "
          f"grid wall: served {served_wall:.0f} s, local {local_wall:.0f} s")
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
