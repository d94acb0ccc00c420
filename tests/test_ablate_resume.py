"""Killing `s2d-bench ablate --all` at any moment and rerunning it finishes the grid: no finished
stage is redone, no record is lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY_OVERRIDES

from s2d_bench.store import Store


def _finished(run_dir: Path) -> dict[str, str]:
    """node id -> its stage.json, for every node whose training finished."""
    return {p.parent.name: (p.parent / "stage.json").read_text() for p in run_dir.glob("nodes/*/model")}


def _run_until(cmd: list[str], env: dict, ready, timeout: float = 240.0) -> None:
    """Start the command and SIGKILL its whole process group the moment `ready()` holds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the grid finished before the kill: the test did not test anything"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_and_rerun_finishes_the_grid_with_nothing_redone_lost_or_duplicated(tmp_path, private_store):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2d_bench.cli", "ablate", "--all", "--seeds", "2", *TINY_OVERRIDES, f"run_dir={run_dir}"]
    env = {**os.environ, "S2D_STORE": str(private_store)}
    stage_models = lambda: [p for p in run_dir.glob("nodes/*/model") if not p.parent.name.startswith("base")]  # noqa: E731

    # 1: killed just after the first stage's model is saved (before or during its evaluation).
    _run_until(cmd, env, lambda: len(stage_models()) >= 1)
    first = _finished(run_dir)
    # 2: killed in the middle of a later stage's training (its metrics exist, its model does not).
    def mid_stage() -> bool:
        return len(stage_models()) >= 4 and any(
            (d / "metrics.jsonl").exists() and not (d / "model").exists() for d in run_dir.glob("nodes/*") if not d.name.startswith("base"))
    _run_until(cmd, env, mid_stage)
    second = _finished(run_dir)
    assert set(first) <= set(second) and len(second) > len(first)

    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = _finished(run_dir)
    for node, stage_json in second.items():
        assert final[node] == stage_json, f"{node} was trained again"
    assert len([n for n in final if not n.startswith("base")]) == 2 * 12  # the whole grid: 12 stages per seed

    store = Store(private_store)
    records = store.evals("tiny")
    assert len(records) == len(final)  # every node evaluated, each exactly once
    assert len({r["node"] for r in records}) == len(records)
    arm_nodes = {row["node"] for row in store.arms("tiny")}
    assert arm_nodes <= {r["node"] for r in records}
    assert {(row["seed"], row["arm"]) for row in store.arms("tiny")} == {(s, a) for s in (0, 1) for a in (
        "full", "no-teacher-rl", "no-warmup", "no-opd", "no-student-rl", "direct-grpo", "replay", "raw-bridge")}
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(final) and len({json.loads(line)["node"] for line in lines}) == len(lines)
