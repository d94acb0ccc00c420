"""`s2d-bench run` stopped and killed mid-stage continues from the stage's last save to the files of an uninterrupted run:
a SIGUSR1 to a parallel run (forwarded to the worker building the stage) saves and stops it with one line and exit
status 130; a SIGKILL after the next periodic save loses only the steps since; the run finished by a third command has the
weights, metrics and labeled draws of one run never interrupted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY_OVERRIDES

ARGS = [sys.executable, "-m", "s2d_bench.cli", "run", *TINY_OVERRIDES, "arms={a: {stages: [teacher_rl]}}", "stages.teacher_rl.steps=8",
        "checkpoint.every_steps=3"]


def _stage(run: Path) -> Path:
    (folder,) = (run / "nodes").glob("teacher_rl-*")
    return folder


def _start(run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*ARGS, f"run_dir={run}", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _until(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)


def _steps_logged(run: Path) -> int:
    found = list((run / "nodes").glob("teacher_rl-*/metrics.jsonl"))
    return found[0].read_text().count("\n") if found else 0


def test_a_stage_stopped_then_killed_finishes_with_the_files_of_an_uninterrupted_run(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run([*ARGS, f"run_dir={whole}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for base in (whole / "nodes").glob("base-*"):  # the same base models (content-addressed): only the stage is redone
        shutil.copytree(base, cut / "nodes" / base.name)

    proc = _start(cut, "jobs=2")  # the stage runs in a scheduler worker: the parent forwards the request
    _until(lambda: _steps_logged(cut) >= 1, proc)
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "saved its state at step" in err.strip().splitlines()[-1], err[-3000:]
    (save,) = (_stage(cut) / "resume").iterdir()
    stopped_at = int(save.name.split("-")[1])
    assert 1 <= stopped_at < 8 and _steps_logged(cut) == stopped_at  # the rows of the steps it saved, no more

    resumed_at = stopped_at
    killed_after = (stopped_at // 3 + 1) * 3  # the continued run's next periodic save (every_steps=3)
    if killed_after < 8:  # (a stop that came late, past step 6, leaves no periodic save to kill after)
        proc = _start(cut)
        _until(lambda: (_stage(cut) / "resume" / f"step-{killed_after:08d}" / "complete").exists(), proc)
        time.sleep(0.3)  # a step or so past the save, mid-stage
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        resumed_at = killed_after

    last = subprocess.run([*ARGS, f"run_dir={cut}"], capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr[-3000:]
    assert f"continuing from its saved state at step {resumed_at}" in last.stderr
    a, b = _stage(whole), _stage(cut)
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()  # every step once, same numbers
    info = [json.loads((s / "stage.json").read_text()) for s in (a, b)]
    assert info[0]["labeled_ids"] == info[1]["labeled_ids"] and info[0]["labeled_draws"] == info[1]["labeled_draws"] == 32
    assert not (b / "resume").exists()  # the committed model leaves nothing to continue
