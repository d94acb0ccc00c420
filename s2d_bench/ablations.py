"""Ablations as named transforms of the full workflow's arm.

`s2d-bench ablate --drop warmup` runs the full workflow and the same workflow without stage 2a;
`--all` runs every drop and every baseline; `--sweep stages.opd.estimator=full,topk,sampled` adds an
arm per value of any stage setting. Each transform maps the config's `full` arm (or the
four stages in order, when the config has none) to a new arm, so an ablation of a user's config
keeps that config's stage settings. Arms that share a prefix share its nodes (plan.py), so
a grid of eight arms trains twelve stages per seed, not twenty-three.

The paper's ablation (Qwen3-8B -> Qwen3-1.7B, MATH avg@16): raw teacher -7.8, no warmup -1.7,
no OPD -3.3 points against the full workflow.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any, Callable

import yaml

from s2d_bench.config import ArmConfig, RunConfig
from s2d_bench.errors import UserError
from s2d_bench.registry import suggest

FULL = "full"
FULL_STAGES = ["teacher_rl", "warmup", "opd", "student_rl"]

Transform = Callable[[RunConfig, ArmConfig], ArmConfig]


def full_arm(cfg: RunConfig) -> ArmConfig:
    return cfg.arms.get(FULL) or ArmConfig(list(FULL_STAGES))


def _overrides_without(full: ArmConfig, stages: set[str]) -> dict[str, Any]:
    """The full arm's overrides (`stage.field`) less those of `stages`, which the derived arm does not run."""
    return {k: v for k, v in full.overrides.items() if k.partition(".")[0] not in stages}


def _drop(stage: str, cfg: RunConfig, full: ArmConfig) -> ArmConfig:
    """The full arm without `stage` and without that stage's overrides (bound per stage in DROPS with `partial`, not a
    closure made at import, so the transform that runs is the module's function at call time)."""
    if stage not in full.stages:
        raise UserError(f"cannot drop {stage}: the full arm runs {', '.join(full.stages)}")
    if full.stages == [stage]:
        raise UserError(f"dropping {stage} leaves the full arm with no stage")
    return ArmConfig([s for s in full.stages if s != stage], _overrides_without(full, {stage}))


def _direct_grpo(cfg: RunConfig, full: ArmConfig) -> ArmConfig:
    """The config's own direct-GRPO arm if it has one, else student GRPO alone with stage 3 settings."""
    return cfg.arms.get("direct-grpo") or ArmConfig(["student_rl"])


def _replay(cfg: RunConfig, full: ArmConfig) -> ArmConfig:
    """Stage 3 replaced by as many updates of label-free distillation (the paper's control)."""
    if "student_rl" not in full.stages:
        raise UserError("the replay control replaces student_rl, which the full arm does not run")
    rl = cfg.stage_config(FULL, "student_rl") if FULL in cfg.arms else cfg.stages.student_rl
    kept = _overrides_without(full, {"student_rl"})
    kept["replay.steps"] = rl.steps * rl.updates_per_batch
    return ArmConfig(["replay" if s == "student_rl" else s for s in full.stages], kept)


def _raw_bridge(cfg: RunConfig, full: ArmConfig) -> ArmConfig:
    """The bridge from the raw teacher: the full arm without stage 1 and without student GRPO (the paper's
    raw-teacher transfer, the low end of its teacher-quality ordering)."""
    dropped = {"teacher_rl", "student_rl"}
    stages = [s for s in full.stages if s not in dropped]
    if not stages:
        raise UserError(f"the raw-teacher bridge keeps no stage of the full arm ({', '.join(full.stages)})")
    return ArmConfig(stages, _overrides_without(full, dropped))


# name on the command line -> (arm name, transform)
DROPS: dict[str, tuple[str, Transform]] = {
    "teacher-rl": ("no-teacher-rl", partial(_drop, "teacher_rl")),
    "warmup": ("no-warmup", partial(_drop, "warmup")),
    "opd": ("no-opd", partial(_drop, "opd")),
    "student-rl": ("no-student-rl", partial(_drop, "student_rl")),
}
BASELINES: dict[str, tuple[str, Transform]] = {
    "direct-grpo": ("direct-grpo", _direct_grpo),
    "replay": ("replay", _replay),
    "raw-bridge": ("raw-bridge", _raw_bridge),
}


def _lookup(table: dict[str, tuple[str, Transform]], name: str, what: str) -> tuple[str, Transform]:
    if name not in table:
        raise UserError(f"unknown {what} '{name}'.{suggest(name, list(table))} Known: {', '.join(table)}")
    return table[name]


def parse_sweep(text: str) -> tuple[str, str, list[Any]]:
    """'stages.opd.estimator=full,topk,sampled' -> ('opd', 'estimator', ['full', 'topk', 'sampled']), values read as YAML."""
    key, sep, values = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not values.strip():
        raise UserError(f"--sweep '{text}' is not of the form stages.STAGE.FIELD=VALUE,VALUE,...")
    if len(parts) != 3 or parts[0] != "stages":
        raise UserError(f"--sweep '{key}': a sweep varies a stage setting (stages.STAGE.FIELD), so each value is an arm sharing every "
                        "stage upstream of it; run-level settings (backend, rollout, eval, ...) differ per run: give them as overrides "
                        "of separate runs")
    return parts[1], parts[2], [yaml.safe_load(v) for v in values.split(",")]


def _sweep(full: ArmConfig, stage: str, name: str, values: list[Any]) -> dict[str, ArmConfig]:
    """One arm per value: the full arm with `stage.name` set to it (so stages before `stage` are shared nodes)."""
    if stage not in full.stages:
        raise UserError(f"--sweep stages.{stage}.{name}: the full arm does not run {stage} ({', '.join(full.stages)})")
    if len(set(map(str, values))) != len(values):
        raise UserError(f"--sweep stages.{stage}.{name}: a value is given twice ({values})")
    return {f"{stage}.{name}={v}": ArmConfig(list(full.stages), {**full.overrides, f"{stage}.{name}": v}) for v in values}


def ablation_config(cfg: RunConfig, drops: list[str], baselines: list[str], everything: bool = False,
                    sweeps: list[str] = ()) -> RunConfig:
    """`cfg` with its arms replaced by the full arm plus the requested ablations, baselines and sweeps (one arm per
    swept value, named `stage.field=value`)."""
    if everything:
        drops, baselines = list(DROPS), list(BASELINES)
    if not drops and not baselines and not sweeps:
        raise UserError("nothing to ablate: give --drop STAGE (repeatable), --baseline NAME, --sweep KEY=V1,V2 or --all")
    full = full_arm(cfg)
    arms = {FULL: full}
    for name, table, what in [(d, DROPS, "stage to drop") for d in drops] + [(b, BASELINES, "baseline") for b in baselines]:
        arm_name, transform = _lookup(table, name, what)
        arms[arm_name] = transform(cfg, full)
    for text in sweeps:
        arms.update(_sweep(full, *parse_sweep(text)))
    return replace(cfg, arms=arms)  # checked with the rest of the config when a Runner is made


def cache_savings(runners: list) -> dict[str, float]:
    """Stages and training seconds of the grid as run, against every arm running alone from its base models.

    `runners`: one pipeline.Runner per seed, after it ran. Seconds are each stage's measured
    training time (stage.json); base-model pretraining and evaluation are left out of both sides.
    """
    stages_alone = stages_run = 0
    seconds_alone = seconds_run = 0.0
    for runner in runners:
        paths = runner.arm_paths()
        seconds = {i: runner.dir.stage_info(runner.nodes[i])["seconds"] for ids in paths.values() for i in ids}
        stages_alone += sum(len(ids) for ids in paths.values())
        seconds_alone += sum(seconds[i] for ids in paths.values() for i in ids)
        stages_run += len(seconds)
        seconds_run += sum(seconds.values())
    return {"stages_alone": stages_alone, "stages_run": stages_run, "train_seconds_alone": seconds_alone, "train_seconds_run": seconds_run}
