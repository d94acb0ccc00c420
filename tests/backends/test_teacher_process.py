"""The warmup's teacher rollouts sampled in a process of their own (config `teacher_process`, backends/teacher_process.py):
the same rollouts, losses, metrics and weights as when the trainer samples them, bit for bit, whether the process takes
over at the first step or later (the trainer samples until it is ready) and whether it is forked or a fresh interpreter;
each step asked one ahead; in on-policy distillation at one thread, shares of the student's samples and the teacher's
forward, the same numbers; a teacher process that dies or fails ends the stage with its error."""

import contextlib
import os
import signal
import time

import pytest
import torch
from conftest import QWEN3_LIKE
from test_contract import _inputs

from s2d_bench.backends import teacher_process, torch_backend
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.models.sequences import completion_hidden
from s2d_bench.stages import STAGES
from s2d_bench.worker_process import Forked

SETTINGS = ["steps=3", "temperature=0.9", "max_new_tokens=6"]


def _stage(stage, overrides):
    x = _inputs("torch", stage, [f"stages.{stage}.{s}" for s in SETTINGS] + overrides)
    x.tok.chat_template = QWEN3_LIKE  # Qwen3's way with `enable_thinking` (the tiny template ignores it): each mode renders apart
    STAGES.get(stage).run(x)
    return x


def _ready_after(monkeypatch, local_steps):
    """The teacher's process is found not ready by the first `local_steps` steps, then waited for: which steps it takes
    over does not depend on how fast it starts."""
    real, checks = teacher_process.TeacherProcess.ready, []

    def ready(self, timeout=0.0):
        checks.append(timeout)
        return len(checks) > local_steps and real(self, 120)

    monkeypatch.setattr(teacher_process.TeacherProcess, "ready", ready)


def _trainers_rollouts(thinking: bool):  # noqa: ANN202 - teacher, tok, prompts, seeds, sampling, rollouts
    """A teacher and the rollouts the trainer's own engine samples from it, prompts rendered as `thinking` says (a
    Qwen3-style template, which tells the two modes apart): what the teacher's process must answer."""
    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.engine import open_rollouts
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.models.builders import tiny_qwen3_student

    teacher, tok = tiny_qwen3_student(seed=1)
    tok.chat_template = QWEN3_LIKE
    prompts, seeds, sampling = ["12+30=", "7+8=", "100+1="], [5, 6, 7], Sampling(k=1, temperature=1.0, max_new_tokens=6)
    with open_rollouts(RolloutConfig(), teacher.eval(), tok, thinking, trained=False) as engine:
        return teacher, tok, prompts, seeds, sampling, engine.rollouts(prompts, sampling, seeds)


def _fresh_interpreter(monkeypatch):
    """The teacher's process started as where it cannot be forked (a share of more than one thread, CUDA, not Linux)."""
    monkeypatch.setattr(teacher_process, "forks", lambda threads: False)


@pytest.mark.parametrize("threads, local, mb, fresh", [(1, 0, [], False), (2, 1, [], False), (1, 0, ["prompt.thinking=true"], False),
                                                       (1, 1, [], True)],
                         ids=["one-thread", "two-threads-later", "thinking-prompts", "fresh-interpreter"])
def test_teacher_rollouts_from_their_own_process_train_the_same_student_bit_for_bit(threads, local, mb, fresh, monkeypatch):
    """At 1 thread, or 2 split between the processes (the trainer's own count back after the stage); from the first step
    or the second; prompts rendered for thinking too; forked or a fresh interpreter: every logged number and every
    weight equal."""
    stage = "warmup"
    if fresh:
        _fresh_interpreter(monkeypatch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        here = _stage(stage, mb)
        _ready_after(monkeypatch, local)
        apart = _stage(stage, [*mb, "teacher_process=true"])
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert apart.backend.teacher_process and not here.backend.teacher_process
    assert apart.logged == here.logged and len(here.logged) == 3
    assert all(torch.equal(a, b) for a, b in zip(apart.model.state_dict().values(), here.model.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(apart.model.state_dict().values(), _inputs("torch", stage).model.state_dict().values()))


@pytest.mark.parametrize("local", [0, 1])
def test_the_warmup_asks_each_step_once_and_a_step_ahead_once_its_teacher_process_is_ready(monkeypatch, local):
    """Steps before it is ready are sampled by the trainer, and the first it is ready at too, while the process samples
    the next; the trainer trains with its share of the stage's threads."""
    asked, sampled, threads = [], [], []
    real_ask, real_engine, real_update = teacher_process.TeacherProcess._ask_rollouts, TorchBackend._engine, torch_backend.distill_update

    def ask(self, key, sampling):
        asked.append((key, len(self._asked)))  # what was still unanswered when it was asked
        return real_ask(self, key, sampling)

    @contextlib.contextmanager
    def engine(self, model, tok, trained):
        with real_engine(self, model, tok, trained) as live:
            rollouts = live.rollouts
            live.rollouts = lambda prompts, sampling, seeds: sampled.append((list(prompts), list(seeds))) or rollouts(prompts, sampling, seeds)
            yield live

    def update(*args):
        threads.append(torch.get_num_threads())
        return real_update(*args)

    monkeypatch.setattr(teacher_process.TeacherProcess, "_ask_rollouts", ask)
    monkeypatch.setattr(TorchBackend, "_engine", engine)
    monkeypatch.setattr(torch_backend, "distill_update", update)
    _ready_after(monkeypatch, local)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _stage("warmup", ["teacher_process=true"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    keys = [key for key, _ in asked]
    # the first step it is ready at is sampled here while it samples the next: local + 1 here, the rest there
    assert len(sampled) == local + 1 and len(keys) == 2 - local and threads == [1, 1, 1]
    assert len({str(k) for k in sampled + keys}) == 3  # the 3 steps' prompts and seeds, each sampled once, here or there
    assert [pending for _, pending in asked] == [0, 1][: 2 - local]  # the first alone, then each next while one is out
    assert all(len(prompts) == 8 == len(seeds) for prompts, seeds in sampled + keys)


@pytest.mark.parametrize("local", [0, 1], ids=["ready-at-once", "ready-later"])
def test_on_policy_distillation_shares_the_students_samples_and_the_teachers_forward_bit_for_bit(monkeypatch, local):
    """The student samples, the last half of each step's prompts in the teacher's process (sent the student's weights of
    that step), and the process runs the last rows of each micro-batch's teacher forward (the trainer the first, after
    the student's forward); it never samples the teacher: every logged number and weight as with the teacher in the
    trainer, all of it here until the process is ready (asked at each step's sampling and each micro-batch)."""
    asked, sampled = [], []
    real_hidden, real_samples = teacher_process.TeacherProcess.ask_hidden, teacher_process.TeacherProcess.ask_samples
    monkeypatch.setattr(teacher_process.TeacherProcess, "ask_hidden", lambda self, b: asked.append(("hidden", len(b.input_ids))) or real_hidden(self, b))
    monkeypatch.setattr(teacher_process.TeacherProcess, "ask_samples",
                        lambda self, student, rows, *a: asked.append(("samples", len(rows))) or real_samples(self, student, rows, *a))
    monkeypatch.setattr(teacher_process.TeacherProcess, "_ask_rollouts", lambda self, *a: sampled.append(a))
    monkeypatch.setattr(teacher_process, "process_share", lambda *a: 0.5)  # half of each each side (timed below)
    here = _stage("opd", ["stages.opd.micro_batch_size=4"])
    _ready_after(monkeypatch, local)
    apart = _stage("opd", ["teacher_process=true", "stages.opd.micro_batch_size=4"])
    assert apart.backend.teacher_process and sampled == []
    step = [("samples", 4), ("hidden", 2), ("hidden", 2)]  # 8 prompts a step, 2 micro-batches of 4 rows
    assert asked == (step * 3)[local:]
    assert apart.logged == here.logged and len(here.logged) == 3
    assert all(torch.equal(a, b) for a, b in zip(apart.model.state_dict().values(), here.model.state_dict().values()))


def test_the_warmups_process_is_given_no_student(monkeypatch):
    """Only on-policy distillation asks its process for the student's samples: the warmup's holds (and a fresh interpreter
    is sent) the teacher alone."""
    started, real = [], teacher_process.TeacherProcess.__init__
    monkeypatch.setattr(teacher_process.TeacherProcess, "__init__", lambda self, *args: started.append(args) or real(self, *args))
    _stage("warmup", ["teacher_process=true"])
    assert len(started) == 1 and started[0][4] is None


def test_on_policy_distillation_over_more_threads_starts_no_teacher_process(monkeypatch):
    """At two threads the trainer keeps them (the process would take one, which moves the bits and measured no faster)."""
    started = []
    monkeypatch.setattr(teacher_process.TeacherProcess, "__init__", lambda self, *args: started.append(args))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = _stage("opd", ["teacher_process=true"])
    finally:
        torch.set_num_threads(before)
    assert x.backend.teacher_process and started == [] and len(x.logged) == 3


class _Helper:
    """A teacher's process answering in this one: hidden states and samples as the real one computes them, taking the
    seconds it is told to say; `ready` as told."""

    def __init__(self, teacher, engine=None, seconds=0.0, ready=True):
        self.teacher, self.engine, self.seconds, self.is_ready, self.asked = teacher, engine, seconds, ready, []

    def ready(self):
        return self.is_ready

    def ask_hidden(self, batch):
        self.asked.append(batch)

    def ask_samples(self, student, rows, seeds, sampling):
        self.asked.append((rows, seeds, sampling))

    def answer(self):
        request = self.asked[-1]
        if isinstance(request, tuple):
            rows, seeds, sampling = request
            return [c.ids for c in self.engine.generate_ids(rows, sampling, seeds)], self.seconds
        with torch.no_grad():
            return completion_hidden(self.teacher, request), self.seconds


def _clock(*times):
    ticks = iter(times)
    return lambda: next(ticks)


def _batch(rows):
    from s2d_bench.models.sequences import join

    g = torch.Generator().manual_seed(0)
    completions, mask = torch.randint(3, 60, (rows, 5), generator=g), torch.ones(rows, 5)
    mask[::2, 3:] = 0
    return join([[4 + i % 5] * (3 + i % 3) for i in range(rows)], completions, mask, 0)


def test_the_teachers_forward_split_times_both_sides_and_sets_the_next_share():
    """The process takes the last rows; the trainer times the student's forward and its own rows and the process says
    its seconds: the next share ends both together (`process_share` of those times), and the hidden states are the
    teacher's over the whole micro-batch, bit for bit; all rows there runs none here."""
    from s2d_bench.models.builders import tiny_qwen3_student

    teacher, _ = tiny_qwen3_student(seed=1)
    batch = _batch(10)
    with torch.no_grad():
        whole = completion_hidden(teacher, batch)
    helper = _Helper(teacher, seconds=0.8)
    split = teacher_process.SplitTeacher(teacher, helper, clock=_clock(10.0, 10.2, 10.5))
    mine, hidden = split.hidden(batch, lambda: "the student's")
    assert mine == "the student's" and torch.equal(hidden, whole)
    assert torch.equal(helper.asked[0].input_ids, batch.input_ids[5:])  # half of 10 rows there at first
    # 0.2 s of the student, 0.3 s for 5 rows here (0.06 a row), 0.8 s for 5 there (0.16): 6.36 rows here next
    assert split.shares == {"hidden": pytest.approx(1 - (10 * 0.16 - 0.2) / (0.06 + 0.16) / 10), "samples": 0.5}
    split.clock = _clock(0.0, 0.1, 0.1)
    split.shares["hidden"] = 1.0  # every row there: no forward here, the process's rate stands in for the trainer's
    assert torch.equal(split.hidden(batch, lambda: None)[1], whole) and torch.equal(helper.asked[1].input_ids, batch.input_ids)
    assert split.shares["hidden"] == pytest.approx(teacher_process.process_share(10, 0.1, 0.08, 0.08))


@pytest.mark.parametrize("rows, share, ready, asked", [(1, 0.5, True, None), (2, 0.5, True, 1), (10, 0.01, True, 1), (10, 0.5, False, None)],
                         ids=["one-row", "two-rows", "a-small-share", "not-ready"])
def test_the_process_takes_one_row_at_least_and_none_of_one_row_or_before_it_is_ready(rows, share, ready, asked):
    from s2d_bench.models.builders import tiny_qwen3_student

    teacher, _ = tiny_qwen3_student(seed=1)
    batch = _batch(rows)
    helper = _Helper(teacher, ready=ready)
    split = teacher_process.SplitTeacher(teacher, helper, clock=_clock(0.0, 0.1, 0.2))
    split.shares["hidden"] = share
    with torch.no_grad():
        assert torch.equal(split.hidden(batch, lambda: None)[1], completion_hidden(teacher, batch))
    assert [len(b.input_ids) for b in helper.asked] == ([] if asked is None else [asked])


def test_the_students_samples_split_are_the_engines_and_set_the_next_share():
    """The process samples the last prompts (their rows and seeds): the rollouts are the engine's alone, text and batch,
    and the next share ends both together; an engine that takes no token rows samples them all."""
    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.engine import open_rollouts
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.models.builders import tiny_qwen3_student

    student, tok = tiny_qwen3_student(seed=2)
    prompts, seeds, sampling = ["12+30=", "7+8=", "100+1=", "5+5="], [5, 6, 7, 8], Sampling(k=2, temperature=1.0, max_new_tokens=6)
    with open_rollouts(RolloutConfig(), student, tok, False, trained=True) as engine:
        alone = engine.rollouts(prompts, sampling, seeds)
        helper = _Helper(None, engine, seconds=0.3)
        split = teacher_process.SplitTeacher(None, helper, clock=_clock(1.0, 1.4))
        shared = split.rollouts(engine, student, prompts, sampling, seeds)
    assert shared.texts == alone.texts and shared.k == 2
    assert all(torch.equal(a, b) for a, b in zip(vars(shared.batch).values(), vars(alone.batch).values()) if isinstance(a, torch.Tensor))
    assert helper.asked[0][1] == [7, 8]  # the last 2 prompts' seeds there
    assert split.shares == {"hidden": 0.5, "samples": pytest.approx(1 - (4 * 0.15) / (0.2 + 0.15) / 4)}  # 0.4 s for 2 here, 0.3 there
    split.shares["samples"], split.clock = 1.0, _clock(2.0, 2.0)  # every prompt there: its rate stands in for the trainer's
    with open_rollouts(RolloutConfig(), student, tok, False, trained=True) as engine:
        assert split.rollouts(engine, student, prompts, sampling, seeds).texts == alone.texts
    assert helper.asked[1][1] == seeds and split.shares["samples"] == pytest.approx(0.5)

    class NoRows:
        def rollouts(self, *args):
            return args

    assert split.rollouts(NoRows(), student, prompts, sampling, seeds) == (prompts, sampling, seeds)


def test_the_process_takes_the_share_that_ends_both_sides_together():
    """The trainer's work before its rows plus its rows take as long as the process's rows, by the last call's times; all
    rows go to the process when the trainer's own work outlasts them; the process's rate stands in for the trainer's
    when the trainer had no rows."""
    assert teacher_process.process_share(100, 0.02, 0.001, 0.001) == pytest.approx(0.6)  # 40 rows here after 20 ms: 60 ms each
    assert teacher_process.process_share(100, 0.0, 0.001, 0.003) == pytest.approx(0.25)  # a slower process takes fewer
    assert teacher_process.process_share(100, 0.02, None, 0.002) == pytest.approx(0.55)
    assert teacher_process.process_share(10, 1.0, 0.001, 0.001) == 1.0
    assert teacher_process.process_share(10, 0.0, 0.001, 1.0) == pytest.approx(0.001 / 1.001)


def test_a_teacher_process_that_dies_or_fails_ends_the_stage_with_its_error(monkeypatch):
    real = teacher_process.TeacherProcess.rollouts

    def killed(self, *args):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return real(self, *args)

    _ready_after(monkeypatch, 0)
    monkeypatch.setattr(teacher_process.TeacherProcess, "rollouts", killed)
    with pytest.raises(RuntimeError, match=r"the teacher process ended \(exit code -9\)"):
        _stage("warmup", ["teacher_process=true"])
    monkeypatch.setattr(teacher_process.TeacherProcess, "rollouts", real)

    @contextlib.contextmanager
    def failing(*args, **kwargs):  # the forked process's engine (the trainer's own is torch_backend's)
        class Engine:
            def rollouts(self, *args):
                raise ValueError("the teacher's engine failed here")
        yield Engine()

    monkeypatch.setattr(teacher_process, "open_rollouts", failing)
    with pytest.raises(RuntimeError, match=r"(?s)the teacher process failed:.*Traceback.*the teacher's engine failed here"):
        _stage("warmup", ["teacher_process=true"])


def test_a_stages_threads_are_shared_half_each_the_odd_one_to_the_trainer_and_one_at_least():
    """(teacher process, trainer) shares: the warmup test above sees the trainer's at 2 threads, this the rest."""
    assert [teacher_process.thread_shares(n) for n in (1, 2, 3, 4, 5)] == [(1, 1), (1, 1), (1, 2), (2, 2), (2, 3)]


def test_the_process_is_forked_at_a_one_thread_share_on_linux_without_cuda(monkeypatch):
    """A forked child's parallel region over more than one thread hangs (GNU OpenMP's pool does not survive a fork), and
    CUDA cannot be used after one: those start a fresh interpreter."""
    assert [teacher_process.forks(n) for n in (1, 2)] == [True, False]
    monkeypatch.setattr(teacher_process.torch.cuda, "is_initialized", lambda: True)
    assert not teacher_process.forks(1)


@pytest.mark.parametrize("fresh", [False, True], ids=["forked", "fresh-interpreter"])
def test_the_process_says_when_it_is_ready_samples_what_the_trainer_would_and_stops_or_is_killed(fresh, monkeypatch):
    """Asking whether it is ready never waits (a fresh interpreter is not, at once: it imports torch first), then the
    engine's rollouts for those prompts and seeds, token for token; told to stop when idle (exit 0), killed while it is
    still starting (nothing it would do is kept)."""
    from s2d_bench.config import RolloutConfig

    if fresh:
        _fresh_interpreter(monkeypatch)
    teacher, tok, prompts, seeds, sampling, here = _trainers_rollouts(thinking=False)
    helper = teacher_process.TeacherProcess(teacher, tok, RolloutConfig(), False)
    assert isinstance(helper.proc, Forked) != fresh
    asked = time.monotonic()
    ready = helper.ready()
    assert time.monotonic() - asked < 0.5  # the trainer asks at every step: asking never waits
    assert ready != fresh  # a forked one was waited for as it started (it has everything); a fresh one imports torch first
    # bounded: a teacher never sent would block an unbounded wait forever (and mutmut's limit is CPU time, which it never uses)
    assert helper.ready(120)
    assert helper.rollouts(prompts[:1], seeds[:1], sampling, (prompts, seeds)) is None  # not asked ahead: the trainer's
    there = helper.rollouts(prompts, seeds, sampling, None)  # asked a step ahead
    assert there.texts == here.texts and torch.equal(there.batch.input_ids, here.batch.input_ids)
    helper.close()
    assert helper.proc.returncode == 0

    with monkeypatch.context() as slow:  # one still starting: killed
        slow.setattr(teacher_process, "FORKED_READY_S", 0)
        slow.setattr(teacher_process, "open_rollouts", lambda *a, **k: time.sleep(600))
        starting = teacher_process.TeacherProcess(teacher, tok, RolloutConfig(), False)
    starting.close()
    assert starting.proc.returncode == -signal.SIGKILL


def test_a_process_killed_while_the_teacher_is_sent_or_dead_when_the_stage_ends_closes_without_a_word(monkeypatch):
    """Neither the broken pipe of a teacher still being sent (Ctrl-C as a warmup starts) nor that of a process that died
    (its error is what the stage raises) is raised or printed from a thread when the stage closes it."""
    import threading

    from s2d_bench.config import RolloutConfig
    from s2d_bench.models.builders import tiny_qwen3_student

    thrown = []
    monkeypatch.setattr(threading, "excepthook", thrown.append)
    with monkeypatch.context() as fresh:  # only a fresh interpreter is sent the teacher
        _fresh_interpreter(fresh)
        big = torch.zeros(2**22)  # 16 MiB, more than the socket holds: still being sent when the process is killed
        starting = teacher_process.TeacherProcess(big, None, RolloutConfig(), False)
    starting.close()
    assert starting.proc.returncode == -signal.SIGKILL and thrown == []

    teacher, tok = tiny_qwen3_student(seed=1)  # its rollouts are never asked for
    died = teacher_process.TeacherProcess(teacher, tok, RolloutConfig(), False)
    assert died.ready(120)
    os.kill(died.proc.pid, signal.SIGKILL)
    died.proc.wait()
    died.close()
    assert died.proc.returncode == -signal.SIGKILL and thrown == []


def test_the_process_loop_takes_the_teacher_answers_in_order_reports_failures_and_stops(monkeypatch):
    """The loop the process runs (`_worker`), run here over a pipe: ready once it holds the teacher (and OPD's student),
    each request answered at the threads it was given (the teacher's rollouts, its hidden states, the student's samples
    at the weights sent with them), a failing request answered with its traceback (the loop goes on), and an end on None
    or when the trainer's end closes."""
    import pickle
    import threading
    from multiprocessing import Pipe

    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.engine import open_rollouts
    from s2d_bench.generation.protocol import render
    from s2d_bench.models.builders import tiny_qwen3_student

    teacher, tok, prompts, seeds, sampling, here = _trainers_rollouts(thinking=False)  # the mode a None would not give
    student, _ = tiny_qwen3_student(seed=2)
    rows = render(tok, prompts, False)
    with open_rollouts(RolloutConfig(), teacher, tok, False, trained=True) as engine:  # the weights the samples are asked at
        teachers = [c.ids for c in engine.generate_ids(rows, sampling, seeds)]
    with open_rollouts(RolloutConfig(), student, tok, False, trained=True) as engine:
        assert [c.ids for c in engine.generate_ids(rows, sampling, seeds)] != teachers  # what weights not sent would give
    threads = []
    monkeypatch.setattr(teacher_process.torch, "set_num_threads", threads.append)

    def answer(conn):  # noqa: ANN001, ANN202 - a loop that stopped answering fails the test instead of hanging it
        assert conn.poll(30), "the loop did not answer"
        return pickle.loads(conn.recv_bytes())

    for end in (None, "close"):
        trainer, process = Pipe()
        loop = threading.Thread(target=teacher_process._worker, args=(process,))
        loop.start()
        trainer.send_bytes(pickle.dumps((teacher, tok, RolloutConfig(), False, 3, student)))
        assert answer(trainer) == ("ok", "ready") and threads[-1] == 3
        weights = {name: p.detach() for name, p in teacher.named_parameters()}  # the student's own would sample otherwise
        trainer.send_bytes(pickle.dumps(("samples", weights, rows, seeds, sampling)))
        kind, (ids, seconds) = answer(trainer)
        assert kind == "ok" and ids == teachers and 0 < seconds < 60
        trainer.send_bytes(pickle.dumps(("rollouts", prompts, seeds, sampling)))
        kind, there = answer(trainer)
        assert kind == "ok" and there.texts == here.texts and torch.equal(there.batch.input_ids, here.batch.input_ids)
        trainer.send_bytes(pickle.dumps(("hidden", here.batch.rows(slice(1, 3)))))  # the teacher's hidden states of two rows
        kind, (hidden, seconds) = answer(trainer)
        with torch.no_grad():
            assert kind == "ok" and 0 < seconds < 60 and torch.equal(hidden, completion_hidden(teacher, here.batch)[1:])
        trainer.send_bytes(pickle.dumps(("rollouts", prompts, seeds[:1], sampling)))  # one seed for two prompts
        kind, error = answer(trainer)
        assert kind == "error" and "Traceback" in error and "1 seeds for 3 prompts" in error
        if end is None:
            trainer.send_bytes(pickle.dumps(None))
        else:
            trainer.close()
        loop.join(timeout=30)
        assert not loop.is_alive()
