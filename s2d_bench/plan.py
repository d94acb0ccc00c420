"""The arms of a config as content-addressed nodes: what a node's id hashes, so arms share stages and reruns resume.

Every model the workflow produces is a *node*: a base model, or a stage applied to a parent model
(and, for distillation, a teacher node) with a given stage config, seed and backend. A node's id
hashes exactly those inputs, so two arms that share a prefix share its nodes, a rerun finds
finished nodes on disk, and a setting added later joins the hash only when it differs from the
behaviour before it (ids of earlier runs survive): memory-only settings never join it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from s2d_bench.config import RunConfig, to_dict
from s2d_bench.identity import base_inputs, node_id, node_seed, stage_inputs
from s2d_bench.stages import STAGES


@dataclass
class Node:
    id: str
    stage: str  # "base" or a registered stage name
    role: str  # "teacher" or "student"
    parent: str | None = None
    teacher: str | None = None
    cfg: dict[str, Any] = field(default_factory=dict)  # the stage's effective config (a base model's: the model config), as data
    arms: list[str] = field(default_factory=list)
    seed: int | None = None  # the stage's training seed; None: read from the id (`identity.node_seed`)
    settings: Any = field(default=None, compare=False, repr=False)  # `cfg` as its typed stage config (None for base models)

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = node_seed(self.id)

    @property
    def from_path(self) -> bool:
        """A base model loaded from `teacher.path`/`student.path`: nothing to train, nothing a stage consumed."""
        return self.stage == "base" and bool(self.cfg.get("path"))

    @property
    def served(self) -> bool:
        """The teacher on its own server (`teacher.server`): nothing to train or load here; evaluated through the server."""
        return self.stage == "base" and bool(self.cfg.get("server"))

    @property
    def given(self) -> bool:
        """A base model that is not built here: from a path, or served."""
        return self.from_path or self.served


def plan(cfg: RunConfig) -> list[Node]:
    """Nodes in execution order, each once, with the arms that use it."""
    nodes: dict[str, Node] = {}
    base = {}
    # a served teacher is evaluated with the student's tokenizer (the preflight probed them equal): the student's base first
    for role in ("student", "teacher") if cfg.teacher.server else ("teacher", "student"):
        base[role] = Node(node_id(f"base-{role}", base_inputs(cfg, role)), "base", role, cfg=to_dict(getattr(cfg, role)))
        nodes[base[role].id] = base[role]
    for arm_name, arm in cfg.arms.items():
        current = {"teacher": base["teacher"].id, "student": base["student"].id}
        for stage_name in arm.stages:
            stage = STAGES.get(stage_name)
            teacher = current["teacher"] if stage.needs_teacher else None
            settings = cfg.stage_config(arm_name, stage_name)
            stage_cfg = to_dict(settings)
            this = node_id(stage_name, stage_inputs(cfg, stage_cfg, current[stage.trains], teacher))
            seed = served_draws_seed(cfg, settings, teacher) if stage.samples_from == "teacher" and cfg.teacher.server else None
            node = nodes.setdefault(this, Node(this, stage_name, stage.trains, current[stage.trains], teacher, stage_cfg, seed=seed,
                                               settings=settings))
            if arm_name not in node.arms:
                node.arms.append(arm_name)
            current[stage.trains] = node.id
    return list(nodes.values())


def served_draws_seed(cfg: RunConfig, settings: Any, teacher: str | None) -> int:
    """The seed of a warmup on a served teacher: its teacher, the run's seed and its steps' sizes, never the student or its
    learning rate, so every arm that warms a student up from that teacher draws the same prompts and sampling seeds and
    reads the same teacher rollouts from the cache (served/teacher.py), each drawn once (common random numbers across
    the arms). A local teacher's warmup keeps the seed of its id (`identity.node_seed`)."""
    draws = {"teacher": teacher, "seed": cfg.seed, "steps": settings.steps, "batch_size": settings.batch_size}
    return node_seed(node_id("warmup-draws", draws))


def arm_paths(nodes: dict[str, Node], arms: Iterable[str]) -> dict[str, list[str]]:
    """Each arm's stage nodes in order (plan order is execution order)."""
    return {arm: [n.id for n in nodes.values() if arm in n.arms] for arm in arms}


def base_node(nodes: dict[str, Node], role: str) -> Node:
    return next(n for n in nodes.values() if n.stage == "base" and n.role == role)


def arm_rows(nodes: dict[str, Node], arms: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """Each arm as the store keeps it: the base student, then the arm's stage nodes."""
    start = [(base_node(nodes, "student").id, "base")]
    return {arm: start + [(i, nodes[i].stage) for i in ids] for arm, ids in arm_paths(nodes, arms).items()}


def ancestors(nodes: dict[str, Node], node_id: str) -> list[Node]:
    """The node and every node it was built from (parents and teachers), each once, the node first."""
    seen: dict[str, Node] = {}
    stack = [node_id]
    while stack:
        current = nodes[stack.pop()]
        if current.id not in seen:
            seen[current.id] = current
            stack.extend(i for i in (current.parent, current.teacher) if i)
    return list(seen.values())


StageInfo = Callable[[Node], dict[str, Any]]  # a built node's stage.json (rundir.RunDir.stage_info)


def labeled_per_stage(nodes: dict[str, Node], node_id: str, info: StageInfo) -> dict[str, int]:
    """Labeled draws behind this model, by stage (the budget column of the leaderboards)."""
    out: dict[str, int] = {}
    for n in ancestors(nodes, node_id):
        if n.stage != "base":
            out[n.stage] = out.get(n.stage, 0) + info(n)["labeled_draws"]
    return out


def labeled_consumed(nodes: dict[str, Node], node_id: str, info: StageInfo) -> tuple[int, int]:
    """Labeled examples behind this model: draws (with repeats) and distinct problems."""
    infos = [info(n) for n in ancestors(nodes, node_id)]
    return sum(i["labeled_draws"] for i in infos), len({pid for i in infos for pid in i["labeled_ids"]})
