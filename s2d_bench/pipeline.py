"""Run the arms of a config: build each node once (train it, evaluate it on every benchmark), then store its records.

This module decides what to build and in what order; training.py trains one node, evaluation.py evaluates one.

Every model the workflow produces is a *node* (plan.py): a base model, or a stage applied to a
parent model (and, for distillation, a teacher node). A node's id hashes what makes it that model
(identity.py), so arms that share a prefix share its nodes, and a rerun finds finished nodes in the
run directory (rundir.py: the layout, the records, whether a node is built) and reuses them.
`run_all` runs one or several runs (the seeds of a grid): one node at a time, or `jobs` at a time
in worker processes (scheduler.py). Evaluation runs on every rank (each samples its share of the
problems, rank 0 grades and writes). Every record, arm path and diagnostic also goes to the results
store (store.py), keyed so that a rerun replaces rather than duplicates: a kill between a file and
the store loses nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable

import torch
import transformers

from s2d_bench import distributed, phasemem, preflight, resume, scheduler, slurm
from s2d_bench.backends import BACKENDS
from s2d_bench.config import RunConfig, from_dict, to_dict
from s2d_bench.evaluation import Evaluation
from s2d_bench.generation.engine import resolve_device
from s2d_bench.harness.targets import run_targets
from s2d_bench.identity import put_record, run_hash
from s2d_bench.nodefiles import node_lock, write_json
from s2d_bench.plan import Node, arm_paths, arm_rows, base_node, plan
from s2d_bench.reporting import REPORTERS, report_arms
from s2d_bench.rundir import RunDir
from s2d_bench.store import Store
from s2d_bench.tasks import TASKS
from s2d_bench.training import Training
from s2d_bench.writable import check_file, check_folder

def run_all(runners: list["Runner"], announce: Callable[[str], None] = lambda line: None) -> list[list[dict[str, Any]]] | None:
    """Build every node of these runs (one config's seeds, sharing a run directory) and store their records; each run's
    records, in order. With `jobs` > 1 every seed's nodes go into one schedule, `jobs` at a time; with executor slurm
    every node is a Slurm job (slurm.py), and None comes back unless `slurm.wait` waits for them."""
    if runners[0].cfg.executor == "slurm":
        return slurm.run(runners, announce)
    jobs = runners[0].jobs
    if jobs > 1:
        announce(f"seeds {', '.join(str(r.cfg.seed) for r in runners)} jobs={jobs}")
        for runner in runners:
            runner.prepare()
        build_in_parallel(runners, jobs)
    out = []
    for runner in runners:
        if jobs == 1:
            announce(f"seed={runner.cfg.seed}")
        out.append(runner.run(prebuilt=jobs > 1))
    return out


def build_in_parallel(runners: list["Runner"], jobs: int) -> None:
    """Build every node of these runs (seeds of one grid share a run directory) in `jobs` worker processes."""
    nodes: dict[str, Node] = {}
    cfgs: dict[str, dict[str, Any]] = {}
    for runner in runners:
        for node_id, node in runner.nodes.items():
            nodes.setdefault(node_id, node)
            cfgs.setdefault(node_id, to_dict(runner.cfg))
    scheduler.build_all(nodes, jobs, build_node, cfgs, runners[0].cfg.threads)


def build_node(cfg: dict[str, Any], node_id: str, threads: int) -> None:
    """A scheduler worker's job (scheduler.py), or a Slurm job's (slurm.py): build one node of the run `cfg` describes with
    `threads` torch threads."""
    runner = Runner(from_dict(RunConfig, cfg))
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    with resume.listening(interrupt=False):  # a stop asked of the run (SIGUSR1) while this node is evaluated ends nothing
        runner.build(runner.nodes[node_id])


class Runner:
    """One run (a config and its seed): plans its nodes, trains and evaluates them, stores the records. Holds no model state."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = preflight.check_config(cfg)  # names, arms and what the backend cannot express fail now, not mid-run
        self.device = resolve_device(cfg.device)
        self.task = TASKS.get(cfg.task.name)(cfg.task)
        self.splits = self.task.splits()
        self.backend = BACKENDS.get(cfg.backend)(cfg)
        preflight.check_models(cfg)
        self.nodes = {n.id: n for n in plan(cfg)}
        self.targets = run_targets(cfg, self.task.grader, self.splits.test)
        self.jobs = self._jobs()
        self.store = Store(cfg.store) if distributed.is_main() else None  # rank 0 alone writes results
        if self.store is not None:
            check_folder(cfg.output_dir, "run_dir")
            check_file(self.store.path, "store")
        for name in cfg.report_to:  # a reporter whose extra is missing fails now, not after the first evaluation
            REPORTERS.get(name)
        self.dir = RunDir(cfg.output_dir, cfg, run_hash(cfg), time.time())
        self.training = Training(self.cfg, self.dir, self.nodes, self.backend, self.task, self.splits, self.device)
        self.evaluation = Evaluation(self.cfg, self.dir, self.nodes, self.targets, self.splits, self.device)

    def add(self, node: Node) -> None:
        """A node beyond the plan (benchmarks/cross_swap.py: a stage trained from another grid's inputs) that `build` can build."""
        self.nodes[node.id] = node

    def arm_paths(self) -> dict[str, list[str]]:
        """Each arm's stage nodes in order (plan order is execution order)."""
        return arm_paths(self.nodes, self.cfg.arms)

    def base(self, role: str) -> Node:
        return base_node(self.nodes, role)

    def arm_rows(self) -> dict[str, list[tuple[str, str]]]:
        """Each arm as the store keeps it: the base student, then the arm's stage nodes."""
        return arm_rows(self.nodes, self.cfg.arms)

    def _jobs(self) -> int:
        """Parallel node builds: one process each, so not for DeepSpeed (its process group is the process's) or a launch."""
        if self.cfg.jobs > 1 and (self.cfg.backend == "deepspeed" or distributed.world() > 1):
            if distributed.is_main():
                print(f"jobs={self.cfg.jobs}: backend={self.cfg.backend} on {distributed.world()} rank(s) builds one node at a time; "
                      "its ranks share each stage instead", file=sys.stderr)
            return 1
        return self.cfg.jobs

    # ------------------------------------------------------------------ running
    def run(self, prebuilt: bool = False) -> list[dict[str, Any]]:
        """Train what is missing, evaluate what is unevaluated; with several ranks, rank 0 writes.

        `prebuilt`: `prepare` ran and the nodes were built already (`run_all` over several runs); only store the records.
        """
        sequential = self.jobs == 1 and not prebuilt
        if not prebuilt:
            self.prepare()
            if self.jobs > 1:
                build_in_parallel([self], self.jobs)
        main = distributed.is_main()
        records = []
        for node in self.nodes.values():
            if sequential:
                with resume.listening(interrupt=False):  # SIGUSR1 between stages: stop after this node
                    self.build(node)
                resume.stop_if_requested("the nodes built so far are kept")
            if main:
                records.extend(self.finish(node))
            distributed.barrier()
        if main:
            self.dir.write_results(list(self.nodes), self.targets)
            seeded = {f"{arm}-seed{self.cfg.seed}": rows for arm, rows in self.arm_rows().items()}
            report_arms(self.cfg.report_to, self.dir.root / "tb" / "arms", seeded, records)
        return records

    def prepare(self) -> None:
        """The run directory, its config, the preflight checks and the arms in the store, before any node."""
        torch.set_num_threads(self.cfg.threads)
        transformers.utils.logging.disable_progress_bar()  # per-load bars drown the stage bars
        report = self.preflight()  # every check before the first file: a refused config leaves nothing behind
        if distributed.is_main():
            self.dir.root.mkdir(parents=True, exist_ok=True)
            write_json(self.dir.root / "preflight.json", report)
            rows = self.arm_rows()
            self.dir.remember_config(rows)
            self.store.put_arms(self.cfg.name, self.cfg.seed, rows, self.dir.config_id, self.dir.started)

    def preflight(self) -> dict[str, Any]:
        """The up-front checks and the memory estimate (preflight.py), with this backend's memory layout."""
        return preflight.run(self.cfg, list(self.nodes.values()), self.backend.memory_layout(), self.targets)

    def build(self, node: Node) -> None:
        """Train the node if it is not on disk, evaluate it on every benchmark, compute its diagnostics.

        Runs that share a run directory (seeds side by side, a second `run` of one config) take the
        node's lock first: the second waits, then finds the node built and reuses it.
        """
        main = distributed.is_main()
        with node_lock(self.dir.lock(node)) if main else contextlib.nullcontext(), phasemem.measuring(self.device) as meter:
            if not distributed.agree(self.dir.is_trained(node) if main else None):  # rank 0 checks the files, once
                self.training.train(node)
            self.evaluation.evaluate(node)
            if main:
                self.evaluation.diagnostics_of(node)
                phasemem.write(meter, self.dir.node_dir(node) / "memory.json")  # each phase's measured peak (phasemem.py)

    def finish(self, node: Node) -> list[dict[str, Any]]:
        """Store the node's evaluation records (one per benchmark) and its diagnostics."""
        records = [self.dir.read_record(node, t) for t in self.targets]
        for target, record in zip(self.targets, records):
            put_record(self.store, self.cfg.name, record, self.dir.eval_name(target))  # keyed by the file's evaluation id
        result = self.evaluation.diagnostics_of(node)
        if result is not None:
            self.store.put_diagnostic(self.cfg.name, node.id, result["kind"], {**result, "stage": node.stage, "seed": self.cfg.seed})
        return records
