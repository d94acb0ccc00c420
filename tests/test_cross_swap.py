"""benchmarks/cross_swap.py, on a tiny run: the swap trains the right stage from the right inputs with the right seed."""

import importlib.util
import json
from pathlib import Path

from s2d_bench.config import load_config
from s2d_bench.pipeline import Runner

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_swap.py"


def _script():
    spec = importlib.util.spec_from_file_location("cross_swap", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_swapping_a_stage_with_itself_reproduces_its_scores_exactly(tiny_overrides, tmp_path):
    """Against its own grid (`--other torch`), each swapped stage is the original stage, retrained from the same
    inputs with the seed of the stage it stands in for: on the CPU the same model, so every effect is exactly 0.
    A swap that took another parent, teacher, config or seed would move the scores."""
    run_dir = str(tmp_path / "run")
    overrides = [o for o in tiny_overrides if not o.startswith("run_dir=")] + ["arms={full: {stages: [warmup, opd]}}"]
    Runner(load_config(None, [*overrides, f"run_dir={run_dir}"])).run()
    out = tmp_path / "swap.json"
    result = _script().main([*overrides, "--run-dir", run_dir, "--arm", "full", "--stage", "opd", "--other", "torch",
                             "--seeds", "0", "--grid", "config", "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["stage"] == "opd"
    seeded = {k: v for k, v in result["means"].items() if "reseeded" not in k}
    assert len(set(seeded.values())) == 1
    yardstick = "seed yardstick (torch S reseeded - torch S, same inputs)"
    assert all(v == "0.000 [0.000, 0.000]" for k, v in result["effects"].items() if k != yardstick), result["effects"]
    swapped = [p for p in (Path(run_dir) / "nodes").glob("opd-*") if (p / "model").is_dir()]
    assert len(swapped) == 3  # the grid's opd, its stand-in (one serves both directions) and the reseeded one
