"""Train one node of a run and commit its model: a base model pretrained from its builder, or a stage on its parent.

The pipeline (pipeline.py) decides which nodes need training; this module does it. A base model is
pretrained by rank 0 alone; a stage runs on every rank through the run's backend, continues from its
last resumable save (resume.py) and records each step in `metrics.jsonl` (mirrored to TensorBoard).
The model is written as `model.partial/` and committed with its `stage.json` (rundir.py), so a kill
mid-stage leaves nothing that looks built.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from s2d_bench import distributed, resume
from s2d_bench.config import RunConfig
from s2d_bench.generation.protocol import stop_ids
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.rewards import PoolReward
from s2d_bench.models import MODELS
from s2d_bench.models.builders import save
from s2d_bench.models.pretrain import pretrain
from s2d_bench.plan import Node
from s2d_bench.reporting import reporting
from s2d_bench.reporting.curves import plot_metrics
from s2d_bench.rundir import RunDir
from s2d_bench.served.teacher import ServedTeacher
from s2d_bench.stages import STAGES, StageInputs

Log = Callable[[dict], None]


@dataclass
class Training:
    """What training a node takes from its run: the config, the run directory, the plan's nodes (parents and
    teachers are looked up there), the backend, the task and its splits, and the device base models train on."""

    cfg: RunConfig
    dir: RunDir
    nodes: dict[str, Node]
    backend: Any  # a backends.base.Backend
    task: Any  # a tasks' Task
    splits: Any  # the task's Splits
    device: str

    def train(self, node: Node) -> None:
        """Every rank trains a stage together; rank 0 alone pretrains a base model and writes."""
        main = distributed.is_main()
        if node.stage == "base" and not main:
            return distributed.barrier()
        out = self.dir.node_dir(node)
        partial = self.dir.clear(node) if main else None  # rank 0 alone clears the folder and saves the model
        start = time.perf_counter()
        prefix = node.stage if node.stage != "base" else f"pretrain_{node.role}"
        checkpoints = self.checkpoints(node)
        saved = checkpoints.latest() if main else None  # (a base model's pretraining keeps no saves)
        if saved is not None:  # a continued stage: the rows of the steps it does not redo stay
            resume.kept_rows(out / "metrics.jsonl", saved[0])
        with (open(out / "metrics.jsonl", "a" if saved else "w") if main else open(os.devnull, "w")) as metrics, \
                reporting(self.cfg.report_to if main else [], self.dir.tb_dir(node)) as mirror:
            def log(row: dict) -> None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                mirror(prefix, row, int(row.get("step", 0)))

            model, tok, report = self.base(node, log) if node.stage == "base" else self.stage(node, log, checkpoints)
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

    def base(self, node: Node, log: Log) -> tuple[Any, Any, dict]:
        """A base model built from its builder and pretrained on the task's examples (seed `base_seed`)."""
        model_cfg = getattr(self.cfg, node.role)
        model, tok = MODELS.get(model_cfg.builder)(seed=self.cfg.base_seed)
        model.to(self.device)
        pretrain(model, tok, self.task.pretrain_examples, model_cfg.pretrain, self.cfg.base_seed, log, desc=f"pretrain {node.role}")
        return model, tok, {"steps": model_cfg.pretrain.steps, "draws": []}

    def stage(self, node: Node, log: Log, checkpoints: resume.Checkpoints) -> tuple[Any, Any, dict]:
        """The node's stage on its parent's model (and its teacher: a model of the run, or a served one)."""
        model, tok, teacher = self.models(node)
        torch.manual_seed(node.seed)
        with GradingPool() as pool, resume.listening(interrupt=True):  # pool workers start only if the stage grades (RL stages)
            inputs = StageInputs(self.backend, model, teacher, tok, self.splits, PoolReward(self.task.grader, pool), node.settings,
                                 node.seed, log, str(self.dir.node_dir(node)), checkpoints, self.teacher_cache(node))
            try:
                report = STAGES.get(node.stage).run(inputs)
            finally:
                if isinstance(teacher, ServedTeacher):
                    teacher.close()
        return model, tok, {"steps": report.steps, "draws": report.labeled_draws}

    def models(self, node: Node) -> tuple[Any, Any, Any]:
        """What a stage node works with: its parent's model and tokenizer, loaded to be trained, and its teacher (None for
        RL): a model of the run loaded frozen (DeepSpeed partitions the two by their own settings), or the served one,
        asked in the run's prompt mode to stop where the student stops."""
        model, tok = self.backend.load(self.dir.model_ref(self.nodes[node.parent]), trained=True)
        if node.teacher is not None and self.nodes[node.teacher].served:  # on its own server; tokenizer probed in preflight
            teacher = ServedTeacher(self.cfg.teacher, tok, stop_ids(model, tok), self.cfg.prompt.thinking)
        elif node.teacher is not None:  # pair checked in preflight
            teacher = self.backend.load(self.dir.model_ref(self.nodes[node.teacher]), trained=False)[0]
        else:
            teacher = None
        return model, tok, teacher

    def teacher_cache(self, node: Node) -> Path | None:
        """Where a stage keeps a served teacher's rollouts for every node of the run directory that draws the same
        (served/teacher.py: content-addressed), when its config asks (`teacher_cache`)."""
        served = node.teacher is not None and self.nodes[node.teacher].served
        wanted = getattr(node.settings, "teacher_cache", None)
        return self.dir.root / "teacher-cache" if served and node.stage == "warmup" and wanted is not False else None

    def checkpoints(self, node: Node) -> resume.Checkpoints:
        """Where a stage node saves the state it continues from (resume.py)."""
        return resume.Checkpoints(self.dir.node_dir(node) / "resume", self.cfg.checkpoint, node.stage, distributed.is_main())
