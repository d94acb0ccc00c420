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
cap), problems (limit, data file; for the task's held-out split, the task), engine, sampling seed and
prompt protocol are equal. One identity, `evaluation_id`, says so: it names the record in a node's
folder (`eval-<id>.json`) and ends the store key (`eval_key`: node or model, benchmark, id), so a
re-evaluation replaces its row and nothing else. A run computes it from its config and the target
(`eval_file_hash`); `s2d-bench eval` and `rebuild` from a record (`record_evaluation_id`: a record
holds every fact but the task, which only a run's own split has, and a run's records are keyed by
their file's id). Stores written before keyed rows by another hash of the record (`legacy_eval_key`);
a row put again replaces its legacy row, so an old store never holds one evaluation twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2d_bench.config import to_dict
from s2d_bench.harness.records import EvalRecord
from s2d_bench.harness.targets import TASK

if TYPE_CHECKING:
    from s2d_bench.config import RunConfig
    from s2d_bench.harness.targets import Target
    from s2d_bench.store import Store

EVAL_SEED = 1234  # one sampling seed for every evaluation in a run: common random numbers across models

# Where and how a config runs, not what it computes ("section.key": one key of a section; memory bounds give the same samples).
# The C2 settings ("diagnostics") change no model or evaluation; each C2 record keeps its own prompt and sample counts.
RUN_ONLY = ("run_dir", "store", "arms", "seed", "jobs", "threads", "teacher_process", "preflight", "report_to", "eval.max_batch_tokens",
            "diagnostics", "executor", "slurm", "checkpoint", "teacher.http", "student.http")
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


def evaluation_id(benchmark: str, protocol: dict[str, Any], limit: int | None, data: str, engine: str, seed: int, thinking: bool,
                  task: dict[str, Any] | None = None) -> str:
    """The identity of one evaluation (the module docstring): the facts hashed as runs first hashed them, so existing
    `eval-<id>.json` files keep their names ("prompt" is the prompt config, whose one setting is `thinking`)."""
    inputs = {"benchmark": benchmark, "eval": protocol, "limit": limit, "data": data, "engine": engine, "seed": seed,
              "sampler": "per-prompt seeds"}
    if task is not None:
        inputs["task"] = task
    if thinking:
        inputs["prompt"] = {"thinking": True}
    return config_hash(inputs)


def eval_file_hash(cfg: RunConfig, target: Target) -> str:
    """A run's evaluation of `target`: the id in its node's `eval-<id>.json`."""
    return evaluation_id(target.benchmark, target.protocol(), target.limit, target.data, cfg.eval.engine, EVAL_SEED, cfg.prompt.thinking,
                         to_dict(cfg.task) if target.benchmark == TASK else None)


def record_evaluation_id(record: EvalRecord) -> str:
    """The id of the evaluation a record holds, from the record alone (every benchmark but a run's own task split)."""
    return evaluation_id(record.benchmark, record.eval_config, record.limit, record.data, record.engine, record.eval_seed, record.thinking)


def eval_key(record: EvalRecord, evaluation: str | None = None) -> str:
    """The store key of an evaluation: one row per model (node), benchmark and evaluation id (a re-evaluation replaces it).
    `evaluation`: the id a run's record file is named by; else the record's own (`record_evaluation_id`)."""
    return f"{record.node or 'eval:' + record.model}:{record.benchmark}:{evaluation or record_evaluation_id(record)}"


def eval_keys(record: dict[str, Any], evaluation: str | None = None) -> tuple[str, str]:
    """A record's store key and the legacy key it replaces: `store.put_eval(key, suite, record, replaces=legacy)`."""
    parsed = EvalRecord.from_dict(record)
    return eval_key(parsed, evaluation), legacy_eval_key(parsed)


def put_record(store: Store, suite: str, record: dict[str, Any], evaluation: str | None = None) -> None:
    """Store an evaluation record under its key (`evaluation`: a run's file id), replacing the row an older store keyed
    by `legacy_eval_key`: the one way every writer (a run, `s2d-bench eval`, `store rebuild`) stores a record."""
    key, legacy = eval_keys(record, evaluation)
    store.put_eval(key, suite, record, replaces=legacy)


def legacy_eval_key(record: EvalRecord) -> str:
    """The key stores written before `evaluation_id` gave the same evaluation; `Store.put_eval` drops it (one row each)."""
    protocol = config_hash({"eval": record.eval_config, "engine": record.engine, "seed": record.eval_seed, "limit": record.limit,
                            "data": record.data, "thinking": record.thinking})
    return f"{record.node or 'eval:' + record.model}:{record.benchmark}:{protocol}"
