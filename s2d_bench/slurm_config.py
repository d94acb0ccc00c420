"""What executor slurm asks of the cluster: one job's sbatch request, and the requests per kind of job and per stage.

A part of the run config (`slurm:`) in a module of its own: slurm.py turns it into sbatch arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2d_bench.typed import help_field as _help, require


@dataclass
class SlurmJob:
    """One job's request (sbatch options); unset fields are left to the cluster's defaults."""

    partition: str = _help("sbatch --partition", "")
    account: str = _help("sbatch --account", "")
    qos: str = _help("sbatch --qos", "")
    time: str = _help("sbatch --time: a limit as Slurm reads it (minutes, HH:MM:SS or D-HH:MM:SS)", "")
    nodes: int = _help("sbatch --nodes", 0)
    gpus_per_node: int = _help("sbatch --gpus-per-node", 0)
    tasks_per_node: int = _help("sbatch --ntasks-per-node: ranks a node (one per GPU for DeepSpeed); the job's tasks form one "
                                "torch.distributed group", 0)
    cpus_per_task: int = _help("sbatch --cpus-per-task", 0)
    mem: str = _help("sbatch --mem: memory a node, e.g. 64G", "")
    constraint: str = _help("sbatch --constraint", "")
    extra: list[str] = _help("further sbatch arguments, each as written on the command line (e.g. --exclusive)", factory=list)

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task"):
            require(getattr(self, name) >= 0, f"slurm: {name} must be >= 0 (0: the cluster's default)")


JOB_KINDS = ("base", "rl", "distill", "collect")  # what slurm.kinds sizes: base models, RL stages, distillation stages, the store


@dataclass
class SlurmConfig:
    job: SlurmJob = _help("every job's request", factory=SlurmJob)
    kinds: dict[str, SlurmJob] = _help(
        "a request per kind of job, over `job` field by field: base (pretraining or evaluating a base model), rl (teacher_rl, "
        "student_rl), distill (warmup, opd, replay), collect (the last job: records into the store)", factory=dict)
    stages: dict[str, SlurmJob] = _help("a request per stage name, over its kind's", factory=dict)
    wait: bool = _help("run/ablate waits until the collecting job ends (otherwise it returns once the jobs are queued)", False)
    signal_seconds: int = _help("Slurm signals a job this many seconds before its time limit (sbatch --signal=USR1@N); the stage saves "
                                "its state and the job requeues itself, to continue where it stopped (0: no signal; Slurm's "
                                "resolution is about a minute, so leave a stage's step and its save inside the margin)", 300)

    def __post_init__(self) -> None:
        require(self.signal_seconds >= 0, "slurm.signal_seconds must be >= 0 (0: no signal before the time limit)")
        for kind in self.kinds:
            require(kind in JOB_KINDS, f"slurm.kinds.{kind}: use {', '.join(JOB_KINDS)}")
