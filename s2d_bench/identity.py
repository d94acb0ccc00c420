"""What makes two things the same thing: the hashes behind node ids, config ids and evaluation keys, in one place.

**Two nodes are the same node** when they apply the same stage, with the same step-changing settings,
to the same parent (and, for distillation, the same teacher) under the same seed, backend, rollout
engine and prompt protocol. A base model is the same when its role, model config and task are
(plus, with `seed_scope: all`, the base seed; for a model from a path, the fingerprint of its
weights, `models.refs.fingerprint`). What is left out, and why:
- `MEMORY_ONLY` stage settings (micro-batches, activation checkpointing) trade memory for time and
  give the same step (tests/backends/test_memory_settings.py), so a node trained under other
  memory settings is reused;
- a setting added after run directories existed (`LATER_DEFAULTS`) joins the hash only when it
  differs from the value that reproduces the earlier behaviour, and so do the rollout engine
  (when not `hf`) and the prompt protocol (when thinking): the ids of earlier runs survive, and
  with them the node seeds, which are read from the ids (`node_seed`).
So "why was my node not retrained?": its `stage_inputs` are equal to an existing node's.

**Two configs are the same config** (`run_hash`: the name of `configs/<hash>.yaml`, the store's
config column) when every setting but `RUN_ONLY` is equal: where and how it runs, its seed (seeds
of one config are pooled) and its arms (an ablation adds arms to a config) do not enter.

**Two evaluations are the same evaluation** when model, benchmark, protocol (sampling, k, token
cap), problems (limit, data file), engine, sampling seed and prompt protocol are equal. The file
name in a node's folder (`eval_file_hash`, from the run's side: the target) and the store key
(`eval_key`, from the record's side) hash these facts as each side holds them; both are kept as
they were first written so that existing run directories and stores stay valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2d_bench.config import to_dict
from s2d_bench.harness.targets import TASK

if TYPE_CHECKING:
    from s2d_bench.config import RunConfig
    from s2d_bench.harness.records import EvalRecord
    from s2d_bench.harness.targets import Target

EVAL_SEED = 1234  # one sampling seed for every evaluation in a run: common random numbers across models

# Where and how a config runs, not what it computes ("section.key": one key of a section; memory bounds give the same samples).
# The C2 settings ("diagnostics") change no model or evaluation; each C2 record keeps its own prompt and sample counts.
RUN_ONLY = ("run_dir", "store", "arms", "seed", "jobs", "threads", "preflight", "report_to", "eval.max_batch_tokens", "diagnostics",
            "executor", "slurm", "checkpoint", "teacher.http", "student.http")
# stage settings that trade memory (or disk) for time and give the same step
MEMORY_ONLY = ("micro_batch_size", "gradient_checkpointing", "teacher_cache")
# Stage settings added after run directories existed, at the value that reproduces the earlier behaviour: left out of
# node ids at that value, so the nodes of earlier runs are still found (and seeded, from their ids, as they were).
LATER_DEFAULTS = {"mini_batches": 1}
# run settings of the same kind: left out of config hashes at these values (eval.benchmarks: in each entry)
LATER_RUN_DEFAULTS = {"seed_scope": "stages", "eval.extraction": "last_box", "eval.benchmarks.extraction": None,
                      **{f"{role}.{key}": "" for role in ("teacher", "student") for key in ("server", "served_model")},
                      **{f"stages.{stage}.teacher_cache": None for stage in ("warmup", "opd", "replay")}}
SERVED_ONLY = {"server": "", "served_model": ""}  # a model config's served-teacher keys, at the value of a local model


def config_hash(obj: Any) -> str:
    """Stable short hash of a config (or any JSON-able value)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def without(values: dict[str, Any], left_out: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """`values` less the keys `left_out` and the keys that still hold their later default (what ids and hashes see).

    A dotted key ("eval.max_batch_tokens") names a key inside a section: the section stays, less that key; inside a
    list of sections ("eval.benchmarks.extraction"), in each of them."""
    out = {}
    for k, v in values.items():
        if k in left_out or (k in defaults and v == defaults[k]):
            continue
        inner = tuple(x.split(".", 1)[1] for x in left_out if x.startswith(f"{k}."))
        inner_defaults = {x.split(".", 1)[1]: d for x, d in defaults.items() if x.startswith(f"{k}.")}
        if inner or inner_defaults:
            if isinstance(v, dict):
                v = without(v, inner, inner_defaults)
            elif isinstance(v, list):
                v = [without(x, inner, inner_defaults) if isinstance(x, dict) else x for x in v]
        out[k] = v
    return out


def run_hash(cfg: RunConfig) -> str:
    """The hash that names a config in a run directory and the store: every setting but `RUN_ONLY`.

    Seeds of one config share it (they are pooled in one table); arms are left out because an
    ablation adds arms to a config rather than changing it (each arm's nodes carry their own ids).
    """
    return config_hash(without(to_dict(cfg), RUN_ONLY, LATER_RUN_DEFAULTS))


# ---------------------------------------------------------------- nodes


def node_id(stage: str, inputs: dict[str, Any]) -> str:
    return f"{stage}-{config_hash(inputs)}"


def node_seed(node_id: str) -> int:
    """A stage's training seed: read from its id, so it follows exactly what the id hashes."""
    return int(node_id.rsplit("-", 1)[1][:8], 16)


def base_inputs(cfg: RunConfig, role: str) -> dict[str, Any]:
    """What a base model's id hashes."""
    from s2d_bench.models.refs import fingerprint

    model_cfg = getattr(cfg, role)
    if model_cfg.server:  # the served name is the teacher (where it is served from, and how, is not)
        return {"role": role, "served": model_cfg.served_model}
    inputs = {"role": role, "model": without(to_dict(model_cfg), ("http",), SERVED_ONLY), "task": to_dict(cfg.task)}
    if cfg.seed_scope == "all" and not model_cfg.path:  # a base model per seed; 'stages' keeps the earlier ids
        inputs["seed"] = cfg.base_seed
    if model_cfg.path and Path(model_cfg.path).is_dir():  # the weights, not only their folder's name (refs.fingerprint)
        inputs["weights"] = fingerprint(Path(model_cfg.path))
    return inputs


def stage_inputs(cfg: RunConfig, stage_cfg: dict[str, Any], parent: str, teacher: str | None) -> dict[str, Any]:
    """What a stage node's id hashes: parent, teacher, the step-changing settings, seed, backend (and sampler, prompts)."""
    same_step = without(stage_cfg, MEMORY_ONLY, LATER_DEFAULTS)  # a node trained with other memory settings is reused
    inputs = {"parent": parent, "teacher": teacher, "cfg": same_step, "seed": cfg.seed, "backend": cfg.backend}
    if cfg.rollout.engine != "hf":  # another sampler draws other rollouts; hf runs keep their earlier ids
        inputs["rollout"] = cfg.rollout.engine
    if cfg.prompt.thinking:  # other prompts train another model; non-thinking runs keep their ids
        inputs["prompt"] = to_dict(cfg.prompt)
    return inputs


# ---------------------------------------------------------------- evaluations


def eval_file_hash(cfg: RunConfig, target: Target) -> str:
    """The hash in a node's `eval-<hash>.json`: benchmark, protocol, problems, engine, seed, prompts (the run's side)."""
    inputs = {"benchmark": target.benchmark, "eval": target.protocol(), "limit": target.limit, "data": target.data,
              "engine": cfg.eval.engine, "seed": EVAL_SEED, "sampler": "per-prompt seeds"}
    if target.benchmark == TASK:
        inputs["task"] = to_dict(cfg.task)
    if cfg.prompt.thinking:
        inputs["prompt"] = to_dict(cfg.prompt)
    return config_hash(inputs)


def eval_key(record: EvalRecord) -> str:
    """The store key of an evaluation: one row per model, benchmark and protocol (a re-evaluation replaces it)."""
    protocol = config_hash({"eval": record.eval_config, "engine": record.engine, "seed": record.eval_seed, "limit": record.limit,
                            "data": record.data, "thinking": record.thinking})
    return f"{record.node or 'eval:' + record.model}:{record.benchmark}:{protocol}"
