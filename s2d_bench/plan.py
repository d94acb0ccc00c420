"""The arms of a config as content-addressed nodes: what a node's id hashes, so arms share stages and reruns resume.

Every model the workflow produces is a *node*: a base model, or a stage applied to a parent model
(and, for distillation, a teacher node) with a given stage config, seed and backend. A node's id
hashes exactly those inputs, so two arms that share a prefix share its nodes, a rerun finds
finished nodes on disk, and a setting added later joins the hash only when it differs from the
behaviour before it (ids of earlier runs survive): memory-only settings never join it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2d_bench.config import LATER_DEFAULTS, MEMORY_ONLY, RunConfig, config_hash, to_dict, without
from s2d_bench.models.refs import fingerprint
from s2d_bench.stages import STAGES


@dataclass
class Node:
    id: str
    stage: str  # "base" or a registered stage name
    role: str  # "teacher" or "student"
    parent: str | None = None
    teacher: str | None = None
    cfg: dict[str, Any] = field(default_factory=dict)
    arms: list[str] = field(default_factory=list)


def node_id(stage: str, inputs: dict[str, Any]) -> str:
    return f"{stage}-{config_hash(inputs)}"


def plan(cfg: RunConfig) -> list[Node]:
    """Nodes in execution order, each once, with the arms that use it."""
    nodes: dict[str, Node] = {}
    base = {}
    for role in ("teacher", "student"):
        model_cfg = getattr(cfg, role)
        inputs = {"role": role, "model": to_dict(model_cfg), "task": to_dict(cfg.task)}
        if cfg.seed_scope == "all" and not model_cfg.path:  # a base model per seed; 'stages' keeps the earlier ids
            inputs["seed"] = cfg.base_seed
        if model_cfg.path and Path(model_cfg.path).is_dir():  # the weights, not only their folder's name (refs.fingerprint)
            inputs["weights"] = fingerprint(Path(model_cfg.path))
        base[role] = Node(node_id(f"base-{role}", inputs), "base", role, cfg=to_dict(model_cfg))
        nodes[base[role].id] = base[role]
    for arm_name, arm in cfg.arms.items():
        current = {"teacher": base["teacher"].id, "student": base["student"].id}
        for stage_name in arm.stages:
            stage = STAGES.get(stage_name)
            stage_cfg = to_dict(cfg.stage_config(arm_name, stage_name))
            teacher = current["teacher"] if stage.needs_teacher else None
            same_step = without(stage_cfg, MEMORY_ONLY, LATER_DEFAULTS)  # a node trained with other memory settings is reused
            inputs = {"parent": current[stage.trains], "teacher": teacher, "cfg": same_step, "seed": cfg.seed, "backend": cfg.backend}
            if cfg.rollout.engine != "hf":  # another sampler draws other rollouts; hf runs keep their earlier ids
                inputs["rollout"] = cfg.rollout.engine
            if cfg.prompt.thinking:  # other prompts train another model; non-thinking runs keep their ids
                inputs["prompt"] = to_dict(cfg.prompt)
            node = nodes.setdefault(node_id(stage_name, inputs), Node(node_id(stage_name, inputs), stage_name, stage.trains, current[stage.trains], teacher, stage_cfg))
            if arm_name not in node.arms:
                node.arms.append(arm_name)
            current[stage.trains] = node.id
    return list(nodes.values())
