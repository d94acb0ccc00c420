"""The distillation stages' teacher in a process of its own (config `teacher_process`, backends/teacher_process.py): the
same rollouts, losses, metrics and weights as the teacher in the trainer, bit for bit, with the trainer's micro-batches;
the trainer itself samples nothing for the warmup; a teacher process that dies or fails ends the stage with its error."""

import os
import signal

import pytest
import torch
from test_contract import _inputs

from s2d_bench.backends import teacher_process, torch_backend
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.stages import STAGES

SETTINGS = ["steps=3", "temperature=0.9", "max_new_tokens=6"]


def _stage(stage, overrides):
    x = _inputs("torch", stage, [f"stages.{stage}.{s}" for s in SETTINGS] + overrides)
    STAGES.get(stage).run(x)
    return x


@pytest.mark.parametrize("stage, micro, threads", [("warmup", 0, 1), ("warmup", 3, 2), ("opd", 0, 2), ("opd", 3, 1)])
def test_the_teacher_in_its_own_process_trains_the_same_student_bit_for_bit(stage, micro, threads):
    """8 sequences a step in one pass, or in passes of 3, 3 and 2; at 1 thread, or 2 split between the processes (the
    trainer's own count back after the stage): every logged number and every weight equal."""
    mb = [f"stages.{stage}.micro_batch_size={micro}"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        here = _stage(stage, mb)
        apart = _stage(stage, [*mb, "teacher_process=true"])
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert apart.backend.teacher_process and not here.backend.teacher_process
    assert apart.logged == here.logged and len(here.logged) == 3
    assert all(torch.equal(a, b) for a, b in zip(apart.model.state_dict().values(), here.model.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(apart.model.state_dict().values(), _inputs("torch", stage).model.state_dict().values()))


def test_the_warmup_asks_each_step_once_and_a_step_ahead_and_samples_nothing_in_the_trainer(monkeypatch):
    """...and trains with its share of the stage's threads (2: one each)."""
    asked, opened, threads = [], [], []
    real_ask, real_engine, real_update = teacher_process.TeacherProcess._ask_rollouts, TorchBackend._engine, torch_backend.distill_update

    def ask(self, key, sampling, size):
        asked.append((key, len(self._asked)))  # what was still unanswered when it was asked
        return real_ask(self, key, sampling, size)

    def engine(self, model, tok, trained):
        opened.append(model)
        return real_engine(self, model, tok, trained)

    def update(*args):
        threads.append(torch.get_num_threads())
        return real_update(*args)

    monkeypatch.setattr(teacher_process.TeacherProcess, "_ask_rollouts", ask)
    monkeypatch.setattr(TorchBackend, "_engine", engine)
    monkeypatch.setattr(torch_backend, "distill_update", update)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _stage("warmup", ["teacher_process=true"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert opened == [] and threads == [1, 1, 1]
    keys = [key for key, _ in asked]
    assert len(keys) == 3 and len({str(k) for k in keys}) == 3  # the 3 steps' prompts and seeds, each asked once
    assert [pending for _, pending in asked] == [0, 1, 1]  # step 1 alone, then each next step while the current one is out
    assert all(len(prompts) == 8 == len(seeds) for prompts, seeds in keys)


def test_a_teacher_process_that_dies_or_fails_ends_the_stage_with_its_error(monkeypatch):
    real = teacher_process.TeacherProcess.rollouts

    def killed(self, *args):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return real(self, *args)

    monkeypatch.setattr(teacher_process.TeacherProcess, "rollouts", killed)
    with pytest.raises(RuntimeError, match=r"the teacher process ended \(exit code -9\)"):
        _stage("warmup", ["teacher_process=true"])
    monkeypatch.undo()

    x = _inputs("torch", "opd", [f"stages.opd.{s}" for s in SETTINGS] + ["teacher_process=true"])
    x.teacher.get_decoder().layers[0].self_attn.q_proj.weight.data = torch.zeros(1)  # the teacher's forward fails there
    with pytest.raises(RuntimeError, match=r"(?s)the teacher process failed:.*Traceback.*q_proj"):
        STAGES.get("opd").run(x)
