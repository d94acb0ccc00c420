"""resume.py in-process: what a stop request does (a first Ctrl-C or SIGUSR1 asks, a second Ctrl-C stops at once, nested
listeners keep the first request) and when a stage saves (every N steps, every M minutes, when any rank is asked to stop,
never after its last step), on a stand-in trainer. tests/test_resume.py runs the same through `s2d-bench run`."""

import json
import random
import signal

import pytest
import torch

from s2d_bench import resume
from s2d_bench.backends.runtime import LocalRuntime
from s2d_bench.config import CheckpointConfig
from s2d_bench.errors import Stopped


pytestmark = pytest.mark.usefixtures("python_signals")  # conftest: Python's own Ctrl-C handler, no stop asked


def test_a_first_ctrl_c_asks_for_a_stop_and_passes_it_on_and_a_second_stops_at_once(capsys):
    forwarded = []
    with resume.listening(interrupt=True, forward=forwarded.append):
        signal.raise_signal(signal.SIGINT)
        assert resume.stop_requested() == "SIGINT" and forwarded == [signal.SIGUSR1]
        assert capsys.readouterr().err == "\nstopping after this step, once its state is saved (Ctrl-C again to stop now)\n"
        signal.raise_signal(signal.SIGUSR1)  # asked again, not by Ctrl-C: nothing more
        assert resume.stop_requested() == "SIGINT" and forwarded == [signal.SIGUSR1]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers it replaced are back
    with pytest.raises(Stopped, match=r"stage x; stopped \(SIGINT\)"):
        resume.stop_if_requested("stage x")


def test_sigusr1_asks_quietly_and_twice_is_once_and_a_nested_listener_keeps_the_request(capsys):
    with resume.listening(interrupt=False):
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR1)
        with resume.listening(interrupt=False):  # a stage's listener inside the run's: what was asked stays asked
            assert resume.stop_requested() == "SIGUSR1"
        assert resume.stop_requested() == "SIGUSR1"
    assert capsys.readouterr().err == ""
    with resume.listening(interrupt=False):  # a new outermost listener starts with no request
        assert resume.stop_requested() is None


class _Trainer:
    """What a step depends on, as a Trainer saves and loads it."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def save_state(self, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.json").write_text(json.dumps(self.value))

    def load_state(self, folder):
        self.value = json.loads((folder / "state.json").read_text())


class _AnotherRankAsked(LocalRuntime):
    def most(self, n: int) -> int:  # another rank was asked to stop: the step's collective answers 2
        return max(n, 2)


def _saves(folder):
    return sorted(p.name for p in folder.glob("step-*"))


def test_saves_come_every_m_minutes_counted_from_the_start_a_continuation_and_the_last_save(tmp_path, monkeypatch, capsys):
    clock = [1000.0]
    monkeypatch.setattr(resume.time, "monotonic", lambda: clock[0])
    ck = resume.Checkpoints(tmp_path, CheckpointConfig(every_steps=0, every_minutes=2), stage="opd")
    rng, rt, trainer = random.Random(0), LocalRuntime(), _Trainer(7)
    for done, now, expected in [(1, 1119.9, []), (2, 1120.0, ["step-00000002"]), (3, 1239.9, ["step-00000002"]),
                                (4, 1240.0, ["step-00000004"])]:
        clock[0] = now
        ck.step_done(done, 10, trainer, rt, rng, {})
        assert _saves(tmp_path) == expected, (done, now)
    clock[0] = 5000.0  # a continued stage counts from when it continued
    again = resume.Checkpoints(tmp_path, CheckpointConfig(every_steps=0, every_minutes=2), stage="opd")
    clock[0] = 6000.0
    assert again.resume(_Trainer(), rng)[0] == 4
    assert capsys.readouterr().err == "opd: continuing from its saved state at step 4\n"
    assert resume.Checkpoints(tmp_path, again.cfg, "opd", main=False).resume(_Trainer(), rng)[0] == 4  # one rank says so
    assert capsys.readouterr().err == ""
    clock[0] = 6119.0
    again.step_done(5, 10, trainer, rt, rng, {})
    assert _saves(tmp_path) == ["step-00000004"]
    clock[0] = 6120.0
    again.step_done(6, 10, trainer, rt, rng, {})
    assert _saves(tmp_path) == ["step-00000006"]


def test_the_last_step_saves_nothing_and_a_save_cut_short_of_the_same_step_is_replaced(tmp_path):
    ck = resume.Checkpoints(tmp_path, CheckpointConfig(every_steps=1, every_minutes=0), stage="opd")
    rng, rt = random.Random(0), LocalRuntime()
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / "step-00000003" / "debris").write_text("a save killed mid-way")
    ck.step_done(3, 4, _Trainer(3), rt, rng, {"draws": ["a"]})
    assert _saves(tmp_path) == ["step-00000003"] and not (tmp_path / "step-00000003" / "debris").exists()
    ck.step_done(4, 4, _Trainer(4), rt, rng, {})  # the model itself is saved next
    assert _saves(tmp_path) == ["step-00000003"]
    trainer, later = _Trainer(), random.Random(5)
    torch.manual_seed(99)
    assert ck.resume(trainer, later) == (3, {"draws": ["a"]}) and trainer.value == 3
    assert later.getstate() == rng.getstate()


def test_a_stop_asked_of_another_rank_saves_and_stops_this_one_naming_why(tmp_path):
    ck = resume.Checkpoints(tmp_path, CheckpointConfig(every_steps=0, every_minutes=0), stage="warmup")
    with pytest.raises(Stopped) as stopped:
        ck.step_done(3, 8, _Trainer(3), _AnotherRankAsked(), random.Random(0), {})
    assert stopped.value.reason == "another rank was asked to"
    assert stopped.value.what == f"warmup saved its state at step 3 of 8 ({tmp_path})" and _saves(tmp_path) == ["step-00000003"]
    resume._requested.append("SIGUSR1")
    with pytest.raises(Stopped) as stopped:
        ck.step_done(4, 8, _Trainer(4), LocalRuntime(), random.Random(0), {})
    assert stopped.value.reason == "SIGUSR1" and _saves(tmp_path) == ["step-00000004"]


def test_a_continued_stage_keeps_the_metrics_rows_of_the_steps_before_its_save_and_drops_a_cut_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    resume.kept_rows(metrics, 3)
    assert not metrics.exists()  # a stage that logged nothing
    rows = [json.dumps({"step": s, "loss": s / 10}) for s in range(5)]
    # a line cut by an earlier kill sits among the rows a continued stage appended after it
    metrics.write_text("\n".join([rows[0], '{"step": 1, "lo', *rows[1:2], "", rows[2], json.dumps({"loss": 0.5}), *rows[3:]]) + '\n{"step": 5, "lo')
    resume.kept_rows(metrics, 3)
    assert metrics.read_text() == "".join(line + "\n" for line in [*rows[:3], json.dumps({"loss": 0.5})])  # no step: step 0
    resume.kept_rows(metrics, 1)
    assert metrics.read_text() == "".join(line + "\n" for line in [rows[0], json.dumps({"loss": 0.5})])
    resume.kept_rows(metrics, 0)
    assert metrics.read_text() == ""
