"""The contract every registered backend passes: same stages, same records, same errors."""

import pytest
import torch

from s2d_bench.harness.rewards import Scores  # noqa: E402
from s2d_bench.backends import BACKENDS
from s2d_bench.config import load_config
from s2d_bench.errors import UserError
from s2d_bench.models.builders import load_pretrained, save, tiny_qwen3_student
from s2d_bench.pipeline import Runner
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks.base import Splits

STAGE_NAMES = ["teacher_rl", "warmup", "opd", "student_rl"]


@pytest.fixture(params=BACKENDS.names())
def backend(request):
    if request.param in ("trl", "deepspeed"):
        pytest.importorskip(request.param)
    return request.param


def _backend(name: str, cfg):
    return BACKENDS.get(name)(cfg)  # DeepSpeed joins its (one-rank) process group here


def _cfg(tiny_overrides, backend, *extra):
    return load_config(None, [*tiny_overrides, f"backend={backend}", "arms={full: {stages: [teacher_rl, warmup, opd, student_rl]}}", *extra])


def _inputs(backend: str, stage: str, cfg_overrides: list[str] = ()) -> StageInputs:
    """Tiny models on a small add3mix world; the grader rewards even-length answers, so GRPO has signal."""
    from s2d_bench.config import TaskConfig
    from s2d_bench.tasks import TASKS

    cfg = load_config(None, ["stages.teacher_rl.steps=2", "stages.teacher_rl.prompts_per_step=4", "stages.student_rl.steps=2",
                             "stages.student_rl.prompts_per_step=4", "stages.warmup.steps=2", "stages.warmup.batch_size=8",
                             "stages.opd.steps=2", "stages.opd.batch_size=8", "teacher_process=false", *cfg_overrides])
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=16, n_unlabeled=64, n_test=6)).splits()
    model, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    rows: list[dict] = []
    inputs = StageInputs(_backend(backend, cfg), model, teacher, tok, splits, lambda texts, problems: Scores([float(len(t) % 2 == 0) for t in texts]),
                         getattr(cfg.stages, stage), 0, rows.append)
    inputs.logged = rows  # type: ignore[attr-defined]
    return inputs


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_a_stage_changes_the_parameters_logs_metrics_and_saves_a_model_that_reloads(backend, stage, tmp_path):
    x = _inputs(backend, stage)
    before = {k: v.clone() for k, v in x.model.state_dict().items()}
    report = STAGES.get(stage).run(x)
    assert report.steps == 2
    assert any(not torch.equal(before[k], v) for k, v in x.model.state_dict().items()), f"{backend}: {stage} changed nothing"
    assert len(x.logged) == 2 and all({"step", "loss"} <= set(row) for row in x.logged)
    assert (len(report.labeled_draws) == 2 * 4) == STAGES.get(stage).uses_labels  # 2 steps x 4 labeled prompts
    save(x.model, x.tok, tmp_path / "m")
    reloaded, _ = load_pretrained(str(tmp_path / "m"), "cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(reloaded(input_ids=ids).logits, x.model.eval()(input_ids=ids).logits)


def test_the_pipeline_writes_one_record_per_model_with_budget_and_backend(tiny_overrides, backend):
    runner = Runner(_cfg(tiny_overrides, backend))
    records = {r["node"]: r for r in runner.run()}
    stage_nodes = [n for n in runner.nodes.values() if n.stage != "base"]
    assert [n.stage for n in stage_nodes] == STAGE_NAMES
    for node in stage_nodes:
        assert records[node.id]["backend"] == backend and records[node.id]["per_problem"]
        assert (runner.dir.node_dir(node) / "metrics.jsonl").read_text().count("\n") == 2
    assert records[stage_nodes[-1].id]["labeled_per_stage"] == {"teacher_rl": 8, "warmup": 0, "opd": 0, "student_rl": 8}
    assert len(runner.store.evals("tiny")) == len(runner.nodes)


def test_a_teacher_with_another_vocabulary_is_refused_before_any_stage_runs(tiny_overrides, backend, tmp_path):
    model, tok = tiny_qwen3_student(seed=0)
    tok.add_tokens(["<extra>"])
    model.resize_token_embeddings(len(tok))
    save(model, tok, tmp_path / "odd-teacher")
    built_teacher_only = [o for o in tiny_overrides if not o.startswith("teacher.pretrain")]  # a path model is not pretrained
    runner = Runner(_cfg(built_teacher_only, backend, "teacher.builder=", f"teacher.path={tmp_path / 'odd-teacher'}"))
    with pytest.raises(UserError, match="different vocabularies"):
        runner.run()
    assert not list(runner.dir.root.glob("nodes/*/model"))  # refused before anything trained


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_an_empty_prompt_set_is_the_same_clear_error(backend, stage):
    model, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    cfg = load_config()
    inputs = StageInputs(_backend(backend, cfg), model, teacher, tok, Splits([], [], []), lambda texts, problems: Scores([1.0] * len(texts)),
                         getattr(cfg.stages, stage), 0, lambda row: None)
    with pytest.raises(UserError, match=f"{stage}: the task gives no"):
        STAGES.get(stage).run(inputs)


def test_grpo_with_fewer_than_two_samples_is_refused_in_config(backend):
    with pytest.raises(UserError, match="samples_per_prompt >= 2"):
        load_config(None, [f"backend={backend}", "stages.teacher_rl.samples_per_prompt=1"])


@pytest.mark.parametrize("updates, mini", [(2, 1), (1, 2), (2, 2)])
def test_a_grpo_step_is_a_rollout_batch_with_updates_per_batch_optimizer_steps(backend, monkeypatch, updates, mini):
    """`steps` counts rollout batches on every backend; `updates_per_batch` passes over each, `mini_batches`
    optimizer steps per pass. So 2 steps of 4 prompts draw 8 labeled prompts and take 2 x updates x mini
    optimizer steps, whatever counts TRL keeps."""
    calls = []
    real = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    x = _inputs(backend, "teacher_rl", [f"stages.teacher_rl.updates_per_batch={updates}", f"stages.teacher_rl.mini_batches={mini}"])
    report = STAGES.get("teacher_rl").run(x)
    assert (report.steps, len(report.labeled_draws), len(calls)) == (2, 8, 2 * updates * mini)
