"""A stage longer than its Slurm job's time limit, on the real one-node test cluster: the job is signalled before the
limit by Slurm itself (sbatch --signal=USR1@N, no test shortcut), saves, requeues itself and continues; the stage's
weights are compared with one uninterrupted local run of the same config.

Slurm checks time limits every 30 s and signals when the time left is under N + 30 s, so with `slurm.job.time=2`
and `signal_seconds=60` the signal comes 30 to 60 s into each run of the job. The OPD stage here runs for longer
than that on the CPU, so at least one requeue happens; the table gives each run of the job (from its log), the
wall time through Slurm and locally, and whether the weights are the same bytes.

    python benchmarks/slurm_time_limit.py         # prints the table, writes results/slurm_time_limit.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

from conftest import TINY_OVERRIDES  # noqa: E402  - the tests' tiny budgets
from slurm_cluster import Cluster  # noqa: E402  - the tests' one-node cluster

CLI = [sys.executable, "-m", "s2d_bench.cli", "run"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="OPD steps (about 0.08 s each here)")
    parser.add_argument("--out", default=str(ROOT / "results" / "slurm_time_limit.json"))
    args = parser.parse_args(argv)
    config = [*TINY_OVERRIDES, "arms={a: {stages: [opd]}}", f"stages.opd.steps={args.steps}", "slurm.job.cpus_per_task=1",
              "slurm.job.mem=2G", "slurm.kinds.distill={time: '2'}", "slurm.signal_seconds=60", "checkpoint.every_minutes=0"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cluster = Cluster(folder / "cluster").start()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # with the cluster's SLURM_CONF
        try:
            start = time.perf_counter()
            remote = subprocess.run([*CLI, *config, "--executor", "slurm", "slurm.wait=true", f"run_dir={folder / 'slurm'}",
                                     f"store={folder / 's.sqlite'}"], capture_output=True, text=True, env=env, timeout=3600)
            slurm_s = time.perf_counter() - start
        finally:
            cluster.stop()
        assert remote.returncode == 0, remote.stderr[-3000:]
        start = time.perf_counter()
        local = subprocess.run([*CLI, *config, f"run_dir={folder / 'local'}", f"store={folder / 'l.sqlite'}"], capture_output=True,
                               text=True, env=env, timeout=3600)
        local_s = time.perf_counter() - start
        assert local.returncode == 0, local.stderr[-3000:]
        jobs = json.loads((folder / "slurm" / "slurm" / "jobs.json").read_text())["nodes"]
        (node,) = [n for n, r in jobs.items() if r["stage"] == "opd"]
        log = Path(jobs[node]["log"]).read_text(errors="replace")
        weights = [(folder / side / "nodes" / node / "model" / "model.safetensors").read_bytes() for side in ("slurm", "local")]
    runs = [{"continued_from": int(m.group(1))} for m in re.finditer(r"continuing from its saved state at step (\d+)", log)]
    stops = [int(m.group(1)) for m in re.finditer(r"saved its state at step (\d+) of", log)]
    result = {"opd_steps": args.steps, "job_time_limit_min": 2, "signal_seconds": 60, "requeues": log.count("requeueing job"),
              "saved_at_steps": stops, "continued_from_steps": [r["continued_from"] for r in runs], "slurm_wall_s": round(slurm_s, 1),
              "local_wall_s": round(local_s, 1), "same_weights": weights[0] == weights[1]}
    print(f"OPD of {args.steps} steps in jobs of a 2-minute limit, signalled 60 s (+ up to 30 s) before it")
    print(f"  runs of the job: {1 + result['requeues']}  saved at steps {stops}  continued from {result['continued_from_steps']}")
    print(f"  wall: {slurm_s:.1f} s through Slurm, {local_s:.1f} s locally uninterrupted;  same weights: {result['same_weights']}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
