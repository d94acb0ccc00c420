"""What a config names and what its backend cannot express: refused by `preflight.check_config`
before any model is built, and from the config alone (config.py imports no registry)."""

import json
import re
import subprocess
import sys

import pytest
from conftest import SERVED_TEACHER

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


def test_each_backend_refusal_says_what_cannot_run_and_what_to_do_instead(monkeypatch):
    """The whole line a user reads for each refusal of backends/refusals.py (the tests above match their first words)."""
    refused = {
        ("backend=trl", *SERVED_TEACHER, "arms={b: {stages: [warmup]}}", "stages.warmup.estimator=topk"):
            "backend=trl: TRL's distillation trainers score with a teacher model resident beside the student; a served teacher "
            "(teacher.server) trains with backend=torch or backend=deepspeed",
        ("backend=trl", "rollout.engine=hf-compiled"):
            "backend=trl: rollout.engine=hf-compiled is not one of TRL's samplers (hf, vllm: its own generate, or its colocated "
            "vLLM); use backend=torch",
        ("backend=trl", "stages.teacher_rl.micro_batch_size=3"):
            "backend=trl: teacher_rl: mini_batches and micro_batch_size must divide the step's 256 sequences evenly (TRL "
            "accumulates equal micro-batches)",
        ("backend=trl", "stages.warmup.temperature=0.7"):
            "backend=trl: warmup.temperature=0.7: TRL's GKD trainer takes the forward KL at temperature 1, ours at the stage's "
            "sampling temperature (as TRL's other trainers do); set temperature: 1.0, or use backend=torch",
        ("backend=trl", "stages.opd.estimator=topk"):
            "backend=trl: opd.estimator=topk has no TRL equivalent (its trainers use the full-vocabulary divergence): set "
            "estimator: full, or use backend=torch",
    }
    for overrides, line in refused.items():
        with pytest.raises(UserError) as refusal:
            _check(*overrides)
        assert str(refusal.value) == line
    _check("backend=trl", "stages.opd.temperature=0.7", "stages.teacher_rl.temperature=0.7")  # their trainers take it
    monkeypatch.setenv("WORLD_SIZE", "8")
    _check("backend=deepspeed", "arms={b: {stages: [opd]}}", "stages.opd.batch_size=8")  # a prompt for each rank is enough
    with pytest.raises(UserError) as refusal:
        _check("backend=deepspeed", "arms={b: {stages: [opd]}}", "stages.opd.batch_size=7")
    assert str(refusal.value) == ("backend=deepspeed: b/opd draws 7 prompts a step for 8 ranks; raise its prompts_per_step/batch_size "
                                  "to at least the number of ranks")


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
    # the fixes a user is offered: GRPO's states over the device with its reference named; a micro-batch without and
    # with checkpointing (down to 1); none fits at any micro-batch; ZeRO-3's gathered model leaving no room to sample
    "paper-qwen3-kl-40gb": ("paper-qwen3", ["stages.teacher_rl.kl_coef=0.05", "preflight.device_memory_gb=40", "rollout.prompts_per_batch=2"], 8),
    "paper-qwen3-no-checkpointing": ("paper-qwen3", ["stages.student_rl.gradient_checkpointing=false", "stages.student_rl.micro_batch_size=64",
                                                     "preflight.device_memory_gb=40"], 8),
    "paper-qwen3-long-opd": ("paper-qwen3", ["stages.opd.max_new_tokens=400000", "preflight.device_memory_gb=80"], 8),
    "paper-qwen3-zero3-20gb": ("paper-qwen3", ["deepspeed.zero_stage=3", "preflight.device_memory_gb=20"], 64),
    # no device memory known (a CPU run): nothing is refused, nothing offered; no C2 without a distillation stage
    "tiny": ("tiny", [], 1),
    "tiny-direct-grpo": ("tiny", ["arms={d: {stages: [student_rl]}}"], 1),
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


def test_a_prompts_context_is_counted_as_the_run_renders_it_thinking_or_not():
    """Qwen3's template closes an empty think block in a non-thinking prompt: 4 tokens a thinking prompt does not have."""
    from types import SimpleNamespace

    from s2d_bench import preflight
    from s2d_bench.generation.protocol import render
    from s2d_bench.models.qwen_bpe import qwen_tokenizer
    from s2d_bench.tasks.base import Problem

    tok = qwen_tokenizer()
    for thinking in (True, False):
        cfg = load_config(None, [f"prompt.thinking={str(thinking).lower()}"])
        context = preflight._config(cfg, "student").max_position_embeddings
        size = len(render(tok, ["1+2="], thinking)[0])
        target = lambda new: SimpleNamespace(problems=[Problem("p", "1+2=", "3")], cfg=SimpleNamespace(max_new_tokens=new))  # noqa: E731
        preflight.check_contexts(cfg, [target(context - size)], {"student": tok})  # exactly the context
        with pytest.raises(UserError, match=f"prompt \\({size} tokens\\) \\+ max_new_tokens"):
            preflight.check_contexts(cfg, [target(context - size + 1)], {"student": tok})
    assert len(render(tok, ["1+2="], False)[0]) == len(render(tok, ["1+2="], True)[0]) + 4


SERVED = [*SERVED_TEACHER, "arms={b: {stages: [student_rl, warmup, opd]}}", "stages.warmup.estimator=topk", "stages.opd.estimator=topk"]


@pytest.mark.parametrize("overrides, message", [
    (["student.builder=", "student.server=http://127.0.0.1:9", "student.served_model=s"],
     "student.server: the student trains here; only the teacher can be served"),
    (["stages.opd.teacher_cache=true"], "arms.b.opd.teacher_cache: only the warmup's teacher rollouts can be cached; opd trains on the "
                                        "student's own samples, new at every step, so there is nothing to reuse"),
    (["arms={b: {stages: [teacher_rl, warmup]}}"], "arms.b: teacher_rl trains the teacher, which lives on teacher.server; serve the "
                                                   "RL-trained teacher (vllm serve CHECKPOINT) and drop teacher_rl from the arm"),
    (["stages.warmup.estimator=full"], "arms.b.warmup.estimator: 'full' needs the teacher's whole vocabulary at every position and a "
                                       "server gives its top-k log-probs; use 'topk'"),
    (["stages.opd.estimator=full"], "arms.b.opd.estimator: 'full' needs the teacher's whole vocabulary at every position and a server "
                                    "gives its top-k log-probs; use 'topk' or 'sampled'"),  # after student_rl, which needs no teacher
    (["stages.opd.temperature=0.7"], "arms.b.opd.temperature: 0.7 with a served teacher; its log-probs are at temperature 1 (vLLM "
                                     "computes prompt log-probs from the raw logits whatever logprobs_mode), so the stage samples at "
                                     "temperature 1"),
    (["arms={b: {stages: [warmup, opd], overrides: {student_rl.lr: 1}}}"],
     "arms.b.overrides: 'student_rl.lr' names a stage the arm does not run (warmup, opd)"),
    (["arms={b: {stages: [opd], overrides: {opd.lr.x: 1}}}"],  # a key's stage is what precedes its first dot
     "unknown key 'arms.b.overrides.opd.lr.x'. Did you mean 'lr'? Known keys: steps, batch_size, lr, temperature, max_new_tokens, "
     "max_grad_norm, estimator, top_k, chunk_size, micro_batch_size, gradient_checkpointing, teacher_cache"),
    (["stages.warmup.estimator=sampled"], "stages.warmup.estimator: 'sampled' is a reverse-KL (OPD only) estimator; use 'full' or 'topk'"),
    (["report_to=[tensorbord]"], "unknown reporter 'tensorbord'. Did you mean 'tensorboard'? Available: tensorboard"),
])
def test_what_a_served_teacher_or_an_arm_cannot_do_is_refused_with_the_fix_in_full(overrides, message):
    with pytest.raises(UserError) as refused:
        _check(*SERVED, *overrides)
    assert str(refused.value) == message


def test_a_served_teachers_warmup_may_cache_its_rollouts():
    _check(*SERVED, "stages.warmup.teacher_cache=true")


def test_a_runs_preflight_checks_at_the_process_groups_size_prints_its_table_and_reaches_the_server(tmp_path, monkeypatch, capsys):
    """preflight.run (a run's, before its first file): the world is the process group's; every benchmark's evaluation is
    in the report and the table on stderr; a served teacher is asked for its tokenizer (here: nobody listens)."""
    from conftest import TINY_OVERRIDES

    from s2d_bench import budget, distributed, preflight
    from s2d_bench.harness.targets import run_targets
    from s2d_bench.plan import plan

    cfg = load_config(None, TINY_OVERRIDES)
    monkeypatch.setattr(distributed, "world", lambda: 4)
    report = preflight.run(cfg, plan(cfg), {}, run_targets(cfg, "math_verify", []))
    assert report["world"] == 4
    assert {p["phase"] for p in report["phases"]} == {"c2", *(f"eval {t}" for t in ("add3mix",))}
    assert capsys.readouterr().err.strip() == budget.render(report).strip()
    served = load_config(None, [*TINY_OVERRIDES, *SERVED_TEACHER, "arms={b: {stages: [warmup]}}", "stages.warmup.estimator=topk",
                                "teacher.http.retries=0"])
    with pytest.raises(UserError, match=r"teacher server http://127.0.0.1:9/v1/models: unreachable"):
        preflight.run(served, plan(served), {}, run_targets(served, "math_verify", []))


def test_a_served_teachers_tokenizer_is_probed_on_prompts_rendered_thinking_and_not(monkeypatch):
    """Qwen3's template renders a non-thinking prompt with an empty think block: both renderings go to the server (its
    check_tokenizer stood in for: tests/served/ asks a real server), with the probe strings."""
    from types import SimpleNamespace

    from s2d_bench import preflight
    from s2d_bench.generation.protocol import render_texts
    from s2d_bench.models.qwen_bpe import qwen_tokenizer
    from s2d_bench.served.teacher import ServedTeacher
    from s2d_bench.tasks.base import Problem

    asked = []
    monkeypatch.setattr(ServedTeacher, "check_tokenizer", lambda self, texts: asked.append(texts))
    tok = qwen_tokenizer()
    cfg = load_config(None, SERVED_TEACHER)
    preflight.check_served_teacher(cfg, tok, [SimpleNamespace(problems=[Problem("a", "1+2=", "3")])])
    plain, thinking = render_texts(tok, ["1+2="], False), render_texts(tok, ["1+2="], True)
    assert plain != thinking and asked == [plain + thinking + preflight.PROBES]


def test_a_runs_preflight_names_the_model_folder_a_tokenizer_is_missing_from(tmp_path):
    from s2d_bench import preflight
    from s2d_bench.models.builders import save, tiny_qwen3_student
    from s2d_bench.plan import plan

    folder = tmp_path / "student"
    save(*tiny_qwen3_student(), folder)
    cfg = load_config(None, ["student.builder=", f"student.path={folder}", "arms={d: {stages: [student_rl]}}"])
    assert preflight.run(cfg, plan(cfg), {}, [])["params"]["student"] > 0
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=rf"^student.path '{re.escape(str(folder))}': no tokenizer files"):
        preflight.run(cfg, plan(cfg), {}, [])
    with pytest.raises(UserError, match=r"^student.path '\./nowhere' does not exist"):
        preflight.offline_report(load_config(None, ["student.builder=", "student.path=./nowhere"]), [], [], 1)


# ---------------------------------------------------------------- the memory check's rules at their edges


def test_a_model_folder_that_cannot_load_is_named_with_its_role_before_anything_runs(tmp_path):
    from s2d_bench import preflight
    from s2d_bench.models.builders import save, tiny_qwen3_student

    folder = tmp_path / "student"
    save(*tiny_qwen3_student(), folder)
    preflight.check_models(load_config(None, ["student.builder=", f"student.path={folder}"]))  # a whole folder passes
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    with pytest.raises(UserError, match=rf"^student.path '{re.escape(str(folder))}': model.safetensors has [\d,]+ bytes where its header describes"):
        preflight.check_models(load_config(None, ["student.builder=", f"student.path={folder}"]))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(UserError, match=rf"^teacher.path '{re.escape(str(folder))}': no tokenizer files"):
        preflight.check_models(load_config(None, ["teacher.builder=", f"teacher.path={folder}"]))


def test_the_device_memory_is_the_configs_else_the_gpus_on_a_gpu_run_else_unknown(monkeypatch):
    """On this CPU-only machine CUDA is stood in for: a run on the GPU reads device 0's memory, a CPU run never does."""
    import torch

    from s2d_bench import budget, preflight

    asked = []

    def properties(index):
        asked.append(index)
        return type("Props", (), {"total_memory": 80 * budget.GIB})()

    assert preflight.device_memory_gib(load_config(None, ["device=cpu"])) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    assert preflight.device_memory_gib(load_config(None, ["device=cpu"])) is None  # a CPU run on a GPU machine
    assert preflight.device_memory_gib(load_config(None, ["device=cuda"])) == 80.0 and asked == [0]
    assert preflight.device_memory_gib(load_config(None, ["device=cuda", "preflight.device_memory_gb=40"])) == 40e9 / budget.GIB


def test_a_phase_that_needs_exactly_the_devices_memory_fits_and_one_over_is_offered_the_largest_batch_that_fits():
    from s2d_bench import budget, preflight

    def estimate(m):  # weights of 2 GiB and 1 GiB of work a problem in the batch
        return {"weights": 2 * budget.GIB, "work": m * budget.GIB}

    def fixes(memory):
        return preflight._phase("eval x", "student", 10, 100, estimate, memory)["fixes"]

    assert fixes(12.0) == [] and fixes(None) == []  # 10 problems need 12 GiB
    for memory, fitting in ((11.0, 9), (10.0, 8), (3.0, 1)):
        assert fixes(memory) == [f"eval.max_batch_tokens <= {fitting * 100:,}"], memory
    assert fixes(2.5) == ["eval x: one problem a batch does not fit; lower max_new_tokens or samples"]


def _row(**gib):
    """A stage estimate's row (budget.stage_estimate) in whole GiB, for the rules of preflight._fixes."""
    return {"reference_gib": 0.0, "gathered_gib": 0.0, "activations_gib": 0.0, "logits_gib": 0.0, "teacher_hidden_gib": 0.0,
            "rollout_gib": 0.0, **gib}


@pytest.mark.parametrize("row, memory, fixes", [
    (_row(device_gib=30.0, states_gib=10.0), 30.0, []),  # exactly the device: fits
    (_row(device_gib=35.0, states_gib=10.0, activations_gib=20.0), 30.0, []),  # states and one update fill it exactly
    (_row(device_gib=35.0, states_gib=10.0, rollout_gib=20.0), 30.0, []),  # states and the rollouts fill it exactly
    (_row(device_gib=40.0, states_gib=30.0, rollout_gib=10.0), 30.0,
     ["the model states alone take 30.0 GiB a rank: raise deepspeed.zero_stage, offload, or use more ranks"]),
    (_row(device_gib=40.0, states_gib=10.0, gathered_gib=20.0, rollout_gib=25.0), 30.0,
     ["sampling gathers the whole student under ZeRO-3 (20 GiB): use devices with more memory"]),  # no room left at all
])
def test_a_stage_that_fills_the_device_exactly_fits_and_one_that_cannot_is_told_why(row, memory, fixes):
    from s2d_bench import preflight

    assert preflight._fixes(row, None, None, "student", None, None, None, None, None, memory) == fixes


def test_a_runs_preflight_reads_a_hub_checkpoints_own_config_not_the_shipped_shape_table(tmp_path, monkeypatch):
    """`s2d-bench plan` may use the table (no hub); a run's memory and context checks read the checkpoint it will load
    (here a cached snapshot of a hub id in the table, holding a tiny model's config)."""
    import huggingface_hub.constants

    from s2d_bench import budget, preflight
    from s2d_bench.models import refs
    from s2d_bench.models.builders import tiny_qwen3_student

    from types import SimpleNamespace

    from s2d_bench.tasks.base import Problem

    model, tok = tiny_qwen3_student()
    snapshot = tmp_path / "hub" / "models--Qwen--Qwen3-1.7B" / "snapshots" / ("0" * 40)
    model.config.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs.hub_offline.cache_clear()
    context = model.config.max_position_embeddings
    long = SimpleNamespace(problems=[Problem("p", "1+2=", "3")], cfg=SimpleNamespace(max_new_tokens=context))  # fits the table's
    try:
        cfg = load_config(None, ["student.builder=", "student.path=Qwen/Qwen3-1.7B"])
        ran = preflight.memory_report(cfg, [], preflight.BASE_LAYOUT)["params"]["student"]
        planned = preflight.offline_report(cfg, [], [], 1)["params"]["student"]
        with pytest.raises(UserError, match=f"exceed the model's context of {context:,} tokens"):
            preflight.check_contexts(cfg, [long], {"student": tok})
    finally:
        refs.hub_offline.cache_clear()
    assert ran == budget.params_of(model.config) == sum(p.numel() for p in model.parameters())
    assert planned > 1e9  # the table's Qwen3-1.7B
