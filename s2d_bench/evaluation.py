"""Evaluate one built node of a run on every benchmark, and compute its diagnostics.

Every rank samples its share of the problems; rank 0 grades and writes one record per benchmark
(`eval-<hash>.json`, rundir.py) with the completions beside it. A node that already has a benchmark's
record is not evaluated on it again. A served teacher is sampled on its server under the run's prompt
protocol. Diagnostics (C1 after teacher RL, C2 around distillation) sample in evaluation's batches and
dtype, so they fit where evaluation fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from s2d_bench import diagnostics, distributed, phasemem
from s2d_bench.config import RunConfig
from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import EngineConfig, resolve_dtype
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.suite import evaluate_target
from s2d_bench.harness.targets import Target
from s2d_bench.identity import EVAL_SEED
from s2d_bench.models.builders import load_pretrained
from s2d_bench.nodefiles import write_atomic
from s2d_bench.plan import Node, base_node
from s2d_bench.reporting import report_evaluations
from s2d_bench.rundir import RunDir
from s2d_bench.served.engine import ServedEngine
from s2d_bench.served.teacher import ServedTeacher


@dataclass
class Evaluation:
    """What evaluating a node takes from its run: the config, the run directory, the plan's nodes, the benchmarks
    (targets), the task's splits (C2 samples its test prompts) and the device."""

    cfg: RunConfig
    dir: RunDir
    nodes: dict[str, Node]
    targets: list[Target]
    splits: Any  # the task's Splits
    device: str

    def evaluate(self, node: Node) -> None:
        """Evaluate a trained node on every benchmark it has no record for; every rank samples its share."""
        todo = [t for t in self.targets if not distributed.agree(self.dir.read_record(node, t) is not None if distributed.is_main() else None)]
        if not todo:
            return
        if node.served:  # sampled on its server, under the run's prompt protocol
            engine = ServedEngine(self.served_teacher())
        else:
            engine = ENGINES.get(self.cfg.eval.engine).load(self.dir.model_ref(node), self.engine_config())
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

    def diagnostics_of(self, node: Node) -> dict[str, Any] | None:
        """C1 after teacher RL, C2 around each distillation stage (diagnostics.of_node), computed once: models in the
        evaluation's dtype, sampled in the evaluation's batches."""
        batching = self.engine_config()
        dtype = resolve_dtype(batching.dtype, self.device)
        return diagnostics.of_node(node, self.dir.node_dir(node), lambda i: self.load(i, dtype), [p.prompt for p in self.splits.test],
                                   self.cfg.eval.max_new_tokens, EVAL_SEED, self.cfg.prompt.thinking, self.cfg.diagnostics, batching)

    def engine_config(self) -> EngineConfig:
        """How evaluation samples (and C2, which samples in the same batches and dtype)."""
        return EngineConfig(device=self.device, prompts_per_batch=self.cfg.eval.prompts_per_batch,
                            max_batch_tokens=self.cfg.eval.max_batch_tokens, thinking=self.cfg.prompt.thinking)

    def load(self, node_id: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
        """A built node's model and tokenizer, on this run's device (a served teacher: its client and the student's tokenizer)."""
        if self.nodes[node_id].served:
            served = self.served_teacher()
            return served, served.tok
        return load_pretrained(self.dir.model_ref(self.nodes[node_id]), self.device, dtype)

    def served_teacher(self) -> ServedTeacher:
        """The served teacher with the student's tokenizer, for evaluating it and for C2 (no student model at hand)."""
        return ServedTeacher.beside(self.cfg.teacher, self.dir.model_ref(base_node(self.nodes, "student")), self.cfg.prompt.thinking)
