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


def test_a_damaged_node_is_built_again_with_a_warning_never_loaded(tiny_overrides, capsys):
    """A zeroed middle of model.safetensors, a deleted stage.json, an empty one: each node is redone (it is
    deterministic, so its record comes back as it was), never loaded or reported with a 0/0 budget."""
    from s2d_bench.config import load_config
    from s2d_bench.pipeline import Runner

    cfg = load_config(None, [*tiny_overrides, "arms={bridge: {stages: [teacher_rl, warmup, opd]}}"])
    first = {(r["node"], r["task"]): r for r in Runner(cfg).run()}
    runner = Runner(cfg)
    by_stage = {n.stage: n for n in runner.nodes.values()}
    weights = runner.node_dir(by_stage["teacher_rl"]) / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    weights.write_bytes(bytes(data))
    (runner.node_dir(by_stage["warmup"]) / "stage.json").unlink()
    (runner.node_dir(by_stage["opd"]) / "stage.json").write_text("")
    capsys.readouterr()
    again = {(r["node"], r["task"]): r for r in Runner(cfg).run()}
    err = capsys.readouterr().err
    assert f"node {by_stage['teacher_rl'].id}: model files fail their checksums (model.safetensors)" in err
    assert f"node {by_stage['warmup'].id}: stage.json is missing" in err
    assert f"node {by_stage['opd'].id}: stage.json is unreadable" in err
    assert again.keys() == first.keys()
    for key, record in again.items():
        assert (record["per_problem"], record["labeled_draws"]) == (first[key]["per_problem"], first[key]["labeled_draws"]), key
    assert Runner(cfg).damage(by_stage["teacher_rl"]) is None
