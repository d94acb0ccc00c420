"""Every shipped config loads and validates offline, without building or downloading a model."""

from pathlib import Path

import pytest

from s2d_bench import budget
from s2d_bench.config import PACKAGE_CONFIGS, load_config
from s2d_bench.errors import UserError

SHIPPED = sorted(PACKAGE_CONFIGS.glob("*.yaml"))
# Parameter counts of each checkpoint's shape (Qwen3-1.7B counted by benchmarks/stage_steps.py with tied embeddings), so no hub access.
PARAMS = {"Qwen/Qwen3-8B": 8_190_735_360, "Qwen/Qwen3-1.7B": 1_720_574_976,
          "meta-llama/Llama-3.3-70B-Instruct": 70_553_706_496, "meta-llama/Llama-3.1-8B-Instruct": 8_030_261_248}


def test_the_paper_configs_are_shipped():
    assert {"tiny", "paper-qwen3", "paper-llama"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_config_validates_and_its_stages_fit_the_declared_engine(path: Path):
    cfg = load_config(str(path))  # types, ranges, registered names, arm overrides
    stages = sorted({s for arm in cfg.arms.values() for s in arm.stages})
    if cfg.backend != "deepspeed":
        return
    params = {role: PARAMS[getattr(cfg, role).path] for role in ("teacher", "student")}
    ds = cfg.deepspeed
    rows = budget.stage_estimates(params, stages, budget.BF16_MIXED if ds.bf16 else budget.FP32, ds.zero_stage, 8 * (4 if ds.zero_stage == 3 else 1),
                                  ds.offload_optimizer, ds.offload_params, ds.teacher_zero3)
    for row in rows:  # model states must leave room for activations on an 80 GB GPU
        assert row["device_gib"] < 60, f"{path.stem}: {row['stage']} needs {row['device_gib']:.0f} GiB per GPU for model states"


def test_a_misspelt_backend_or_benchmark_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match="Did you mean 'deepspeed'"):
        load_config("paper-qwen3", ["backend=deepspeeed"])
    with pytest.raises(UserError, match="unknown benchmark"):
        load_config("paper-qwen3", ["task.test_benchmark=math5000"])


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
