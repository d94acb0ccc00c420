"""Every shipped config loads and validates offline, without building or downloading a model."""

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from s2d_bench import budget
from s2d_bench.config import load_config, shipped_configs
from s2d_bench.errors import UserError
from s2d_bench.models.shapes import SHAPES  # the checkpoints' shapes, written as local folders below (no hub)
from s2d_bench.preflight import check_config

SHIPPED = sorted(shipped_configs())
# Parameter counts of each checkpoint's shape (Qwen3-1.7B counted by benchmarks/stage_steps.py with tied embeddings), so no hub access.
PARAMS = {"Qwen/Qwen3-8B": 8_190_735_360, "Qwen/Qwen3-1.7B": 1_720_574_976,
          "meta-llama/Llama-3.3-70B-Instruct": 70_553_706_496, "meta-llama/Llama-3.1-8B-Instruct": 8_030_261_248}


def test_the_paper_configs_are_shipped():
    assert {"tiny", "paper-qwen3", "paper-llama"} <= set(SHIPPED)


WORLD = {"paper-qwen3": 8, "paper-llama": 32}  # the GPUs each config's header documents


@pytest.fixture(scope="module")
def shape_folders(tmp_path_factory):
    from transformers import LlamaConfig, Qwen3Config

    root = tmp_path_factory.mktemp("shapes")
    for hub_id, (kind, fields) in SHAPES.items():
        (Qwen3Config if kind == "qwen3" else LlamaConfig)(**fields).save_pretrained(root / hub_id)
    return root


def _estimate(name: str, root, overrides=()):
    from s2d_bench import preflight
    from s2d_bench.plan import plan

    from s2d_bench.harness.targets import run_targets

    base = load_config(name)
    paths = [f"{role}.path={root / getattr(base, role).path}" for role in ("teacher", "student") if getattr(base, role).path]
    cfg = load_config(name, [*paths, *overrides])
    data = load_config(name, [f"task.data_dir={SHARED_DATA}"])  # the benchmarks' problem counts, from the shared data
    layout = budget.deepspeed_layout(cfg.deepspeed, WORLD.get(name, SERVED_WORLD.get(name)))
    return preflight.memory_report(cfg, plan(cfg), layout, preflight.eval_loads(run_targets(data, "math_verify", [])))


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_validates(name: str):
    check_config(load_config(name))  # types, ranges, registered names, arm overrides, backend refusals


@pytest.mark.parametrize("name", sorted(WORLD))
def test_the_paper_configs_fit_the_node_they_document(name, shape_folders):
    """The memory model (states, rollout KV, micro-batch activations, logits, teacher) per stage and rank, and the
    phases after each stage (evaluation of each benchmark by each model, C2), against the configs'
    preflight.device_memory_gb: every stage and phase fits as shipped, nothing to change."""
    report = _estimate(name, shape_folders)
    assert report["params"] == {role: PARAMS[getattr(load_config(name), role).path] for role in ("teacher", "student")}
    assert {r["stage"] for r in report["stages"]} == {"teacher_rl", "warmup", "opd", "student_rl"}
    for row in report["stages"]:
        assert row["fixes"] == [] and row["device_gib"] < report["device_memory_gib"], (name, row)
    benchmarks = [b.name for b in load_config(name).eval.benchmarks]
    assert [(r["phase"], r["model"]) for r in report["phases"]] == \
        [(f"eval {b}", role) for b in benchmarks for role in ("student", "teacher")] + [("c2", "both")]
    for row in report["phases"]:
        assert row["fixes"] == [] and row["device_gib"] < report["device_memory_gib"], (name, row)


SERVED_WORLD = {"paper-llama-served": 8}  # the trainer's GPUs; the served teacher's are the server's


def test_paper_llama_with_a_served_teacher_fits_80_gb_gpus(shape_folders):
    """The 70B teacher on its own server: the trainer's ranks hold the 8B student alone (no gathered teacher, no teacher
    rollouts or hidden states), so every stage and phase fits 8 GPUs of 80 GB, where paper-llama's warmup needs about
    149 GiB a rank of 32."""
    served = _estimate("paper-llama-served", shape_folders)
    local = _estimate("paper-llama", shape_folders)
    assert served["params"]["teacher"] == 0 and served["served_teacher"] and served["device_memory_gib"] < 80
    assert {r["stage"] for r in served["stages"]} == {"warmup", "opd", "student_rl"}
    for row in served["stages"] + served["phases"]:
        assert row["fixes"] == [] and row["device_gib"] < served["device_memory_gib"], row
        assert row.get("teacher_hidden_gib", 0.0) == 0.0
    assert {r["model"] for r in served["phases"]} == {"student"}  # the teacher is evaluated on its server
    warmup = {r["stage"]: r for r in served["stages"]}["warmup"]
    assert warmup["rollout_gib"] == 0.0  # the server samples the warmup's rollouts
    assert warmup["device_gib"] < {r["stage"]: r for r in local["stages"]}["warmup"]["device_gib"] / 4


def test_the_preflight_refuses_what_does_not_fit_and_names_the_settings(shape_folders):
    from s2d_bench.preflight import refuse_what_does_not_fit

    whole = _estimate("paper-qwen3", shape_folders, ["stages.teacher_rl.micro_batch_size=0", "rollout.max_batch_tokens=0"])
    with pytest.raises(UserError, match=r"stage teacher_rl needs about .* GiB a rank.*stages.teacher_rl.micro_batch_size <= \d+ "
                                        r"with gradient_checkpointing: true; rollout.max_batch_tokens <= [\d,]+"):
        refuse_what_does_not_fit(whole)
    unbounded = _estimate("paper-qwen3", shape_folders, ["eval.max_batch_tokens=0"])  # 32 problems x 16 samples of 8k tokens
    assert unbounded["phases"][1]["device_gib"] > 500 and unbounded["phases"][1]["batch"] == 32
    with pytest.raises(UserError, match=r"eval math500 \(teacher\) needs about .* GiB a rank: set eval.max_batch_tokens <= [\d,]+ .*"
                                        r"c2 \(both\) needs about"):
        refuse_what_does_not_fit(unbounded)
    small = _estimate("paper-llama", shape_folders, ["preflight.device_memory_gb=80"])  # 80 GB GPUs: the 70B cannot be gathered
    with pytest.raises(UserError, match="sampling gathers the whole teacher under ZeRO-3"):
        refuse_what_does_not_fit(small)


def test_a_misspelt_backend_or_benchmark_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match="Did you mean 'deepspeed'"):
        check_config(load_config("paper-qwen3", ["backend=deepspeeed"]))
    with pytest.raises(UserError, match="unknown benchmark"):
        check_config(load_config("paper-qwen3", ["task.test_benchmark=math5000"]))


def test_memory_estimate_by_hand():
    """8e9 params, bf16 mixed, 8 ranks: ZeRO-2 keeps 2 B weights + (2 + 12) / 8 B per param on each GPU."""
    device, host = budget.trained_bytes(8_000_000_000, budget.BF16_MIXED, 2, 8, False, False)
    assert device == pytest.approx(8e9 * (2 + 14 / 8)) and host == 0
    device, host = budget.trained_bytes(8_000_000_000, budget.BF16_MIXED, 3, 8, True, True)
    assert device == pytest.approx(8e9 * 2 / 8) and host == pytest.approx(8e9 * 14 / 8)  # grads stay; weights + Adam to host
    assert budget.trained_bytes(10, budget.FP32, 0, 4, False, False) == (160, 0.0)  # no ZeRO: nothing sharded


def test_the_paper_configs_evaluate_math_and_aime_after_every_stage_without_thinking():
    for name in ("paper-qwen3", "paper-llama"):
        cfg = load_config(name)
        assert [b.name for b in cfg.eval.benchmarks] == ["math500", "aime24", "aime25"]
        assert all(b.samples == 16 for b in cfg.eval.benchmarks) and cfg.prompt.thinking is False


def test_an_installed_wheel_carries_and_validates_every_shipped_config(tmp_path):
    """The configs are package data: built into a wheel, installed without dependencies into a bare target and
    imported from another working directory (so no source tree is on the path), every one loads, validates and
    is listed by `s2d-bench ls`."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # a copy, so building leaves no build/ or egg-info in the checkout
    shutil.copytree(root / "s2d_bench", src / "s2d_bench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], check=True)
    (wheel,) = (tmp_path / "dist").glob("s2d_bench-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    script = ("import s2d_bench, json\nfrom s2d_bench.config import load_config, shipped_configs\n"
              "from s2d_bench.preflight import check_config\n"
              "names = list(shipped_configs())\n"
              "for n in names: check_config(load_config(n))\n"
              "print(json.dumps({'file': s2d_bench.__file__, 'names': names}))")
    out = json.loads(subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, check=True,
                                    capture_output=True, text=True).stdout)
    assert out["file"].startswith(str(tmp_path / "site"))  # the wheel's copy, not the checkout's
    assert set(out["names"]) == set(SHIPPED)
    listed = subprocess.run([sys.executable, "-m", "s2d_bench.cli", "ls"], cwd=elsewhere, env=env, check=True,
                            capture_output=True, text=True).stdout
    configs = listed.split("configs:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in configs] == SHIPPED
    assert all(str(tmp_path / "site") in line for line in configs)
