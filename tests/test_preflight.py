"""What a config names and what its backend cannot express: refused by `preflight.check_config`
before any model is built, and from the config alone (config.py imports no registry)."""

import json
import subprocess
import sys

import pytest

from s2d_bench.config import load_config
from s2d_bench.errors import UserError
from s2d_bench.preflight import check_config


def _check(*overrides: str):
    return check_config(load_config(None, list(overrides)))


def test_the_default_config_passes_and_comes_back_as_it_was():
    cfg = load_config()
    assert check_config(cfg) is cfg


@pytest.mark.parametrize("override, message", [
    ("arms.bridge.stages=[teacher_rl, warmpu]", "unknown stage 'warmpu'.*Did you mean 'warmup'"),
    ("arms.bridge.overrides.student_rl.steps=3", "names a stage the arm does not run"),
    ("arms.full.overrides.opd.lrr=1", "unknown key 'arms.full.overrides.opd.lrr'"),
    ("eval.benchmarks=[{name: aime42}]", "unknown benchmark 'aime42'"),
    ("rollout.engine=vlm", "Did you mean 'vllm'"),
    ("eval.engine=hff", "unknown engine 'hff'"),
    ("backend=torhc", "Did you mean 'torch'"),
    ("task.name=add3mixx", "unknown task"),
    ("student.builder=tiny-qwen3-studnet", "unknown model"),
    ("stages.warmup.estimator=sampled", "stages.warmup.estimator: 'sampled' is a reverse-KL"),
    ("arms.full.overrides.warmup.estimator=sampled", "arms.full.warmup.estimator: 'sampled'"),
])
def test_what_a_config_names_is_refused_with_the_fix(override, message):
    load_config(None, [override])  # loads: types and ranges are fine
    with pytest.raises(UserError, match=message):
        _check(override)


def test_trl_refuses_estimators_and_micro_batches_it_cannot_express():
    with pytest.raises(UserError, match="backend=trl: opd.estimator=topk has no TRL equivalent"):
        _check("backend=trl", "stages.opd.estimator=topk")
    with pytest.raises(UserError, match="backend=trl: teacher_rl: mini_batches and micro_batch_size must divide the step's 256"):
        _check("backend=trl", "stages.teacher_rl.micro_batch_size=3")  # 32 prompts x 8 samples
    with pytest.raises(UserError, match="must divide"):
        _check("backend=trl", "stages.student_rl.mini_batches=3")
    _check("backend=trl", "stages.teacher_rl.micro_batch_size=4", "stages.student_rl.mini_batches=4")
    _check("backend=torch", "stages.opd.estimator=topk", "stages.teacher_rl.micro_batch_size=3")  # native on torch
    with pytest.raises(UserError, match="backend=trl: rollout.engine=hf-compiled is not one of TRL's samplers"):
        _check("backend=trl", "rollout.engine=hf-compiled")  # TRL samples with its own generate: ours would be ignored
    _check("backend=torch", "rollout.engine=hf-compiled")


def test_deepspeed_refuses_a_step_with_fewer_prompts_than_the_launch_has_ranks(monkeypatch):
    args = ("backend=deepspeed", "arms={b: {stages: [opd]}}", "stages.opd.batch_size=4")
    _check(*args)  # one rank without a launcher
    monkeypatch.setenv("WORLD_SIZE", "8")  # as `deepspeed --num_gpus 8` sets it, before any process group
    with pytest.raises(UserError, match="b/opd draws 4 prompts a step for 8 ranks"):
        _check(*args)
    _check("backend=torch", *args[1:])  # a world is DeepSpeed's


def test_deepspeed_refuses_bf16_without_fp32_gradient_accumulation():
    for zero in (0, 1):
        with pytest.raises(UserError, match=f"deepspeed.bf16 with zero_stage {zero} would accumulate micro-batch gradients in bf16"):
            _check("backend=deepspeed", "deepspeed.bf16=true", f"deepspeed.zero_stage={zero}")
    _check("backend=deepspeed", "deepspeed.bf16=true", "deepspeed.zero_stage=2")
    _check("backend=deepspeed", "deepspeed.bf16=false", "deepspeed.zero_stage=0")
    _check("backend=torch", "deepspeed.bf16=true", "deepspeed.zero_stage=0")  # the section is DeepSpeed's


def test_the_config_module_imports_no_registry_so_there_is_no_import_circle():
    code = "import sys, s2d_bench.config; print(sorted(m for m in sys.modules if m.startswith('s2d_bench.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "s2d_bench.config" in loaded
    for module in ("s2d_bench.stages", "s2d_bench.backends", "s2d_bench.tasks", "s2d_bench.models", "s2d_bench.generation"):
        assert f"'{module}" not in loaded, module


def test_a_run_whose_c2_would_not_fit_is_refused_before_anything_trains(tiny_overrides, tmp_path):
    """The phases after a stage count: a device that holds the warmup's update but not C2's batch (the default
    32 test prompts x 4 samples in one batch) refuses the run with the token budget that fits, and nothing is built."""
    from pathlib import Path

    from s2d_bench.pipeline import Runner

    overrides = [*tiny_overrides, "arms={w: {stages: [warmup]}}", "preflight.device_memory_gb=0.064"]
    with pytest.raises(UserError, match=r"c2 \(both\) needs about 0\.\d GiB a rank: set eval.max_batch_tokens <= [\d,]+$"):
        Runner(load_config(None, overrides)).run()
    run_dir = Path(load_config(None, overrides).run_dir)
    assert not (run_dir / "nodes").exists() or not any((run_dir / "nodes").iterdir())


# `s2d-bench plan`'s report (preflight.offline_report: the shipped shape table, no weights) of the paper configs and of
# variants that reach every part of it: TRL's host-held rollouts, vLLM's share of a GPU, a served teacher, a GPU too
# small (with the settings that would make it fit), C2 scoring, a world of another size. The numbers are the memory
# model's as committed in tests/data/plan_reports.json: a change to the model is a change to that file, made on purpose.
PLAN_CASES = {
    "paper-qwen3": ("paper-qwen3", [], 8),
    "paper-llama": ("paper-llama", [], 32),
    "paper-llama-served": ("paper-llama-served", [], 8),
    "paper-qwen3-trl-vllm": ("paper-qwen3", ["backend=trl", "rollout.engine=vllm", "rollout.gpu_memory_utilization=0.4"], 8),
    "paper-qwen3-24gb": ("paper-qwen3", ["preflight.device_memory_gb=24", "deepspeed.zero_stage=2", "eval.max_batch_tokens=0"], 4),
    "paper-qwen3-kl": ("paper-qwen3", ["stages.teacher_rl.kl_coef=0.05", "stages.student_rl.kl_coef=0.05", "prompt.thinking=true"], 16),
}


def plan_report(name: str, overrides: list[str], world: int) -> dict:
    from conftest import SHARED_DATA

    from s2d_bench import preflight
    from s2d_bench.harness.targets import run_targets
    from s2d_bench.plan import plan

    cfg = load_config(name, [f"task.data_dir={SHARED_DATA}", *overrides])
    report = json.loads(json.dumps(preflight.offline_report(cfg, plan(cfg), run_targets(cfg, "math_verify", []), world), default=str))
    for node in report["nodes"]:  # ids hash the data folder's path, which differs between checkouts: stage and role say which
        node.pop("node")
    return report


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_the_plan_of_each_paper_config_is_the_memory_model_as_committed(case):
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "data" / "plan_reports.json").read_text())[case]
    assert plan_report(*PLAN_CASES[case]) == golden


def test_every_benchmarks_prompts_are_checked_against_each_models_context_before_anything_trains():
    from types import SimpleNamespace

    from s2d_bench import preflight
    from s2d_bench.models.builders import char_tokenizer
    from s2d_bench.tasks.base import Problem

    cfg = load_config(None, [])
    context = preflight._config(cfg, "student").max_position_embeddings
    tok = char_tokenizer()
    fits = SimpleNamespace(problems=[Problem("short", "1+2=", "3")], cfg=SimpleNamespace(max_new_tokens=16))
    preflight.check_contexts(cfg, [fits], {"student": tok, "teacher": tok})
    long = SimpleNamespace(problems=[Problem("ok", "1+2=", "3"), Problem("long", "1" * context, "0")], cfg=SimpleNamespace(max_new_tokens=16))
    with pytest.raises(UserError, match=f"problem long: its prompt .* does not fit the model's context of {context:,} tokens"):
        preflight.check_contexts(cfg, [fits, long], {"student": tok})
    near = SimpleNamespace(problems=[Problem("near", "1" * (context - 40), "0")], cfg=SimpleNamespace(max_new_tokens=64))
    with pytest.raises(UserError, match="problem near: prompt .* \\+ max_new_tokens \\(64\\) exceed"):
        preflight.check_contexts(cfg, [near], {"teacher": tok})
