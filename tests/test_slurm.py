"""executor: slurm on a real one-node Slurm cluster (tests/slurm_cluster.py): a grid through Slurm writes what the local
executor writes, a node cancelled mid-stage fails with its descendants and a second submission resumes exactly those;
bad settings and an unreachable controller are one-line errors."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from slurm_cluster import Cluster

from s2d_bench import slurm
from s2d_bench.config import load_config
from s2d_bench.slurm_config import SlurmConfig, SlurmJob

CLI = [sys.executable, "-m", "s2d_bench.cli"]
# opd long enough that a cancel sent once its bar shows lands mid-stage (2 steps were done, evaluated and saved before it
# arrived, on a fast day)
GRID = ["ablate", "--drop", "warmup", *TINY_OVERRIDES, "stages.teacher_rl.steps=12", "stages.opd.steps=30", "slurm.job.cpus_per_task=1",
        "slurm.job.mem=2G"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield running
    running.stop()


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _queue_empty() -> bool:
    return not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()


def _wait(condition, timeout: float = 600, poll: float = 1.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting on the cluster"
        time.sleep(poll)


def _records(run: Path) -> dict[str, float]:
    return {(r["node"], r["task"]): r["mean"] for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def test_a_grid_through_slurm_matches_the_local_executor_and_a_cancelled_node_resumes(cluster, tmp_path, request):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    # the local executor's grid, for the comparison at the end, runs meanwhile (Slurm's jobs leave the CPUs idle at times)
    reference_log = tmp_path / "local.log"  # a file, not a pipe: its progress bars would fill a pipe and stall it
    with reference_log.open("w") as log:
        reference = subprocess.Popen([*CLI, *GRID, f"run_dir={local}", f"store={tmp_path / 'local.sqlite'}"], stdout=log, stderr=log)
    request.addfinalizer(reference.kill)  # not left running by a failure before its end
    args = [*GRID, "--executor", "slurm", f"run_dir={remote}", f"store={tmp_path / 'slurm.sqlite'}"]
    queued = _cli(*args)
    assert "queued on Slurm" in queued.stdout
    jobs = slurm.read_jobs(remote)["nodes"]
    (teacher_rl,) = [n for n, r in jobs.items() if r["stage"] == "teacher_rl"]
    script = Path(jobs[teacher_rl]["script"]).read_text()  # the request travels in the script, as #SBATCH lines
    assert "#SBATCH --signal=USR1@300\n" in script and "#SBATCH --requeue\n" in script and "#SBATCH --open-mode=append\n" in script
    # what Slurm sends 300 s before the time limit, sent now, mid-stage: the job saves, requeues itself under the same id
    # (its dependents keep waiting) and continues from the save; the weights compared below are an uninterrupted run's
    _wait(lambda: (remote / "nodes" / teacher_rl / "metrics.jsonl").exists()
          and (remote / "nodes" / teacher_rl / "metrics.jsonl").read_text().count("\n") >= 1, poll=0.05)
    subprocess.run(["scancel", "--signal=USR1", jobs[teacher_rl]["job"]], check=True)
    warmup = next(r["job"] for r in jobs.values() if r["stage"] == "warmup")
    opd = next(n for n, r in jobs.items() if r["stage"] == "opd" and warmup in r["after"])  # the full arm's: one node after it

    def stage_running() -> bool:  # the stage itself has started: its log shows the stage's progress bar
        log = Path(jobs[opd]["log"])
        return log.exists() and "opd" in log.read_text(errors="replace")

    _wait(stage_running, poll=0.05)
    subprocess.run(["scancel", jobs[opd]["job"]], check=True)  # mid-stage
    _wait(_queue_empty)
    rows = {r["node"]: r for r in slurm.status(remote)}
    failed = {n for n, r in rows.items() if r["state"] == "failed"} - {"(collect)"}
    behind = {jobs[opd]["job"]}  # opd's job and every job queued behind it, transitively
    for node, r in jobs.items():  # plan order: a node's dependencies come before it
        if set(r.get("after", [])) & behind:
            behind.add(r["job"])
    assert failed == {n for n, r in jobs.items() if r.get("job") in behind} and len(failed) == 2, rows  # opd and student_rl
    assert "CANCELLED" in rows[opd]["error"] and all(rows[n]["state"] == "done" for n in jobs if n not in failed), rows
    status = _cli("status", str(remote)).stdout
    assert "failed" in status and opd in status

    _cli(*args, "slurm.wait=true")  # the same command again: only what failed (and the collecting job) is queued
    again = slurm.read_jobs(remote)["nodes"]
    log = Path(jobs[teacher_rl]["log"]).read_text(errors="replace")  # one log across the job's runs (open-mode append)
    assert f"requeueing job {jobs[teacher_rl]['job']}" in log and "teacher_rl: continuing from its saved state at step" in log, log[-3000:]
    resubmitted = {n for n in jobs if again[n].get("job") not in (None, jobs[n].get("job"))}
    assert resubmitted == failed
    assert all(r["state"] == "done" for r in slurm.status(remote))
    assert reference.wait(timeout=900) == 0, reference_log.read_text()[-3000:]
    assert _records(remote) == _records(local)  # the same records: seeds come from node ids
    for node in again:
        for weights in (local / "nodes" / node / "model").glob("*.safetensors"):
            assert weights.read_bytes() == (remote / "nodes" / node / "model" / weights.name).read_bytes(), node


def test_a_job_request_layers_kinds_and_stages_over_the_default_and_bad_settings_are_refused():
    cfg = SlurmConfig(job=SlurmJob(partition="gpu", time="1:00:00", extra=["--exclusive"]),
                      kinds={"rl": SlurmJob(gpus_per_node=8, tasks_per_node=8)}, stages={"teacher_rl": SlurmJob(time="2-00:00:00")})
    assert slurm.sbatch_args(slurm.request(cfg, "rl", "teacher_rl")) == [
        "--partition=gpu", "--time=2-00:00:00", "--gpus-per-node=8", "--ntasks-per-node=8", "--exclusive"]
    assert slurm.sbatch_args(slurm.request(cfg, "distill", "opd")) == ["--partition=gpu", "--time=1:00:00", "--exclusive"]
    assert [slurm.kind_of(s) for s in ("base", "teacher_rl", "warmup", "opd", "student_rl")] == ["base", "rl", "distill", "distill", "rl"]
    with pytest.raises(Exception, match="unknown key.*partitions"):
        load_config(None, ["slurm.job.partitions=gpu"])
    with pytest.raises(Exception, match="slurm.kinds.gpu"):
        load_config(None, ["slurm.kinds={gpu: {nodes: 1}}"])
    with pytest.raises(Exception, match="executor must be local or slurm"):
        load_config(None, ["executor=k8s"])


def test_an_unreachable_controller_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    """sbatch against a controller that does not answer: a UserError (printed as one line by every command) naming it."""
    from s2d_bench.errors import UserError

    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=none\nSlurmctldHost=localhost\nSlurmctldPort=1\nAuthType=auth/munge\n"
                    "NodeName=localhost CPUs=1 State=UNKNOWN\nPartitionName=debug Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(UserError) as error:
        slurm._sbatch(tmp_path, "node", SlurmJob(), ["true"], [])
    message = str(error.value)
    assert "\n" not in message and message.startswith("executor=slurm: sbatch") and "scontrol ping" in message, message


def test_a_two_task_job_trains_a_deepspeed_stage_as_one_group_of_two_ranks(cluster, tmp_path):
    """Slurm launches the ranks, no launcher inside the job: the job's script gives each task its RANK, WORLD_SIZE,
    LOCAL_RANK and the master address, and the two gloo ranks train the stage together (rank 0 writes one metrics row
    a step)."""
    import os

    run = tmp_path / "run"
    launch = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # a world an earlier test in this worker described
    env = {**{k: v for k, v in os.environ.items() if k not in launch}, "DS_ACCELERATOR": "cpu"}  # exported into the jobs, as sbatch does
    args = [*CLI, "run", "--executor", "slurm", *TINY_OVERRIDES, "backend=deepspeed", "arms={direct-grpo: {stages: [student_rl]}}",
            "slurm.job.cpus_per_task=1", "slurm.job.mem=2G", "slurm.kinds.rl={tasks_per_node: 2}", "slurm.wait=true", f"run_dir={run}",
            f"store={tmp_path / 's.sqlite'}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = slurm.read_jobs(run)["nodes"]
    (stage,) = [n for n, r in jobs.items() if r["stage"] == "student_rl"]
    log = Path(jobs[stage]["log"]).read_text(errors="replace")
    assert f"{stage} built, rank 0 of 2" in log and f"{stage} built, rank 1 of 2" in log, log[-3000:]
    assert (run / "nodes" / stage / "metrics.jsonl").read_text().count("\n") == 2  # two steps, rank 0 alone writes
    assert all(r["state"] == "done" for r in slurm.status(run))
