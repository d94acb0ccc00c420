"""Run the arms of a config: build each node once (train it, evaluate it on every benchmark), then store its records.

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
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import transformers

from s2d_bench import diagnostics, distributed, phasemem, preflight, resume, scheduler, slurm
from s2d_bench.backends import BACKENDS
from s2d_bench.config import RunConfig, from_dict, to_dict
from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import EngineConfig, resolve_device, resolve_dtype
from s2d_bench.generation.protocol import stop_ids
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.records import EvalRecord
from s2d_bench.harness.rewards import PoolReward
from s2d_bench.harness.suite import evaluate_target
from s2d_bench.harness.targets import run_targets
from s2d_bench.identity import EVAL_SEED, eval_key, run_hash
from s2d_bench.models import MODELS
from s2d_bench.models.builders import load_pretrained, save
from s2d_bench.models.pretrain import pretrain
from s2d_bench.nodefiles import node_lock, write_atomic, write_json
from s2d_bench.plan import Node, arm_paths, arm_rows, base_node, plan
from s2d_bench.reporting import REPORTERS, report_arms, report_evaluations, reporting
from s2d_bench.reporting.curves import plot_metrics
from s2d_bench.rundir import RunDir
from s2d_bench.served.engine import ServedEngine
from s2d_bench.served.teacher import ServedTeacher
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.store import Store
from s2d_bench.tasks import TASKS
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
                self.train(node)
            self.evaluate(node)
            if main:
                self.diagnostics_of(node)
                phasemem.write(meter, self.dir.node_dir(node) / "memory.json")  # each phase's measured peak (phasemem.py)

    def finish(self, node: Node) -> list[dict[str, Any]]:
        """Store the node's evaluation records (one per benchmark) and its diagnostics."""
        records = [self.dir.read_record(node, t) for t in self.targets]
        for record in records:
            self.store.put_eval(eval_key(EvalRecord.from_dict(record)), self.cfg.name, record)
        result = self.diagnostics_of(node)
        if result is not None:
            self.store.put_diagnostic(self.cfg.name, node.id, result["kind"], {**result, "stage": node.stage, "seed": self.cfg.seed})
        return records

    def diagnostics_of(self, node: Node) -> dict[str, Any] | None:
        """C1 after teacher RL, C2 around each distillation stage (diagnostics.of_node), computed once: models in the
        evaluation's dtype, sampled in the evaluation's batches."""
        batching = self._eval_engine_config()
        dtype = resolve_dtype(batching.dtype, self.device)
        return diagnostics.of_node(node, self.dir.node_dir(node), lambda i: self.load(i, dtype), [p.prompt for p in self.splits.test],
                                   self.cfg.eval.max_new_tokens, EVAL_SEED, self.cfg.prompt.thinking, self.cfg.diagnostics, batching)

    def _eval_engine_config(self) -> EngineConfig:
        """How evaluation samples (and C2, which samples in the same batches and dtype)."""
        return EngineConfig(device=self.device, prompts_per_batch=self.cfg.eval.prompts_per_batch,
                            max_batch_tokens=self.cfg.eval.max_batch_tokens, thinking=self.cfg.prompt.thinking)

    def load(self, node_id: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
        """A built node's model and tokenizer, on this run's device (a served teacher: its client and the student's tokenizer)."""
        if self.nodes[node_id].served:
            served = self.served_teacher()
            return served, served.tok
        return load_pretrained(self.dir.model_ref(self.nodes[node_id]), self.device, dtype)

    # ------------------------------------------------------------------ training
    def train(self, node: Node) -> None:
        """Every rank trains a stage together; rank 0 alone pretrains a base model and writes."""
        main = distributed.is_main()
        if node.stage == "base" and not main:
            return distributed.barrier()
        out = self.dir.node_dir(node)
        partial = self.dir.clear(node) if main else out / "model.partial"
        start = time.perf_counter()
        prefix = node.stage if node.stage != "base" else f"pretrain_{node.role}"
        checkpoints = self.checkpoints(node)
        saved = checkpoints.latest() if main and node.stage != "base" else None
        if saved is not None:  # a continued stage: the rows of the steps it does not redo stay
            resume.kept_rows(out / "metrics.jsonl", saved[0])
        with (open(out / "metrics.jsonl", "a" if saved else "w") if main else open(os.devnull, "w")) as metrics, \
                reporting(self.cfg.report_to if main else [], self.dir.tb_dir(node)) as mirror:
            def log(row: dict) -> None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                mirror(prefix, row, int(row.get("step", 0)))

            model, tok, report = self.train_base(node, log) if node.stage == "base" else self._train_stage(node, log, checkpoints)
        if main:
            plot_metrics(out / "metrics.jsonl", out / "curves.png", node.stage, f"{prefix}  ({node.id})")
        with self.backend.saving(model) if node.stage != "base" else contextlib.nullcontext():  # a stage: every rank enters
            if main:
                save(model, tok, partial)
        if main:
            self.dir.commit(node, report["steps"], time.perf_counter() - start, report["draws"])
            shutil.rmtree(checkpoints.folder, ignore_errors=True)  # the model is committed: nothing to continue
        del model, tok
        gc.collect()  # a DeepSpeed engine and its optimizer states live until its model's reference cycle is collected
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        distributed.barrier()
        if node.stage != "base":
            resume.stop_if_requested(f"{node.stage} finished and its model is saved")  # a stop asked for in its last step

    def teacher_cache(self, node: Node) -> Path | None:
        """Where a stage keeps a served teacher's rollouts for every node of the run directory that draws the same
        (served/teacher.py: content-addressed), when its config asks (`teacher_cache`)."""
        served = node.teacher is not None and self.nodes[node.teacher].served
        wanted = getattr(node.settings, "teacher_cache", None)
        return self.dir.root / "teacher-cache" if served and node.stage == "warmup" and wanted is not False else None

    def served_teacher(self) -> ServedTeacher:
        """The served teacher with the student's tokenizer, for evaluating it and for C2 (no student model at hand)."""
        return ServedTeacher.beside(self.cfg.teacher, self.dir.model_ref(self.base("student")), self.cfg.prompt.thinking)

    def checkpoints(self, node: Node) -> resume.Checkpoints:
        """Where a stage node saves the state it continues from (resume.py)."""
        return resume.Checkpoints(self.dir.node_dir(node) / "resume", self.cfg.checkpoint, distributed.is_main(), node.stage)

    def train_base(self, node: Node, log) -> tuple[Any, Any, dict]:  # noqa: ANN001 - a metrics logger
        """A base model built from its builder and pretrained on the task's examples (seed `base_seed`)."""
        model_cfg = getattr(self.cfg, node.role)
        model, tok = MODELS.get(model_cfg.builder)(seed=self.cfg.base_seed)
        model.to(self.device)
        pretrain(model, tok, self.task.pretrain_examples, model_cfg.pretrain, self.cfg.base_seed, log, desc=f"pretrain {node.role}")
        return model, tok, {"steps": model_cfg.pretrain.steps, "draws": []}

    def _train_stage(self, node: Node, log, checkpoints: resume.Checkpoints) -> tuple[Any, Any, dict]:  # noqa: ANN001 - a metrics logger
        stage = STAGES.get(node.stage)
        model, tok = self.backend.load(self.dir.model_ref(self.nodes[node.parent]), trained=True)
        if node.teacher is not None and self.nodes[node.teacher].served:  # on its own server; tokenizer probed in preflight
            teacher = ServedTeacher(self.cfg.teacher, tok, stop_ids(model, tok), self.cfg.prompt.thinking)
        elif node.teacher is not None:  # pair checked in preflight
            teacher = self.backend.load(self.dir.model_ref(self.nodes[node.teacher]), trained=False)[0]
        else:
            teacher = None
        torch.manual_seed(node.seed)
        with GradingPool() as pool, resume.listening(interrupt=True):  # pool workers start only if the stage grades (RL stages)
            inputs = StageInputs(self.backend, model, teacher, tok, self.splits, PoolReward(self.task.grader, pool), node.settings,
                                 node.seed, log, str(self.dir.node_dir(node)), checkpoints, self.teacher_cache(node))
            try:
                report = stage.run(inputs)
            finally:
                if isinstance(teacher, ServedTeacher):
                    teacher.close()
        return model, tok, {"steps": report.steps, "draws": report.labeled_draws}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, node: Node) -> None:
        """Evaluate a trained node on every benchmark it has no record for; every rank samples its share."""
        todo = [t for t in self.targets if not distributed.agree(self.dir.read_record(node, t) is not None if distributed.is_main() else None)]
        if not todo:
            return
        if node.served:  # sampled on its server, under the run's prompt protocol
            engine = ServedEngine(self.served_teacher())
        else:
            engine = ENGINES.get(self.cfg.eval.engine).load(self.dir.model_ref(node), self._eval_engine_config())
        desc = f"eval {node.stage}" + ("" if node.stage != "base" else f" {node.role}")
        fields = self.dir.record_fields(self.nodes, node)
        written = []
        try:
            with GradingPool() as pool:
                for target in todo:
                    with phasemem.phase(f"eval {target.label}"):
                        record = evaluate_target(engine, target, EVAL_SEED, self.dir.node_dir(node), pool, fields,
                                                 f"completions-{self.dir.eval_name(target)}.jsonl", desc)
                    if record is not None:
                        write_atomic(self.dir.result_path(node, target), record.to_json())
                        written.append(record.to_dict())
        finally:
            engine.close()
        if written:
            report_evaluations(self.cfg.report_to, self.dir.tb_dir(node), written, int(self.dir.stage_info(node).get("steps", 0)))
