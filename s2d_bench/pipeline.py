"""Run the arms of a config: build base models, run each stage once, evaluate after every stage.

Every model the workflow produces is a *node* (plan.py): a base model, or a stage applied to a
parent model (and, for distillation, a teacher node) with a given stage config and seed. A node's
id hashes exactly those inputs, so two arms that share a prefix (`bridge` and `full` both start
with teacher_rl -> warmup -> opd) share its nodes, and a rerun finds finished nodes on disk
(nodefiles.damage says whether one can be reused).

On disk, under `<run_dir>/nodes/<id>/`:
  model/              the trained model (HF directory); its presence means training finished
  stage.json          what the stage consumed and how long it took
  metrics.jsonl       per-step training metrics, rewritten if the stage is redone; curves.png plots them
  eval-<hash>.json    the record of one benchmark of `eval.benchmarks` under its protocol; completions-<hash>.jsonl
                      (every sample) and problems-<hash>.jsonl (prompts and gold answers) beside it
  diagnostics.json    C1 (teacher RL) or C2 (distillation stages), see diagnostics.py
Beside them, `configs/<hash>.yaml` keeps every config that used the run directory and
`arms/<suite>-<hash>-seed<seed>.json` each run's arm paths (both let `s2d-bench store rebuild`
remake the store); `config.json` is the latest config, `results.jsonl` its records. With
`report_to: [tensorboard]`, `tb/<node>` mirrors each node's metrics and evaluations and
`tb/arms/<arm>-seed<seed>` each arm's avg@k after each of its stages (reporting/).
A run killed mid-stage leaves no `model/` (it is written as `model.partial/` and renamed), so
only that stage is redone. Evaluation runs on every rank (each samples its share of the problems,
rank 0 grades and writes). `<run_dir>/results.jsonl` collects every record in the run directory,
and every record, arm path and diagnostic also goes to the results store (store.py), keyed so
that a rerun replaces rather than duplicates: a kill between a file and the store loses nothing.
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
from typing import Any

import torch
import transformers

from s2d_bench import diagnostics, distributed, nodefiles, preflight, scheduler
from s2d_bench.backends import BACKENDS
from s2d_bench.config import RunConfig, config_hash, from_dict, run_hash, to_dict
from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import EngineConfig, resolve_device
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.records import EvalRecord, read_record
from s2d_bench.harness.rewards import PoolReward
from s2d_bench.harness.suite import eval_key, evaluate_target
from s2d_bench.harness.targets import TASK, Target, benchmark_target, entries, task_target
from s2d_bench.models import MODELS
from s2d_bench.nodefiles import checksums, node_lock, write_atomic, write_json
from s2d_bench.reporting import REPORTERS, report_arms, report_evaluations, reporting
from s2d_bench.reporting.curves import plot_metrics
from s2d_bench.models.builders import load_pretrained, save
from s2d_bench.models.pretrain import pretrain
from s2d_bench.plan import Node, plan
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.store import Store
from s2d_bench.tasks import BENCHMARKS, TASKS
from s2d_bench.writable import check_file, check_folder

EVAL_SEED = 1234  # one sampling seed for every evaluation: common random numbers across models
C2_STAGES = ("warmup", "opd")  # distillation stages around which the teacher-student KL is measured


def build_in_parallel(runners: list["Runner"], jobs: int) -> None:
    """Build every node of these runs (seeds of one grid share a run directory) in `jobs` worker processes."""
    nodes: dict[str, Node] = {}
    cfgs: dict[str, dict[str, Any]] = {}
    for runner in runners:
        for node_id, node in runner.nodes.items():
            nodes.setdefault(node_id, node)
            cfgs.setdefault(node_id, to_dict(runner.cfg))
    scheduler.build_all(nodes, jobs, _build_node, cfgs, runners[0].cfg.threads)


def _build_node(cfg: dict[str, Any], node_id: str, threads: int) -> None:
    """A scheduler worker's job: build one node of the run `cfg` describes with `threads` torch threads (scheduler.py)."""
    runner = Runner(from_dict(RunConfig, cfg))
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    runner.build(runner.nodes[node_id])


class Runner:
    """Executes a plan in a run directory. Holds paths and the task, never model state."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = preflight.check_config(cfg)  # names, arms and what the backend cannot express fail now, not mid-run
        self.root = cfg.output_dir
        self.device = resolve_device(cfg.device)
        self.task = TASKS.get(cfg.task.name)(cfg.task)
        self.splits = self.task.splits()
        self.backend = BACKENDS.get(cfg.backend)(cfg)
        preflight.check_models(cfg)
        self.nodes = {n.id: n for n in plan(cfg)}
        self.targets = self._targets()
        self.jobs = self._jobs()
        self.store = Store(cfg.store) if distributed.is_main() else None  # rank 0 alone writes results
        if self.store is not None:
            check_folder(self.root, "run_dir")
            check_file(self.store.path, "store")
        for name in cfg.report_to:  # a reporter whose extra is missing fails now, not after the first evaluation
            REPORTERS.get(name)
        self.config_id = run_hash(cfg)
        self.started = time.time()  # orders configs: a suite's leaderboard shows the one run last

    def arm_paths(self) -> dict[str, list[str]]:
        """Each arm's stage nodes in order (plan order is execution order)."""
        return {arm: [n.id for n in self.nodes.values() if arm in n.arms] for arm in self.cfg.arms}

    def base(self, role: str) -> Node:
        return next(n for n in self.nodes.values() if n.stage == "base" and n.role == role)

    def arm_rows(self) -> dict[str, list[tuple[str, str]]]:
        """Each arm as the store keeps it: the base student, then the arm's stage nodes."""
        start = [(self.base("student").id, "base")]
        return {arm: start + [(i, self.nodes[i].stage) for i in ids] for arm, ids in self.arm_paths().items()}

    def node_dir(self, node: Node) -> Path:
        return self.root / "nodes" / node.id

    def model_ref(self, node: Node) -> str:
        model_cfg = getattr(self.cfg, node.role)
        if node.stage == "base" and model_cfg.path:
            return model_cfg.path
        return str(self.node_dir(node) / "model")

    def _jobs(self) -> int:
        """Parallel node builds: one process each, so not for DeepSpeed (its process group is the process's) or a launch."""
        if self.cfg.jobs > 1 and (self.cfg.backend == "deepspeed" or distributed.world() > 1):
            if distributed.is_main():
                print(f"jobs={self.cfg.jobs}: backend={self.cfg.backend} on {distributed.world()} rank(s) builds one node at a time; "
                      "its ranks share each stage instead", file=sys.stderr)
            return 1
        return self.cfg.jobs

    def _targets(self) -> list[Target]:
        """Each of `eval.benchmarks` with its problems and protocol, loaded once per run."""
        out = []
        for entry in entries(self.cfg.eval.benchmarks):
            if entry.name == TASK:
                out.append(task_target(entry, self.cfg.task.name, self.splits.test, self.task.grader, self.cfg.eval))
            else:
                out.append(benchmark_target(entry, BENCHMARKS.get(entry.name), self.cfg.eval, self.cfg.task.data_dir or None))
        return out

    def eval_hash(self, target: Target) -> str:
        """What makes two evaluations of one model the same: benchmark, protocol, data, engine, prompts, seed."""
        inputs = {"benchmark": target.benchmark, "eval": target.protocol(), "limit": target.limit, "data": target.data,
                  "engine": self.cfg.eval.engine, "seed": EVAL_SEED, "sampler": "per-prompt seeds"}
        if target.benchmark == TASK:
            inputs["task"] = to_dict(self.cfg.task)
        if self.cfg.prompt.thinking:
            inputs["prompt"] = to_dict(self.cfg.prompt)
        return config_hash(inputs)

    def result_path(self, node: Node, target: Target) -> Path:
        return self.node_dir(node) / f"eval-{self.eval_hash(target)}.json"

    def read_record(self, node: Node, target: Target) -> dict[str, Any] | None:
        """The node's record for a target, or None: missing, or unreadable (removed with a warning, so it is evaluated again)."""
        path = self.result_path(node, target)
        try:
            return read_record(path)
        except FileNotFoundError:
            return None
        except ValueError:
            print(f"warning: node {node.id}: {path.name} is not a readable evaluation record; evaluating {target.label} again", file=sys.stderr)
            path.unlink(missing_ok=True)
            return None

    # ------------------------------------------------------------------ running
    def run(self, prebuilt: bool = False) -> list[dict[str, Any]]:
        """Train what is missing, evaluate what is unevaluated; with several ranks, rank 0 writes.

        `prebuilt`: `prepare` ran and the nodes were built already (`build_in_parallel` over several runs);
        only store the records.
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
                self.build(node)
            if main:
                records.extend(self.finish(node))
            distributed.barrier()
        if main:
            self.write_results()
            seeded = {f"{arm}-seed{self.cfg.seed}": rows for arm, rows in self.arm_rows().items()}
            report_arms(self.cfg.report_to, self.root / "tb" / "arms", seeded, records)
        return records

    def prepare(self) -> None:
        """The run directory, its config, the preflight checks and the arms in the store, before any node."""
        torch.set_num_threads(self.cfg.threads)
        transformers.utils.logging.disable_progress_bar()  # per-load bars drown the stage bars
        main = distributed.is_main()
        report = self.preflight()  # every check before the first file: a refused config leaves nothing behind
        if main:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(self.root / "preflight.json", report)
            self.remember_config()
            self.store.put_arms(self.cfg.name, self.cfg.seed, self.arm_rows(), self.config_id, self.started)

    def remember_config(self) -> None:
        """config.json (the latest), configs/<hash>.yaml (every config the directory has seen) and this run's arms file."""
        import yaml

        for folder in ("configs", "arms"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        write_json(self.root / "config.json", to_dict(self.cfg))
        kept = self.root / "configs" / f"{self.config_id}.yaml"
        if not kept.exists():
            write_atomic(kept, yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        write_json(self.arms_file(self.cfg.seed), {"suite": self.cfg.name, "config": self.config_id, "seed": self.cfg.seed,
                                                  "written": self.started, "arms": self.arm_rows()})

    def arms_file(self, seed: int) -> Path:
        return self.root / "arms" / f"{self.cfg.name}-{self.config_id}-seed{seed}.json"

    def build(self, node: Node) -> None:
        """Train the node if it is not on disk, evaluate it on every benchmark, compute its diagnostics.

        Runs that share a run directory (seeds side by side, a second `run` of one config) take the
        node's lock first: the second waits, then finds the node built and reuses it.
        """
        main = distributed.is_main()
        with node_lock(self.root / "locks" / f"{node.id}.lock") if main else contextlib.nullcontext():
            if not distributed.agree(self.is_trained(node) if main else None):  # rank 0 checks the files, once
                self.train(node)
            self.evaluate(node)
            if main:
                self.diagnostics_of(node)

    def finish(self, node: Node) -> list[dict[str, Any]]:
        """Store the node's evaluation records (one per benchmark) and its diagnostics."""
        records = [self.read_record(node, t) for t in self.targets]
        for record in records:
            self.store.put_eval(eval_key(EvalRecord.from_dict(record)), self.cfg.name, record)
        self.diagnose(node)
        return records

    def preflight(self) -> dict[str, Any]:
        """The up-front checks and the memory estimate (preflight.py), with this backend's memory layout."""
        layout = {"precision": "fp32", "zero_stage": 0, "world": distributed.world(), "offload_optimizer": False,
                  "offload_params": False, "teacher_zero3": False}
        layout.update(self.backend.memory_layout())
        return preflight.run(self.cfg, list(self.nodes.values()), layout, self.targets)

    def diagnostics_of(self, node: Node) -> dict[str, Any] | None:
        """C1 after teacher RL, C2 around each distillation stage: computed once into diagnostics.json."""
        path = self.node_dir(node) / "diagnostics.json"
        if not path.exists():
            if node.stage == "teacher_rl":
                gain = diagnostics.reward_gain(self.node_dir(node) / "metrics.jsonl")
                result = {"kind": "c1", **(gain or {})}
            elif node.stage in C2_STAGES:
                (teacher, tok), (before, _), (after, _) = (self._load(i) for i in (node.teacher, node.parent, node.id))
                prompts = [p.prompt for p in self.splits.test]
                result = {"kind": "c2", **diagnostics.c2(teacher, before, after, tok, prompts, self.cfg.eval.max_new_tokens, EVAL_SEED,
                                                         self.cfg.prompt.thinking)}
            else:
                return None
            write_json(path, result)
        return json.loads(path.read_text())

    def diagnose(self, node: Node) -> None:
        """Store the node's diagnostics (computed first if missing)."""
        result = self.diagnostics_of(node)
        if result is not None:
            self.store.put_diagnostic(self.cfg.name, node.id, result["kind"], {**result, "stage": node.stage, "seed": self.cfg.seed})

    def is_trained(self, node: Node) -> bool:
        """The node's model is on disk and intact; a damaged node counts as unfinished (it is redone, with a warning)."""
        model_cfg = getattr(self.cfg, node.role)
        if node.stage == "base" and model_cfg.path:
            return True
        if not (self.node_dir(node) / "model").is_dir():
            return False
        problem = self.damage(node)
        if problem is not None:
            print(f"warning: node {node.id}: {problem}; building it again", file=sys.stderr)
        return problem is None

    def damage(self, node: Node) -> str | None:
        return nodefiles.damage(self.node_dir(node))

    def _load(self, node_id: str) -> tuple[Any, Any]:
        return load_pretrained(self.model_ref(self.nodes[node_id]), self.device)

    def _seed(self, node: Node) -> int:
        return int(node.id.rsplit("-", 1)[1][:8], 16)

    def train(self, node: Node) -> None:
        """Every rank trains a stage together; rank 0 alone pretrains a base model and writes."""
        main = distributed.is_main()
        if node.stage == "base" and not main:
            return distributed.barrier()
        out = self.node_dir(node)
        partial = out / "model.partial"
        if main:
            out.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(out / "model", ignore_errors=True)  # a damaged node's model and everything measured on it
            for stale in [out / "diagnostics.json", *out.glob("eval-*.json"), *out.glob("completions-*.jsonl"), *out.glob("problems-*.jsonl")]:
                stale.unlink(missing_ok=True)
            shutil.rmtree(self.tb_dir(node), ignore_errors=True)  # its curves are redrawn with the stage
        start = time.perf_counter()
        prefix = node.stage if node.stage != "base" else f"pretrain_{node.role}"
        with (open(out / "metrics.jsonl", "w") if main else open(os.devnull, "w")) as metrics, \
                reporting(self.cfg.report_to if main else [], self.tb_dir(node)) as mirror:
            def log(row: dict) -> None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                mirror(prefix, row, int(row.get("step", 0)))

            if node.stage == "base":
                model, tok, report = self._train_base(node, log)
            else:
                model, tok, report = self._train_stage(node, log)
        if main:
            plot_metrics(out / "metrics.jsonl", out / "curves.png", node.stage, f"{prefix}  ({node.id})")
        with self.backend.saving(model) if node.stage != "base" else contextlib.nullcontext():  # a stage: every rank enters
            if main:
                save(model, tok, partial)
        if main:
            write_json(out / "stage.json", {
                "node": node.id, "stage": node.stage, "steps": report["steps"], "seconds": time.perf_counter() - start,
                "labeled_draws": len(report["draws"]), "labeled_ids": sorted(set(report["draws"])), "files": checksums(partial),
            })
            os.replace(partial, out / "model")
        del model, tok
        gc.collect()  # a DeepSpeed engine and its optimizer states live until its model's reference cycle is collected
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        distributed.barrier()

    def _train_base(self, node: Node, log) -> tuple[Any, Any, dict]:
        model_cfg = getattr(self.cfg, node.role)
        model, tok = MODELS.get(model_cfg.builder)(seed=self.cfg.base_seed)
        model.to(self.device)
        pretrain(model, tok, self.task.pretrain_examples, model_cfg.pretrain, self.cfg.base_seed, log, desc=f"pretrain {node.role}")
        return model, tok, {"steps": model_cfg.pretrain.steps, "draws": []}

    def _train_stage(self, node: Node, log) -> tuple[Any, Any, dict]:
        stage = STAGES.get(node.stage)
        model, tok = self.backend.load(self.model_ref(self.nodes[node.parent]), trained=True)
        teacher = (self.backend.load(self.model_ref(self.nodes[node.teacher]), trained=False)[0]  # pair checked in preflight
                   if node.teacher is not None else None)
        stage_cfg = type(getattr(self.cfg.stages, node.stage))(**node.cfg)
        torch.manual_seed(self._seed(node))
        with GradingPool() as pool:  # workers start only if the stage grades (RL stages)
            inputs = StageInputs(self.backend, model, teacher, tok, self.splits, PoolReward(self.task.grader, pool), stage_cfg,
                                 self._seed(node), log, str(self.node_dir(node)))
            report = stage.run(inputs)
        return model, tok, {"steps": report.steps, "draws": report.labeled_draws}

    # ------------------------------------------------------------------ evaluation and records
    def evaluate(self, node: Node) -> None:
        """Evaluate a trained node on every benchmark it has no record for; every rank samples its share."""
        todo = [t for t in self.targets if not distributed.agree(self.read_record(node, t) is not None if distributed.is_main() else None)]
        if not todo:
            return
        ref = self.model_ref(node)
        engine_cfg = EngineConfig(device=self.device, prompts_per_batch=self.cfg.eval.prompts_per_batch,
                                  thinking=self.cfg.prompt.thinking)
        engine = ENGINES.get(self.cfg.eval.engine).load(ref, engine_cfg)
        desc = f"eval {node.stage}" + ("" if node.stage != "base" else f" {node.role}")
        written = []
        try:
            with GradingPool() as pool:
                for target in todo:
                    record = evaluate_target(engine, target, EVAL_SEED, self.node_dir(node), pool, self._record_fields(node),
                                             f"completions-{self.eval_hash(target)}.jsonl", desc)
                    if record is not None:
                        write_atomic(self.result_path(node, target), record.to_json())
                        written.append(record.to_dict())
        finally:
            engine.close()
        if written:
            report_evaluations(self.cfg.report_to, self.tb_dir(node), written, int(self.stage_info(node).get("steps", 0)))

    def tb_dir(self, node: Node) -> Path:
        return self.root / "tb" / node.id

    def _record_fields(self, node: Node) -> dict[str, Any]:
        """What a pipeline record says beyond the evaluation itself: the node, its lineage and budget."""
        draws, unique = self.labeled_consumed(node)
        model_id = {role: getattr(self.cfg, role).builder or getattr(self.cfg, role).path for role in ("teacher", "student")}
        return dict(
            model=model_id[node.role], engine=self.cfg.eval.engine, thinking=self.cfg.prompt.thinking, seed=self.cfg.seed,
            seed_scope=self.cfg.seed_scope,
            stage=node.stage, run=self.cfg.name, node=node.id, role=node.role, arms=node.arms, parent=node.parent,
            teacher_node=node.teacher, backend=self.cfg.backend, teacher_model=model_id["teacher"], student_model=model_id["student"],
            config_hash=self.config_id,
            node_config=node.cfg, labeled_draws=draws, labeled_unique=unique, labeled_per_stage=self.labeled_per_stage(node),
            train_seconds=self._train_seconds(node),
        )

    def ancestors(self, node: Node) -> list[Node]:
        """The node and every node it was built from (parents and teachers), each once."""
        seen: dict[str, Node] = {}
        stack = [node.id]
        while stack:
            current = self.nodes[stack.pop()]
            if current.id not in seen:
                seen[current.id] = current
                stack.extend(i for i in (current.parent, current.teacher) if i)
        return list(seen.values())

    def stage_info(self, node: Node) -> dict[str, Any]:
        """What a built node's stage consumed (base models built from a path have no stage: nothing)."""
        if node.stage == "base" and getattr(self.cfg, node.role).path:
            return {"labeled_draws": 0, "labeled_ids": [], "seconds": 0.0}
        return json.loads((self.node_dir(node) / "stage.json").read_text())

    def labeled_per_stage(self, node: Node) -> dict[str, int]:
        """Labeled draws behind this model, by stage (the budget column of the leaderboards)."""
        out: dict[str, int] = {}
        for n in self.ancestors(node):
            if n.stage != "base":
                out[n.stage] = out.get(n.stage, 0) + self.stage_info(n)["labeled_draws"]
        return out

    def labeled_consumed(self, node: Node) -> tuple[int, int]:
        """Labeled examples behind this model: draws (with repeats) and distinct problems."""
        infos = [self.stage_info(n) for n in self.ancestors(node)]
        return sum(i["labeled_draws"] for i in infos), len({pid for i in infos for pid in i["labeled_ids"]})

    def _train_seconds(self, node: Node) -> float:
        return self.stage_info(node)["seconds"]

    def write_results(self) -> None:
        """results.jsonl: the records of this config (every seed run in this directory) under its protocols, oldest first."""
        nodes: set[str] = set()
        for path in (self.root / "arms").glob(f"{self.cfg.name}-{self.config_id}-seed*.json"):
            with contextlib.suppress(OSError, ValueError):
                nodes.update(node for rows in json.loads(path.read_text())["arms"].values() for node, _ in rows)
        nodes.update(n.id for n in self.nodes.values())  # the base teacher is in no arm
        hashes = {self.eval_hash(t) for t in self.targets}
        records = []
        for node in sorted(nodes):
            for digest in sorted(hashes):
                path = self.root / "nodes" / node / f"eval-{digest}.json"
                if path.exists():
                    records.append(json.loads(path.read_text()))
        records.sort(key=lambda r: r["timestamp"])
        write_atomic(self.root / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
