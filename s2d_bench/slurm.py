"""executor: slurm. Every unfinished node of a plan is one Slurm job, queued behind its parent's and teacher's jobs.

The plan is a DAG of content-addressed nodes, so it maps one to one onto jobs with `afterok`
dependencies: independent branches (seeds, direct GRPO beside the bridge, a grid's drops) run side
by side on as many machines as the cluster gives, and a failure costs one job. Each node's job runs
`s2d-bench build-node` (what `Runner.build` does locally: train, evaluate, diagnose, into the shared
run directory); `--kill-on-invalid-dep=yes` cancels the descendants of a failed job instead of
leaving them pending forever. A last job, after every node's, stores the records: the store is one
SQLite file, and SQLite's locking is not to be trusted over the network filesystems clusters share,
so one writer, at the end, as `run_all` stores after a local parallel build.

A job of N tasks (`tasks_per_node` x `nodes`) is one torch.distributed group: its script derives
RANK, WORLD_SIZE and LOCAL_RANK from Slurm's task variables and the master address and port from
the job's first node and id, so the DeepSpeed backend spans the job's GPUs without a launcher.

Plain `sbatch` with a generated script, not submitit: a node's job is a command written into the
run directory (`slurm/<node>.sh`), which a user reads, reruns or resubmits by hand, where submitit
pickles a Python callable; submitit reads job states through `sacct`, which clusters without
accounting (and the test cluster) lack, where `squeue` and `scontrol` always answer; and nothing
beyond Slurm's own commands is needed on the compute nodes.

`<run_dir>/slurm/jobs.json` keeps every node's job id, log and script, so `status` and `cancel` work
from any machine that sees the run directory, and submitting again queues only what is neither
finished nor queued or running (a failed node and the descendants its failure cancelled).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from s2d_bench.config import to_dict
from s2d_bench.slurm_config import SlurmConfig, SlurmJob
from s2d_bench.errors import UserError
from s2d_bench.nodefiles import write_json

LIVE = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "RESIZING": "queued",
        "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running", "STOPPED": "running"}
# A task's output reaches the job's log through srun, which a requeue kills: the line saying why, written just before,
# was missing from the log once in a suite run (2026-12-05; srun had not forwarded it yet): a second gives srun time to.
FORWARD_SECONDS = 1.0
OPTIONS = {"partition": "--partition", "account": "--account", "qos": "--qos", "time": "--time", "nodes": "--nodes",
           "gpus_per_node": "--gpus-per-node", "tasks_per_node": "--ntasks-per-node", "cpus_per_task": "--cpus-per-task",
           "mem": "--mem", "constraint": "--constraint"}


def kind_of(stage: str) -> str:
    """Which `slurm.kinds` entry sizes a node's job: its base model, an RL stage, or a distillation stage."""
    from s2d_bench.stages import STAGES

    if stage == "base":
        return "base"
    return "distill" if STAGES.get(stage).needs_teacher else "rl"


def request(cfg: SlurmConfig, kind: str, stage: str | None = None) -> SlurmJob:
    """`slurm.job`, overlaid field by field with the kind's request, then the stage's (a field set to its default is unset)."""
    merged = to_dict(cfg.job)
    default = to_dict(SlurmJob())
    for layer in (cfg.kinds.get(kind), cfg.stages.get(stage) if stage else None):
        if layer is not None:
            merged.update({k: v for k, v in to_dict(layer).items() if v != default[k]})
    return SlurmJob(**merged)


def sbatch_args(job: SlurmJob) -> list[str]:
    args = [f"{OPTIONS[f.name]}={getattr(job, f.name)}" for f in fields(job) if f.name in OPTIONS and getattr(job, f.name)]
    return args + list(job.extra)


def script(command: list[str], options: list[str] = ()) -> str:
    """The job's script: its sbatch `options` as #SBATCH lines (so `sbatch` of the file alone asks for the same job), then
    every task of the job runs `command` as one rank of a torch.distributed group."""
    # SIGUSR1 (sbatch --signal, before the time limit) is ignored until Python listens for it (resume.listening): it would end
    # a process still starting up
    ranks = 'trap "" USR1; RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID exec "$@"'
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        "set -euo pipefail",
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # one port a job: jobs sharing a machine never collide",
        "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(ranks)} _ {shlex.join(command)}",
        "",
    ])


def _slurm(args: list[str]) -> str:
    """A Slurm command's output; a missing command or an unreachable controller is one line naming the fix."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError(f"executor=slurm: '{args[0]}' is not installed here; run from a machine with Slurm's commands, or use "
                        "executor=local") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"executor=slurm: '{args[0]}' did not answer in 60 s; is the controller (slurmctld) up? (scontrol ping)") from None
    if out.returncode != 0:
        reason = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise UserError(f"executor=slurm: {' '.join(args[:2])} failed: {reason[-1] if reason else f'exit {out.returncode}'}"
                        + ("; is the controller (slurmctld) up? (scontrol ping)" if "connect" in " ".join(reason).lower() else ""))
    return out.stdout


def states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (Slurm state, elapsed) for the jobs the controller still knows (squeue, then scontrol for ended ones)."""
    out: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return out
    listed = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %M"], capture_output=True, text=True, timeout=60)
    for line in listed.stdout.splitlines():
        job, state, elapsed = line.split()
        out[job] = (state, elapsed)
    for job in job_ids:
        if job not in out:
            shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=60).stdout
            fields_ = dict(item.split("=", 1) for item in shown.split() if "=" in item)
            if "JobState" in fields_:
                out[job] = (fields_["JobState"], fields_.get("RunTime", ""))
    return out


def requeue(why: str) -> bool:
    """In a Slurm job, after its stage saved and stopped (`why`): put the job back in the queue, under the same id (its
    dependents keep waiting on it), to continue from the save. False outside a job. Rank 0 asks; Slurm ends every task."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    if os.environ.get("SLURM_PROCID", "0") == "0":
        print(f"{why.split(';')[0]}; requeueing job {job}", file=sys.stderr, flush=True)
        time.sleep(FORWARD_SECONDS)
        _slurm(["scontrol", "requeue", job])
    return True


def _folder(run_dir: Path) -> Path:
    return run_dir / "slurm"


def read_jobs(run_dir: Path) -> dict[str, Any]:
    path = _folder(run_dir) / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def submit(runners: list, announce: Callable[[str], None] = print) -> dict[str, Any]:  # noqa: ANN001 - pipeline Runners
    """Queue every unfinished node of these runs (one config's seeds, sharing a run directory) and the collecting job;
    returns jobs.json's content. Nodes whose jobs are queued or running keep them; finished nodes are not queued."""
    first = runners[0]
    folder = _folder(first.dir.root)
    folder.mkdir(parents=True, exist_ok=True)
    kept = read_jobs(first.dir.root)
    known = states([r["job"] for r in kept.get("nodes", {}).values() if r.get("job")])
    nodes, runs = {}, {}
    for runner in runners:
        for node_id, node in runner.nodes.items():
            nodes.setdefault(node_id, (node, runner))
        runs[runner.cfg.seed] = to_dict(runner.cfg)
    config_path = folder / "runs.json"
    write_json(config_path, list(runs.values()))
    record: dict[str, Any] = {"nodes": {}, "collect": kept.get("collect")}
    live: dict[str, str] = {}  # node id -> its queued or running job
    for node_id, (node, runner) in nodes.items():
        old = kept.get("nodes", {}).get(node_id, {})
        if old.get("job") and known.get(old["job"], ("",))[0] in LIVE:
            record["nodes"][node_id] = old
            live[node_id] = old["job"]
            continue
        if _finished(runner, node):
            record["nodes"][node_id] = {"job": None, "stage": node.stage, "state": "done"}
            continue
        deps = [live[d] for d in (node.parent, node.teacher) if d and d in live]
        command = [sys.executable, "-m", "s2d_bench.cli", "build-node", str(config_path), str(runner.cfg.seed), node_id]
        job = _sbatch(folder, node_id, request(runner.cfg.slurm, kind_of(node.stage), node.stage), command, deps,
                      runner.cfg.slurm.signal_seconds)
        record["nodes"][node_id] = {"job": job, "stage": node.stage, "after": deps, "log": str(folder / "logs" / f"{node_id}-{job}.out"),
                                    "script": str(folder / f"{node_id}.sh"), "submitted": time.time()}
        live[node_id] = job
        announce(f"  {node_id:<28} job {job}" + (f" after {','.join(deps)}" if deps else ""))
    collect = kept.get("collect") or {}
    if live and not (collect.get("job") and known.get(collect["job"], ("",))[0] in LIVE and set(collect.get("after", [])) >= set(live.values())):
        command = [sys.executable, "-m", "s2d_bench.cli", "collect", str(config_path)]
        job = _sbatch(folder, "collect", request(first.cfg.slurm, "collect"), command, sorted(set(live.values())))
        record["collect"] = {"job": job, "after": sorted(set(live.values())), "log": str(folder / "logs" / f"collect-{job}.out")}
    write_json(folder / "jobs.json", record)
    return record


def run(runners: list, announce: Callable[[str], None]) -> list[list[dict[str, Any]]] | None:  # noqa: ANN001 - pipeline Runners
    """`run_all` under executor slurm: every check on the submitting machine, then the jobs; with `slurm.wait`, the records
    once the collecting job has ended (None otherwise)."""
    for runner in runners:
        runner.prepare()  # every check before the first job, on the machine that submits
    record = submit(runners, announce)
    if not runners[0].cfg.slurm.wait:
        return None
    wait(record)
    failed = [r["node"] for r in status(runners[0].dir.root) if r["state"] == "failed"]
    if failed:
        raise UserError(f"executor=slurm: {', '.join(failed)} failed (s2d-bench status {runners[0].dir.root}); run again to resubmit")
    return [runner.run(prebuilt=True) for runner in runners]


def _finished(runner, node) -> bool:  # noqa: ANN001 - a Runner and its Node
    """Trained, and evaluated on every benchmark: nothing left for a job (diagnostics are redone by the collecting run)."""
    return runner.dir.is_trained(node) and all(runner.dir.read_record(node, t) is not None for t in runner.targets)


def _sbatch(folder: Path, name: str, job: SlurmJob, command: list[str], after: list[str], signal_seconds: int = 0) -> str:
    """Submit `command` as job `name`: its log appended to across requeues, cancelled if a dependency fails, signalled
    `signal_seconds` before its time limit (0: not) to save and requeue itself (resume.py); the job id."""
    (folder / "logs").mkdir(exist_ok=True)
    path = folder / f"{name}.sh"
    options = [f"--job-name=s2d-{name}", f"--output={folder / 'logs' / f'{name}-%j.out'}", "--open-mode=append", "--kill-on-invalid-dep=yes",
               "--requeue", *([f"--signal=USR1@{signal_seconds}"] if signal_seconds else []), *sbatch_args(job)]
    path.write_text(script(command, options))
    after_ok = [f"--dependency=afterok:{':'.join(after)}"] if after else []
    return _slurm(["sbatch", "--parsable", *after_ok, str(path)]).strip().split(";")[0]


def wait(record: dict[str, Any], poll: float = 2.0) -> None:
    """Until the collecting job (or, without one, every node's job) has left the queue."""
    jobs = [record["collect"]["job"]] if record.get("collect") else [r["job"] for r in record["nodes"].values() if r.get("job")]
    while any(state in LIVE for state, _ in states(jobs).values()):
        time.sleep(poll)


def status(run_dir: Path) -> list[dict[str, Any]]:
    """One row per node of the last submission: done, queued, running, failed (with the last error line of its log)."""
    record = read_jobs(run_dir)
    if not record:
        raise UserError(f"{run_dir}: no Slurm jobs submitted from here (no slurm/jobs.json); run with executor=slurm first")
    entries = dict(record["nodes"])
    if record.get("collect"):
        entries["(collect)"] = {**record["collect"], "stage": "store"}
    known = states([r["job"] for r in entries.values() if r.get("job")])
    rows = []
    for node_id, r in entries.items():
        state, elapsed = known.get(r.get("job") or "", (r.get("state", "not submitted"), ""))
        if state in LIVE:
            shown = LIVE[state]
        elif state in ("COMPLETED", "done"):
            shown = "done"
        elif state == "not submitted":
            shown = state
        elif r.get("job") and not known.get(r["job"]) and (run_dir / "nodes" / node_id / "stage.json").exists():
            shown = "done"  # the controller forgot the job (MinJobAge); its node is built
        else:
            shown = "failed"
        row = {"node": node_id, "stage": r.get("stage", ""), "state": shown, "slurm": state, "job": r.get("job") or "-",
               "elapsed": elapsed, "log": r.get("log", "")}
        if shown == "failed":
            row["error"] = last_error(Path(r["log"])) if r.get("log") else ""
        rows.append(row)
    return rows


def last_error(log: Path) -> str:
    """The line of a failed job's log that says why: Slurm's own verdict (`*** JOB n ... CANCELLED` / `DUE TO TIME LIMIT`),
    else the last error line (a Python exception's), else the last line."""
    if not log.exists():
        return "(no log)"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    verdicts = [line for line in lines if "***" in line]
    errors = [line for line in lines if "Error" in line or "error:" in line.lower()]
    return (verdicts or errors or lines or ["(empty log)"])[-1]


def cancel(run_dir: Path) -> list[str]:
    """scancel the run's queued and running jobs; the ids cancelled."""
    record = read_jobs(run_dir)
    jobs = [r["job"] for r in [*record.get("nodes", {}).values(), record.get("collect") or {}] if r.get("job")]
    alive = [job for job, (state, _) in states(jobs).items() if state in LIVE]
    if alive:
        _slurm(["scancel", *alive])
    return alive


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'node':<28} {'stage':<11} {'state':<13} {'job':>7} {'elapsed':>10}  log"]
    for r in rows:
        lines.append(f"{r['node']:<28} {r['stage']:<11} {r['state']:<13} {r['job']:>7} {r['elapsed']:>10}  {r['log']}")
        if r.get("error"):
            lines.append(f"{'':<28} error: {r['error']}")
    return "\n".join(lines)
