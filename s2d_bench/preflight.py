"""What must fail before any stage runs, and the memory estimate that says whether a config fits.

A run checks, in order: what the config names (`check_config`: registered backend, engines,
task, benchmarks, builders and stages, arm overrides, estimators, and the options its backend
cannot express: offline, from the config alone), the model references (refs.py: folders that
exist and hold what loading needs), one vocabulary and chat template for a distilling pair, then
the memory of every stage per rank (budget.py): model states plus the larger of the rollout KV
cache and one micro-batch's update; then the phases after each stage (`phase_report`: evaluating
every benchmark with each model, and C2 when the plan distils). The estimate is printed (and written to
`<run_dir>/preflight.json` once every check has passed), and a stage over the device's memory (the CUDA device's, or
`preflight.device_memory_gb`) is refused with the settings that would make it fit, before any
GPU time is spent. `offline_report` is the same estimate for `s2d-bench plan`: no weights, no process group, no hub.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from s2d_bench import budget, distributed, estimators
from s2d_bench.backends import BACKENDS
from s2d_bench.backends.refusals import refusals
from s2d_bench.config import ROLES, RunConfig, require
from s2d_bench.diagnostics import C2_STAGES
from s2d_bench.errors import UserError
from s2d_bench.generation import ENGINES
from s2d_bench.generation.protocol import check_context, context_of
from s2d_bench.harness.targets import entries
from s2d_bench.models import MODELS
from s2d_bench.models.builders import check_pair, load_tokenizer
from s2d_bench.models.refs import damaged_weights, load_kwargs, resolve_model
from s2d_bench.models.shapes import known_config
from s2d_bench.reporting import REPORTERS
from s2d_bench.stages import STAGES
from s2d_bench.tasks import BENCHMARKS, TASKS


def check_config(cfg: RunConfig) -> RunConfig:
    """Everything a config says that can be wrong without building anything; returns it, checked.

    Registered names are checked by name only, so a config that needs an optional extra or a hub
    checkpoint still checks offline; `config.py` types and ranges each field, this the rest.
    """
    _names(cfg)
    _arms(cfg)
    _served_teacher(cfg)
    refusals(cfg.backend).config(cfg)  # what the backend cannot express (backends/refusals.py)
    return cfg


def _names(cfg: RunConfig) -> None:
    BACKENDS.check(cfg.backend)
    ENGINES.check(cfg.rollout.engine)
    ENGINES.check(cfg.eval.engine)
    TASKS.check(cfg.task.name)
    BENCHMARKS.check(cfg.task.test_benchmark)
    for bench in entries(cfg.eval.benchmarks):
        if bench.name != "task":
            BENCHMARKS.check(bench.name)
    for role in ROLES:
        if getattr(cfg, role).builder:
            MODELS.check(getattr(cfg, role).builder)
    for name in cfg.report_to:
        REPORTERS.check(name)


def _arms(cfg: RunConfig) -> None:
    """Every arm names registered stages, its overrides name real fields of stages it runs, and no warmup
    asks for the sampled estimator: a reverse-KL (on-policy) estimator that forward KL on teacher
    samples has no form of."""
    _refuse_sampled_warmup("warmup", cfg.stages.warmup, "stages")  # the default first: the fix is there
    for arm_name, arm in cfg.arms.items():
        for stage in arm.stages:
            STAGES.check(stage)
        for key in arm.overrides:
            stage, _, name = key.partition(".")
            require(stage in arm.stages, f"arms.{arm_name}.overrides: '{key}' names a stage the arm does not run ({', '.join(arm.stages)})")
        for stage in arm.stages:
            _refuse_sampled_warmup(stage, cfg.stage_config(arm_name, stage), f"arms.{arm_name}")  # raises on unknown fields or bad values


def _refuse_sampled_warmup(stage: str, stage_cfg: Any, where: str) -> None:
    if stage != "warmup":
        return
    usable = estimators.usable("forward")  # the warmup minimises KL(teacher || student)
    require(stage_cfg.estimator in usable,
            f"{where}.warmup.estimator: '{stage_cfg.estimator}' is a reverse-KL (OPD only) estimator; use {' or '.join(map(repr, usable))}")


def _served_teacher(cfg: RunConfig) -> None:
    """What a teacher on a server (teacher.server) cannot do: be trained here, give the whole vocabulary, or give log-probs
    at another temperature than 1 (vLLM computes prompt log-probs from the raw logits in every `logprobs_mode`)."""
    require(not cfg.student.server, "student.server: the student trains here; only the teacher can be served")
    for arm_name, arm in cfg.arms.items():
        for stage in arm.stages:
            st = cfg.stage_config(arm_name, stage)
            require(stage == "warmup" or not getattr(st, "teacher_cache", False),
                    f"arms.{arm_name}.{stage}.teacher_cache: only the warmup's teacher rollouts can be cached; {stage} trains on the "
                    "student's own samples, new at every step, so there is nothing to reuse")
    if not cfg.teacher.server:
        return
    for arm_name, arm in cfg.arms.items():
        require("teacher_rl" not in arm.stages,
                f"arms.{arm_name}: teacher_rl trains the teacher, which lives on teacher.server; serve the RL-trained teacher "
                "(vllm serve CHECKPOINT) and drop teacher_rl from the arm")
        for stage in arm.stages:
            if not STAGES.get(stage).needs_teacher:
                continue
            st = cfg.stage_config(arm_name, stage)
            where = f"arms.{arm_name}.{stage}"
            usable = [e for e in estimators.usable("forward" if stage == "warmup" else "reverse") if e in estimators.served()]
            require(st.estimator in usable,
                    f"{where}.estimator: '{st.estimator}' needs the teacher's whole vocabulary at every position and a server gives its "
                    f"top-k log-probs; use {' or '.join(map(repr, usable))}")
            require(st.temperature == 1.0,
                    f"{where}.temperature: {st.temperature:g} with a served teacher; its log-probs are at temperature 1 (vLLM computes "
                    "prompt log-probs from the raw logits whatever logprobs_mode), so the stage samples at temperature 1")


def check_models(cfg: RunConfig) -> None:
    """A mistyped or incomplete model folder fails now, not after the other model trained."""
    for role in ROLES:
        if getattr(cfg, role).path:
            ref = resolve_model(getattr(cfg, role).path, f"{role}.path")
            damage = damaged_weights(Path(ref)) if Path(ref).is_dir() else None
            if damage:
                raise UserError(f"{role}.path '{getattr(cfg, role).path}': {damage}")


BASE_LAYOUT = {"precision": "fp32", "zero_stage": 0, "world": 1, "offload_optimizer": False, "offload_params": False, "teacher_zero3": False}


def offline_report(cfg: RunConfig, nodes: list, targets: list, world: int) -> dict[str, Any]:  # noqa: ANN001 - Targets
    """The memory report of `s2d-bench plan`: no weights, no process group, no hub (the shipped shape table)."""
    layout = {**BASE_LAYOUT, "world": world, **(budget.deepspeed_layout(cfg.deepspeed, world) if cfg.backend == "deepspeed" else {})}
    return memory_report(cfg, nodes, layout, eval_loads(targets), known_shapes=True)


def run(cfg: RunConfig, nodes: list, backend_layout: dict[str, Any], targets: list) -> dict[str, Any]:  # noqa: ANN001 - Nodes, Targets
    """The pair check, the context check and the memory estimate (printed on rank 0), refusing what cannot fit.

    `backend_layout`: what the backend's `memory_layout()` says of its states, over one fp32 process per rank.
    Nothing is written here: the run directory is made only once every check has passed (pipeline.prepare), so a
    refused config leaves nothing behind."""
    layout = {**BASE_LAYOUT, "world": distributed.world(), **backend_layout}
    toks = {role: _tokenizer(cfg, role) for role in local_roles(cfg)}  # loaded once for both checks (a real tokenizer takes seconds)
    if any(n.teacher for n in nodes) and cfg.teacher.server:
        check_served_teacher(cfg, toks["student"], targets)
    elif any(n.teacher for n in nodes):
        check_pair(toks["teacher"], toks["student"])
        refusals(cfg.backend).pair(cfg, lambda role: _config(cfg, role).vocab_size)
    check_contexts(cfg, targets, toks)
    report = memory_report(cfg, nodes, layout, eval_loads(targets))
    if distributed.is_main():
        print(budget.render(report), file=sys.stderr)
    refuse_what_does_not_fit(report)
    return report


def local_roles(cfg: RunConfig) -> list[str]:
    """The roles whose model is here: both, or the student alone when the teacher is served."""
    return [role for role in ROLES if not getattr(cfg, role).server]


PROBES = ["0123456789 +-*/=^_{}()[]", "\\frac{\\sqrt{2}}{3} \\boxed{x^2} \\le \\pi", "Ünïcödé – 数学 ✓", "  spaces\n\ttabs  "]


def check_served_teacher(cfg: RunConfig, tok: Any, targets: list) -> None:  # noqa: ANN001 - harness Targets
    """The server answers, serves `teacher.served_model`, and tokenizes as the student does: its vocabulary reaches the
    student's last id, and rendered prompts (the first problem of each benchmark, thinking and not), digits, LaTeX and
    non-ASCII text give the same ids (served/teacher.py: `check_tokenizer`)."""
    from s2d_bench.generation.protocol import render_texts, stop_ids_of
    from s2d_bench.served.teacher import ServedTeacher

    firsts = [t.problems[0].prompt for t in targets if t.problems]
    # rendered both ways: the teacher scores a think block either way (an empty one closes a non-thinking prompt)
    prompts = list(dict.fromkeys(p for thinking in (False, True) for p in render_texts(tok, firsts, thinking)))
    served = ServedTeacher(cfg.teacher, tok, stop_ids_of(None, tok), cfg.prompt.thinking)
    try:
        served.check_tokenizer(prompts + PROBES)
    finally:
        served.close()


def check_contexts(cfg: RunConfig, targets: list, toks: dict[str, Any]) -> None:  # noqa: ANN001 - harness Targets
    """Every evaluation's prompts plus its max_new_tokens fit each model's context (`toks`: each role's tokenizer),
    checked before anything trains (the engine checks again as it samples; a 100,000-token cap found there came after
    pretraining and a store of arms)."""
    for role, tok in toks.items():
        context = context_of(_config(cfg, role))
        for target in targets:
            check_context(tok, [p.prompt for p in target.problems], [p.id for p in target.problems], cfg.prompt.thinking, context,
                          target.cfg.max_new_tokens)


def _config(cfg: RunConfig, role: str, known_shapes: bool = False):  # noqa: ANN202 - a transformers PretrainedConfig
    """The model's config: from its folder or the hub, or (`known_shapes`, for `s2d-bench plan` offline) from the
    shipped shape table when the hub id is one of the shipped configs' models."""
    model_cfg = getattr(cfg, role)
    known = known_config(model_cfg.path) if known_shapes and model_cfg.path and not Path(model_cfg.path).expanduser().is_dir() else None
    if known is not None:
        return known
    if model_cfg.path:
        from transformers import AutoConfig

        ref = resolve_model(model_cfg.path, f"{role}.path", tokenizer=False)
        return AutoConfig.from_pretrained(ref, **load_kwargs(ref))
    return MODELS.get(model_cfg.builder)(seed=0)[0].config


def _tokenizer(cfg: RunConfig, role: str) -> Any:
    model_cfg = getattr(cfg, role)
    if model_cfg.path:
        return load_tokenizer(resolve_model(model_cfg.path, f"{role}.path"))
    return MODELS.get(model_cfg.builder)(seed=0)[1]


def device_memory_gib(cfg: RunConfig) -> float | None:
    """The memory of one device: the config's, else the CUDA device's on a GPU run, else unknown."""
    if cfg.preflight.device_memory_gb:
        return cfg.preflight.device_memory_gb * 1e9 / budget.GIB
    import torch

    if cfg.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / budget.GIB
    return None


def stage_shape(cfg: RunConfig, stage_cfg: Any, world: int) -> budget.StageShape:
    """A stage's per-rank sizes: its share of the step's sequences, lengths, and memory settings."""
    prompts = stage_cfg.step_prompts
    k = stage_cfg.step_sequences // prompts
    return budget.StageShape(
        sequences=math.ceil(prompts / world) * k, samples=k, prompt_tokens=cfg.preflight.prompt_tokens,
        new_tokens=stage_cfg.max_new_tokens, micro_batch=stage_cfg.micro_batch_size, checkpointing=stage_cfg.gradient_checkpointing,
        chunk=stage_cfg.chunk_size, kv_budget=cfg.rollout.max_batch_tokens, reference=getattr(stage_cfg, "kl_coef", 0.0) > 0,
        per_batch=cfg.rollout.prompts_per_batch,
    )


@dataclass(frozen=True)
class EvalLoad:
    """What evaluating one benchmark asks of the memory: its problems and protocol (a harness Target, less the data)."""

    label: str
    problems: int
    samples: int
    new_tokens: int


def eval_loads(targets: list) -> list[EvalLoad]:  # noqa: ANN001 - harness Targets
    return [EvalLoad(t.label, len(t.problems), t.cfg.samples, t.cfg.max_new_tokens) for t in targets]


def _phase(name: str, model: str, b: int, per_problem: int, estimate: Any, memory: float | None) -> dict[str, Any]:
    """One after-stage phase's row at batches of `b` problems (`per_problem` KV positions each; `estimate(m)` its
    bytes at m problems a batch), with the largest eval.max_batch_tokens that fits when it is over the device."""
    est = estimate(b)
    row = {"phase": name, "model": model, "batch": b, "weights_gib": est["weights"] / budget.GIB, "work_gib": est["work"] / budget.GIB,
           "device_gib": (est["weights"] + est["work"]) / budget.GIB, "fixes": []}
    if memory and row["device_gib"] > memory:
        fitting = next((m for m in range(b - 1, 0, -1) if _fits(estimate(m), memory)), None)
        row["fixes"] = [f"eval.max_batch_tokens <= {fitting * per_problem:,}" if fitting else
                        f"{name}: one problem a batch does not fit; lower max_new_tokens or samples"]
    return row


def phase_report(cfg: RunConfig, nodes: list, layout: dict[str, Any], shapes: dict, params: dict[str, int], loads: list[EvalLoad],
                 memory: float | None) -> list[dict[str, Any]]:
    """Evaluation of every benchmark for each model role the plan evaluates, and C2 if the plan distils, per rank."""
    itemsize, prompt = budget.PRECISIONS[layout["precision"]].weights, cfg.preflight.prompt_tokens
    rows = []
    for load in loads:
        share = math.ceil(load.problems / layout["world"])  # every rank samples its share of the problems
        b = budget.sample_batch(share, cfg.eval.prompts_per_batch, load.samples, prompt, load.new_tokens, cfg.eval.max_batch_tokens)
        for role in sorted({n.role for n in nodes} & set(shapes)):  # a served teacher is evaluated on its server
            est = lambda m, role=role, load=load: budget.eval_bytes(shapes[role], params[role], m, load.samples, prompt,  # noqa: E731
                                                                    load.new_tokens, itemsize)
            rows.append(_phase(f"eval {load.label}", role, b, load.samples * (prompt + load.new_tokens), est, memory))
    if any(n.stage in C2_STAGES for n in nodes):
        c2, new = cfg.diagnostics, cfg.eval.max_new_tokens
        share = min(c2.c2_prompts, cfg.task.n_test)
        b = budget.sample_batch(share, cfg.eval.prompts_per_batch, c2.c2_samples, prompt, new, cfg.eval.max_batch_tokens)
        est = lambda m: budget.c2_bytes(shapes.get("teacher"), shapes["student"], params, m, c2.c2_samples, prompt, new,  # noqa: E731
                                        c2.chunk_size, itemsize)
        rows.append(_phase("c2", "student" if cfg.teacher.server else "both", b, c2.c2_samples * (prompt + new), est, memory))
    return rows


def _fits(est: dict[str, float], memory: float | None) -> bool:
    return memory is None or (est["weights"] + est["work"]) / budget.GIB <= memory


def memory_report(cfg: RunConfig, nodes: list, layout: dict[str, Any], loads: list[EvalLoad] = (),
                  known_shapes: bool = False) -> dict[str, Any]:
    """Parameter counts; per stage of the plan (its largest node), the memory per rank; and the phases after each
    stage (`loads`: the benchmarks every node is evaluated on; C2 when the plan distils)."""
    configs = {role: _config(cfg, role, known_shapes) for role in local_roles(cfg)}
    shapes = {role: budget.Shape.of(c) for role, c in configs.items()}
    params = {role: budget.params_of(c) for role, c in configs.items()}
    served = bool(cfg.teacher.server)  # then nothing of the teacher is here: no weights, no rollouts, no hidden states
    params.setdefault("teacher", 0)
    precision = budget.PRECISIONS[layout["precision"]]
    memory = device_memory_gib(cfg)
    vllm = cfg.rollout.gpu_memory_utilization * memory if cfg.rollout.engine == "vllm" and memory else None
    largest: dict[str, tuple[dict, budget.StageShape, Any, str]] = {}  # stage -> its largest node's estimate and inputs
    estimates = {}  # node id -> its stage's estimate
    for node in nodes:
        if node.stage == "base":
            continue
        stage = STAGES.get(node.stage)
        st = stage_shape(cfg, node.settings, layout["world"])
        sampler = ("teacher" if not served else None) if stage.samples_from == "teacher" else stage.trains
        stage = replace(stage, needs_teacher=stage.needs_teacher and not served)
        row = estimates[node.id] = budget.stage_estimate(node.stage, stage.trains, params, shapes, st, sampler, stage.needs_teacher,
                                                         precision, layout, vllm)
        if (cfg.backend, node.stage) in budget.HOST_ROLLOUTS:  # every step's rollouts sampled first, held on the host
            cache = budget.host_rollout_bytes(node.settings.steps * node.settings.step_sequences, st.prompt_tokens, st.new_tokens)
            row["host_gib"] += cache / budget.GIB
        if node.stage not in largest or row["device_gib"] > largest[node.stage][0]["device_gib"]:
            largest[node.stage] = (row, st, stage, sampler)
    rows = [{**row, "fixes": _fixes(row, st, stage, sampler, params, shapes, precision, layout, vllm, memory) if memory else []}
            for row, st, stage, sampler in largest.values()]
    phases = phase_report(cfg, nodes, layout, shapes, params, list(loads), memory)
    return {"params": params, "served_teacher": cfg.teacher.server, "backend": cfg.backend, **layout, "device_memory_gib": memory,
            "prompt_tokens": cfg.preflight.prompt_tokens, "stages": rows, "phases": phases,
            "nodes": node_phases(nodes, estimates, phases)}


def node_phases(nodes: list, estimates: dict[str, dict], phases: list[dict[str, Any]]) -> list[dict[str, Any]]:  # noqa: ANN001 - Nodes
    """Every phase each node runs, with what it adds to the memory at its start (`growth_gib`: what phasemem.py
    measures) and the device's total while it runs (`device_gib`): the stage's rollouts, update and reference copy
    (`estimates`: node id -> budget.stage_estimate), evaluating each benchmark, and C2 (from `phases`)."""
    rows = []
    for node in nodes:
        out: dict[str, dict[str, float]] = {}
        if node.id in estimates:
            row = estimates[node.id]
            work = {"rollout": row["rollout_gib"], "update": budget.update_work(row)}
            for name, growth in budget.phase_growth(row).items():  # states (the reference included) plus the phase's work
                out[name] = {"growth_gib": growth, "device_gib": row["states_gib"] + work.get(name, 0.0)}
        for p in phases:
            if p["model"] == node.role and p["phase"].startswith("eval ") or p["phase"] == "c2" and node.stage in C2_STAGES:
                out[p["phase"]] = {"growth_gib": p["work_gib"], "device_gib": p["device_gib"]}
        rows.append({"node": node.id, "stage": node.stage, "role": node.role, "phases": out})
    return rows


def _fixes(row, st, stage, sampler, params, shapes, precision, layout, vllm, memory) -> list[str]:  # noqa: ANN001
    """Settings that make the over-budget stage of estimate `row` fit (empty when it fits as it is): the largest
    micro-batch without and with activation checkpointing, and the largest rollout token budget."""
    if row["device_gib"] <= memory:
        return []
    states = row["states_gib"]
    if states >= memory:
        anchor = f" (GRPO's reference model, {row['reference_gib']:.1f} GiB, included: kl_coef 0 drops it)" if row["reference_gib"] else ""
        return [f"the model states alone take {states:.1f} GiB a rank{anchor}: raise deepspeed.zero_stage, offload, or use more ranks"]

    def update_fits(micro: int, checkpointing: bool) -> bool:  # states plus the update alone (no sampler: no rollout)
        shape = replace(st, micro_batch=micro, checkpointing=checkpointing)
        return budget.stage_estimate(stage.name, stage.trains, params, shapes, shape, None, stage.needs_teacher, precision,
                                     layout)["device_gib"] <= memory

    fixes = []
    if states + budget.update_work(row) > memory:
        options = []
        for checkpointing in sorted({st.checkpointing, True}):
            fitting = next((m for m in range(st.sequences, 0, -1) if update_fits(m, checkpointing)), None)
            if fitting:
                options.append(f"stages.{stage.name}.micro_batch_size <= {fitting}" + (" with gradient_checkpointing: true" if checkpointing else ""))
        fixes.append(" or ".join(options) if options else
                     f"stages.{stage.name}: no micro-batch fits even with gradient_checkpointing (lower max_new_tokens or chunk_size)")
    if vllm is None and states + row["rollout_gib"] > memory:
        room = (memory - states - row["gathered_gib"]) * budget.GIB
        if room <= 0:
            fixes.append(f"sampling gathers the whole {sampler} under ZeRO-3 ({row['gathered_gib']:.0f} GiB): use devices with more memory")
        else:
            fixes.append(f"rollout.max_batch_tokens <= {int(room / shapes[sampler].kv_bytes(precision.weights)):,}")
    return fixes


def refuse_what_does_not_fit(report: dict[str, Any]) -> None:
    """One line naming every stage over the device's memory and what to set for each."""
    over = [r for r in report["stages"] if r["fixes"]]
    late = [r for r in report["phases"] if r["fixes"]]
    if over or late:
        parts = [f"stage {r['stage']} needs about {r['device_gib']:.1f} GiB a rank: set {'; '.join(r['fixes'])}" for r in over]
        parts += [f"{r['phase']} ({r['model']}) needs about {r['device_gib']:.1f} GiB a rank: set {'; '.join(r['fixes'])}" for r in late]
        raise UserError(f"preflight: more than the {report['device_memory_gib']:.0f} GiB a device has (every figure in the table above); "
                        + " | ".join(parts))
