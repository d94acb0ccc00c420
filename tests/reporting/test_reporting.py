"""TensorBoard mirrors metrics.jsonl and the evaluations; curves.png beside every node's metrics."""

import json

import pytest

pytest.importorskip("tensorboard")


def _scalars(folder):
    """{tag: [(step, value), ...]} of every event file under one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_every_step_metric_every_evaluation_and_each_arm_path(tiny_overrides, tmp_path):
    from s2d_bench.config import load_config
    from s2d_bench.pipeline import Runner

    cfg = load_config(None, [*tiny_overrides, "report_to=[tensorboard]", "arms={full: {stages: [teacher_rl, warmup, opd, student_rl]}}"])
    runner = Runner(cfg)
    records = runner.run()
    tb = runner.dir.root / "tb"
    for node in runner.nodes.values():
        rows = [json.loads(line) for line in (runner.dir.node_dir(node) / "metrics.jsonl").read_text().splitlines()]
        scalars = _scalars(tb / node.id)
        prefix = node.stage if node.stage != "base" else f"pretrain_{node.role}"
        numeric = {k for row in rows for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numeric and {f"{prefix}/{k}" for k in numeric} <= set(scalars), node.id
        for key in numeric:
            logged = [(row["step"], row[key]) for row in rows if key in row]
            got = scalars[f"{prefix}/{key}"]
            assert [s for s, _ in got] == [s for s, _ in logged], (node.id, key)
            assert [v for _, v in got] == pytest.approx([v for _, v in logged], rel=1e-6), (node.id, key)  # float32 events
        mine = [r for r in records if r["node"] == node.id]
        assert mine
        for r in mine:
            steps = json.loads((runner.dir.node_dir(node) / "stage.json").read_text())["steps"]
            ((step, value),) = scalars[f"eval/{r['task']}/avg@{r['k']}"]
            assert step == steps and value == pytest.approx(r["mean"], rel=1e-6)
        png = runner.dir.node_dir(node) / "curves.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", node.id
    arm = _scalars(tb / "arms" / "full-seed0")
    path = runner.arm_rows()["full"]
    means = {(r["node"], r["task"]): r["mean"] for r in records}
    for tag, points in arm.items():
        task = tag.split("/")[1]
        assert [s for s, _ in points] == list(range(len(path)))
        assert [v for _, v in points] == pytest.approx([means[(node, task)] for node, _ in path], rel=1e-6)
    Runner(cfg).run()  # a rerun rewrites the arm runs, never appends a second copy
    assert _scalars(tb / "arms" / "full-seed0") == arm


def test_an_unknown_reporter_is_refused_with_a_suggestion():
    from s2d_bench.config import load_config
    from s2d_bench.errors import UserError
    from s2d_bench.preflight import check_config

    with pytest.raises(UserError, match="Did you mean 'tensorboard'"):
        check_config(load_config(None, ["report_to=[tensorbord]"]))


def test_the_curves_show_what_each_stage_optimises(tmp_path):
    import pandas as pd

    from s2d_bench.reporting.curves import panels, plot_metrics

    rl = pd.DataFrame([{"step": 0, "reward": 0.1, "entropy": 1.0, "response_length": 5.0, "kl_reverse": 0.2, "loss": 0.3}])
    assert panels(rl, "teacher_rl") == ["reward", "entropy", "response_length"]
    assert panels(rl, "opd") == ["kl_reverse", "entropy", "response_length"]
    assert panels(rl.drop(columns=["kl_reverse"]), "warmup") == ["entropy", "response_length"]
    assert panels(rl, "base") == ["loss", "entropy", "response_length"]
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("")
    assert plot_metrics(empty, tmp_path / "c.png", "opd", "t") is False and not (tmp_path / "c.png").exists()
