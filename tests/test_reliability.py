"""Probes a demanding user tried, kept as tests so none of them comes back (issue: numbers that
survive load, races and damage). Grading under load is in test_grading.py."""

import json
import os
import subprocess
import sys

STAGES = ("teacher_rl", "warmup", "opd", "student_rl", "pretrain teacher", "pretrain student")


def test_two_runs_sharing_a_run_directory_both_finish_and_train_each_node_once(tiny_overrides, tmp_path):
    """Seeds side by side (and a second run of one config) share a run directory: a per-node lock makes
    the later process wait for a node the other is training, then reuse it; no rename race."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [[sys.executable, "-m", "s2d_bench.cli", "run", *tiny_overrides, f"store={tmp_path / f's{i}.sqlite'}", "seed=0"]
            for i in range(2)] + [[sys.executable, "-m", "s2d_bench.cli", "run", *tiny_overrides, f"store={tmp_path / 's2.sqlite'}", "seed=1"]]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in cmds]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    run = tmp_path / "run"
    assert not list(run.glob("nodes/*/model.partial"))
    for stage in ("pretrain teacher", "pretrain student"):  # the base models are shared by all three
        assert sum(f"{stage}:" in err for _, err in outputs) == 1, stage
    assert sum("teacher_rl:" in err for _, err in outputs[:2]) == 1  # seed 0's stages: one of its two runs trained them
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    keys = [(r["node"], r["task"]) for r in records]
    assert len(keys) == len(set(keys)) == 7 + 5  # seed 1 shares the two base models
