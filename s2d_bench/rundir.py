"""A run directory: where each node's model, records and stage facts live, and whether a node is built.

Layout, under `<run_dir>/`:
  nodes/<id>/model/           the trained model (HF directory); its presence means training finished
  nodes/<id>/stage.json       what the stage consumed (labeled draws and ids), how long it took, its model's checksums
  nodes/<id>/metrics.jsonl    per-step training metrics, rewritten if the stage is redone; curves.png plots them
  nodes/<id>/eval-<hash>.json the record of one benchmark under its protocol (`identity.eval_file_hash`);
                              completions-<hash>.jsonl (every sample) and problems-<hash>.jsonl beside it
  nodes/<id>/diagnostics.json C1 (teacher RL) or C2 (distillation stages), see diagnostics.py
  nodes/<id>/resume/          a stage's last resumable save while it trains (resume.py); kept by `clear`, removed on commit
  configs/<hash>.yaml         every config that used the directory; config.json the latest
  arms/<suite>-<hash>-seed<seed>.json   each run's arm paths (with configs/, what `store rebuild` remakes the store from)
  results.jsonl               the records of the latest config, every seed, oldest first
  tb/<node>, tb/arms/...      TensorBoard mirrors (`report_to: [tensorboard]`)
  locks/<id>.lock             held while a process builds the node
A model is written as `model.partial/` and renamed once `stage.json` is written, so a kill mid-stage
leaves no `model/` and only that stage is redone; `nodefiles.damage` is what a rerun checks first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d_bench.config import RunConfig, to_dict
from s2d_bench.harness.records import read_record
from s2d_bench.harness.targets import Target
from s2d_bench.identity import eval_file_hash
from s2d_bench.nodefiles import checksums, damage, write_atomic, write_json
from s2d_bench.plan import Node, ancestors, labeled_consumed, labeled_per_stage


def model_label(model_cfg) -> str:  # noqa: ANN001 - a config.ModelConfig
    """How records name a model: its builder, its path, or its served name marked as served (the teacher on a server)."""
    return model_cfg.builder or model_cfg.path or f"{model_cfg.served_model} (served)"


@dataclass
class RunDir:
    """The files of one config's runs (`cfg`, named `config_id`) under `root`; holds no model state."""

    root: Path
    cfg: RunConfig
    config_id: str
    started: float  # orders configs: a suite's leaderboard shows the one run last

    # ------------------------------------------------------------------ paths
    def node_dir(self, node: Node) -> Path:
        return self.root / "nodes" / node.id

    def model_ref(self, node: Node) -> str:
        """Where a node's model is loaded from: its folder, or the configured path of a base model built from one."""
        if node.served:
            return node.cfg["server"]
        return node.cfg["path"] if node.from_path else str(self.node_dir(node) / "model")

    def tb_dir(self, node: Node) -> Path:
        return self.root / "tb" / node.id

    def lock(self, node: Node) -> Path:
        return self.root / "locks" / f"{node.id}.lock"

    def arms_file(self, seed: int) -> Path:
        return self.root / "arms" / f"{self.cfg.name}-{self.config_id}-seed{seed}.json"

    def eval_name(self, target: Target) -> str:
        """The hash in a node's evaluation file names, for this run's protocol of `target`."""
        return eval_file_hash(self.cfg, target)

    def result_path(self, node: Node, target: Target) -> Path:
        return self.node_dir(node) / f"eval-{self.eval_name(target)}.json"

    # ------------------------------------------------------------------ records and stage facts
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

    def stage_info(self, node: Node) -> dict[str, Any]:
        """What a built node's stage consumed (base models from a path or a server have no stage: nothing)."""
        if node.given:
            return {"labeled_draws": 0, "labeled_ids": [], "seconds": 0.0}
        return json.loads((self.node_dir(node) / "stage.json").read_text())

    def is_trained(self, node: Node) -> bool:
        """The node's model is on disk and intact; a damaged node counts as unfinished (it is redone, with a warning)."""
        if node.given:
            return True
        if not (self.node_dir(node) / "model").is_dir():
            return False
        problem = damage(self.node_dir(node))
        if problem is not None:
            print(f"warning: node {node.id}: {problem}; building it again", file=sys.stderr)
        return problem is None

    def record_fields(self, nodes: dict[str, Node], node: Node) -> dict[str, Any]:
        """What a pipeline record says beyond the evaluation itself: the node, its lineage and its label budget (`nodes`: the plan)."""
        infos = {n.id: self.stage_info(n) for n in ancestors(nodes, node.id)}  # each stage.json read once
        draws, unique = labeled_consumed(nodes, node.id, lambda n: infos[n.id])
        model_id = {role: model_label(getattr(self.cfg, role)) for role in ("teacher", "student")}
        return dict(
            model=model_id[node.role], engine="served" if node.served else self.cfg.eval.engine, thinking=self.cfg.prompt.thinking, seed=self.cfg.seed,
            seed_scope=self.cfg.seed_scope,
            stage=node.stage, run=self.cfg.name, node=node.id, role=node.role, arms=node.arms, parent=node.parent,
            teacher_node=node.teacher, backend=self.cfg.backend, teacher_model=model_id["teacher"], student_model=model_id["student"],
            config_hash=self.config_id,
            node_config=node.cfg, labeled_draws=draws, labeled_unique=unique,
            labeled_per_stage=labeled_per_stage(nodes, node.id, lambda n: infos[n.id]),
            train_seconds=infos[node.id]["seconds"],
        )

    # ------------------------------------------------------------------ writing a node
    def clear(self, node: Node) -> Path:
        """Make way to (re)train a node: its model and everything measured on it go; returns the folder to save into."""
        out = self.node_dir(node)
        partial = out / "model.partial"
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(out / "model", ignore_errors=True)  # a damaged node's model and everything measured on it
        for stale in [out / "diagnostics.json", *out.glob("eval-*.json"), *out.glob("completions-*.jsonl"), *out.glob("problems-*.jsonl")]:
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.tb_dir(node), ignore_errors=True)  # its curves are redrawn with the stage
        return partial

    def commit(self, node: Node, steps: int, seconds: float, draws: list[str]) -> None:
        """stage.json (with the saved model's checksums), then `model.partial/` renamed to `model/`: the node is built."""
        out = self.node_dir(node)
        partial = out / "model.partial"
        write_json(out / "stage.json", {
            "node": node.id, "stage": node.stage, "steps": steps, "seconds": seconds,
            "labeled_draws": len(draws), "labeled_ids": sorted(set(draws)), "files": checksums(partial),
        })
        os.replace(partial, out / "model")

    # ------------------------------------------------------------------ the run's own files
    def remember_config(self, arm_rows: dict[str, list[tuple[str, str]]]) -> None:
        """config.json (the latest), configs/<hash>.yaml (every config the directory has seen) and this run's arms file."""
        import yaml

        for folder in ("configs", "arms"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        write_json(self.root / "config.json", to_dict(self.cfg))
        kept = self.root / "configs" / f"{self.config_id}.yaml"
        if not kept.exists():
            write_atomic(kept, yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        write_json(self.arms_file(self.cfg.seed), {"suite": self.cfg.name, "config": self.config_id, "seed": self.cfg.seed,
                                                  "written": self.started, "arms": arm_rows})

    def write_results(self, node_ids: list[str], targets: list[Target]) -> None:
        """results.jsonl: the records of this config (every seed run in this directory) under its protocols, oldest first."""
        nodes: set[str] = set()
        for path in (self.root / "arms").glob(f"{self.cfg.name}-{self.config_id}-seed*.json"):
            with contextlib.suppress(OSError, ValueError):
                nodes.update(node for rows in json.loads(path.read_text())["arms"].values() for node, _ in rows)
        nodes.update(node_ids)  # the base teacher is in no arm
        hashes = {self.eval_name(t) for t in targets}
        records = []
        for node in sorted(nodes):
            for digest in sorted(hashes):
                path = self.root / "nodes" / node / f"eval-{digest}.json"
                if path.exists():
                    records.append(json.loads(path.read_text()))
        records.sort(key=lambda r: r["timestamp"])
        write_atomic(self.root / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
