"""`s2d-bench run` (the embedded default) end to end, with the warmup's teacher rollouts in their own process and without.

Runs the command in fresh run directories, `teacher_process` true and false alternately (so drift hits both), `--pairs`
times; times each from the command to its exit (wall, and the CPU time of its whole process tree), reads each node's
stage time from its stage.json, and checks that every run of one setting wrote the same records, model files and metrics
byte for byte (a run's numbers never depend on timing). It also says whether each pair wrote the same: the option moves
the numbers only as a thread count does, and the lone warmup trains at 2 threads without the process and at 1 with it,
which at the embedded default's shapes give other bits (scheduler.py). Goal (issue #33): the embedded default under
5 minutes on this 2-core machine with the venv installed.

`--settings default` times the embedded default alone (`teacher_process: true`), `--pairs` runs of it.

Usage: python benchmarks/run_time.py [--pairs 3] [--settings both|default] [--out benchmarks/results/run_time.json] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("s2d-bench")


def one_run(folder: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(folder / "log", "w") as log:
        subprocess.run([str(CLI), "run", f"run_dir={folder / 'runs'}", f"store={folder / 's.sqlite'}", *overrides],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stages = {p.parent.name: round(json.loads(p.read_text())["seconds"], 1) for p in sorted((folder / "runs" / "nodes").glob("*/stage.json"))}
    return {"wall_s": round(wall, 1), "cpu_s": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 1), "stage_s": stages}


def fingerprint(folder: Path) -> dict:
    """What must not move: every record's numbers, every model file, every metrics row."""
    runs = folder / "runs"
    records = [json.loads(line) for line in (runs / "results.jsonl").read_text().splitlines()]
    files = sorted(p for pattern in ("nodes/*/model/*", "nodes/*/metrics.jsonl") for p in runs.glob(pattern))
    # sorted: results.jsonl is in the order evaluations ended, which nodes that run side by side race for
    return {"records": sorted((r["node"], str(r.get("benchmark")), r["mean"], json.dumps(r["per_problem"], sort_keys=True)) for r in records),
            "files": {str(p.relative_to(runs)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}


def _differences(first: dict, other: dict) -> dict:
    """What a run wrote otherwise than the first run of its setting: the nodes whose records differ, the files."""
    mine, theirs = ({(r[0], r[1]): r[2:] for r in run["records"]} for run in (first, other))
    records = sorted({key[0] for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)})
    files = sorted(name for name in first["files"].keys() | other["files"].keys() if first["files"].get(name) != other["files"].get(name))
    return {"records": records, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--settings", choices=["both", "default"], default="both",
                        help="both: teacher_process true and false alternately; default: the embedded default's (true) alone")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "run_time.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = parser.parse_args()
    settings = {"teacher_process": "teacher_process=true", "in the trainer": "teacher_process=false"}
    if args.settings == "default":
        del settings["in the trainer"]
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    prints: dict[str, list[dict]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="s2d-run-time-") as tmp:
        for pair in range(args.pairs):
            for name, extra in settings.items():
                folder = Path(tmp) / f"{pair}-{extra}"
                folder.mkdir()
                runs[name].append(one_run(folder, [*args.overrides, extra]))
                prints[name].append(fingerprint(folder))
                print(f"pair {pair + 1}, {name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
                shutil.rmtree(folder / "runs" / "nodes", ignore_errors=True)  # models are large; the records stay in memory
    differing = {name: [_differences(rows[0], p) for p in rows[1:]] for name, rows in prints.items()}
    every_run = {name: not any(d["records"] or d["files"] for d in found) for name, found in differing.items()}
    pairs = [a == b for a, b in zip(*prints.values())] if len(prints) == 2 else []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "cores": os.cpu_count(), "overrides": args.overrides, "settings": args.settings,
              "same_records_models_metrics_every_run": every_run,
              "differences_from_the_first_run": differing, "pair_identical": pairs, "runs": runs,
              "median_wall_s": {name: statistics.median(r["wall_s"] for r in rows) for name, rows in runs.items()}}
    print(f"\n{'':<18}{'wall s (median)':>16}{'runs':>26}{'cpu s':>22}")
    for name, rows in runs.items():
        print(f"{name:<18}{report['median_wall_s'][name]:>16.1f}{str([r['wall_s'] for r in rows]):>26}{str([r['cpu_s'] for r in rows]):>22}")
    print(f"same records, models and metrics in every run of a setting: {every_run}; in each pair: {pairs}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
