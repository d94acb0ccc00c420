"""A stage stopped mid-way (a real SIGUSR1, as Slurm sends before a time limit) saves its state, and the stage continued
from that save ends with the weights, metrics and labeled draws of one uninterrupted run, on every backend that
checkpoints (torch, DeepSpeed)."""

import os
import signal

import pytest
import torch
from test_contract import _inputs

from s2d_bench import resume
from s2d_bench.config import CheckpointConfig
from s2d_bench.errors import Stopped
from s2d_bench.stages import STAGES


def _run(backend: str, stage: str, folder, stop_after: int | None = None):
    """The stage on fresh tiny models (same seeds every call), saving into `folder`; SIGUSR1 once `stop_after` steps are logged."""
    x = _inputs(backend, stage, [f"stages.{stage}.steps=4"])
    x.checkpoints = resume.Checkpoints(folder, CheckpointConfig(every_steps=0, every_minutes=0), stage=stage)
    log = x.log

    def logging(row: dict) -> None:
        log(row)
        if stop_after is not None and row["step"] == stop_after - 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    x.log = logging
    with resume.listening(interrupt=False):
        report = STAGES.get(stage).run(x)
    return x, report


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
@pytest.mark.parametrize("stage", ["teacher_rl", "opd"])
def test_a_stage_stopped_at_step_2_and_continued_equals_one_uninterrupted_run(backend, stage, tmp_path, capsys):
    if backend == "deepspeed":
        pytest.importorskip("deepspeed")
    whole, report = _run(backend, stage, tmp_path / "whole")
    assert not (tmp_path / "whole").exists() or not any((tmp_path / "whole").iterdir())  # nothing due, nothing asked: no save

    with pytest.raises(Stopped, match=f"{stage} saved its state at step 2 of 4"):
        _run(backend, stage, tmp_path / "cut", stop_after=2)
    assert [p.name for p in (tmp_path / "cut").iterdir()] == ["step-00000002"]
    capsys.readouterr()
    continued, again = _run(backend, stage, tmp_path / "cut")
    bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith(f"{stage}:") and "|" in line]
    assert " 2/4 " in bars[0] and " 4/4 " in bars[-1]  # the continued stage's bar starts where it continues

    assert [row["step"] for row in continued.logged] == [2, 3]  # steps 0-1 were logged by the stopped run
    assert continued.logged == whole.logged[2:]  # the same losses, rewards, norms from step 2 on
    assert again.labeled_draws == report.labeled_draws and again.steps == 4  # RL: the draws before the stop are kept
    for (name, a), b in zip(whole.model.state_dict().items(), continued.model.state_dict().values()):
        assert torch.equal(a, b), f"{backend} {stage}: {name} differs from the uninterrupted run"


def test_saves_come_every_n_steps_only_the_last_is_kept_and_a_save_cut_short_is_ignored(tmp_path):
    x = _inputs("torch", "opd", ["stages.opd.steps=5"])
    x.checkpoints = resume.Checkpoints(tmp_path, CheckpointConfig(every_steps=2, every_minutes=0), stage="opd")
    seen = []
    x.log = lambda row: seen.append(sorted(p.name for p in tmp_path.iterdir()))
    STAGES.get("opd").run(x)
    # before step s's save: after steps 2 and 4, one save each, the older removed; none after the last step
    assert seen == [[], [], ["step-00000002"], ["step-00000002"], ["step-00000004"]]
    assert x.checkpoints.latest() == (4, tmp_path / "step-00000004")
    (tmp_path / "step-00000009" / "trainer").mkdir(parents=True)  # a save killed before its `complete` marker
    assert x.checkpoints.latest()[0] == 4


def test_a_trainers_state_is_saved_into_a_new_or_used_folder_and_taken_back_exactly_never_code(tmp_path):
    """AdamWTrainer's save makes its folder and the folders above it, and writes over a save already there (a stage
    stopped twice at one step); the load gives back the weights and the optimizer's moments exactly, and refuses a
    state file that would run code when read."""
    import pickle

    from s2d_bench.backends.runtime import LocalRuntime
    from s2d_bench.models.builders import tiny_qwen3_student

    model, _ = tiny_qwen3_student(seed=0)
    trainer = LocalRuntime().trainer(model, lr=1e-2, max_norm=1.0)
    trainer.backward(model(input_ids=torch.tensor([[3, 4, 5]])).logits.square().mean())
    trainer.step()
    folder = tmp_path / "checkpoints" / "step-1"
    trainer.save_state(folder)
    trainer.save_state(folder)
    other, _ = tiny_qwen3_student(seed=1)
    taken = LocalRuntime().trainer(other, lr=1e-2, max_norm=1.0)
    taken.load_state(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in taken.opt.state_dict()["state"].values()]
    assert len(moments) == len(list(model.parameters())) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(moments, [(s["exp_avg"], s["exp_avg_sq"]) for s in trainer.opt.state_dict()["state"].values()]))

    torch.save({"model": _RunsCode(), "optimizer": {}}, folder / "state.pt")
    with pytest.raises(pickle.UnpicklingError):
        taken.load_state(folder)


class _RunsCode:
    def __reduce__(self):  # noqa: ANN204 - what a planted pickle does when read
        return (print, ("this ran",))
