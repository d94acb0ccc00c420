"""The frozen teacher's work in a process of its own (config `teacher_process`), on a core the trainer leaves free: the
warmup's rollouts, and in on-policy distillation a share of the teacher's forward (`SplitTeacher`).

The teacher's rollouts in stage 2a depend on nothing the student learns, so this process samples step t + 1's while the
trainer runs the teacher and the student over step t's. Measured on the tiny world (2 cores, idle): a warmup step took
0.18 s instead of 0.33 s; sampling was about half of it. The teacher's forward over the rollouts stays with the trainer: moved
here too, it made this process the slower of the two; half of it here (the first half of each step's rows, sent back as
hidden states) made a step slower too (2026-12-06, 12-step warmups of the embedded default's batch: 0.24 to 0.34 s a
step against 0.19 to 0.30 s, the trainer's update alone 0.23 s against 0.19 s with the whole forward in it: two busy
processes slow each other on this machine's two cores). In on-policy distillation at one thread (where the trainer keeps
its threads: with a lone node's two threads in the trainer the embedded default's OPD took 48.4 to 55.2 s in 3 runs of
`make run`, 0.37 of the base teacher's pretraining time in each, and split 55.2 s, 0.39; and a thread count moves the
bits) the student samples and this process would idle: it samples a share of the step's prompts with the student's
weights, and runs a share of each micro-batch's rows of the teacher's forward while the trainer runs the student's
forward and then the other rows (the whole forward here instead once saved nothing: the trainer waited on it). Measured
on the embedded default's batch (2 cores, 2026-12-06, `benchmarks/backend_speed.py`, 8-step stages, 3 rounds): a step
took 397 ms with the teacher in the trainer, 306 with the forward shared, 285 with the samples shared too (sampling half
the prompts took 68 ms of the whole's 110: a decode step's cost is mostly per step, not per row). Until the process is
ready the trainer samples itself, so a short stage does not wait for it, and at the first step it is ready for the
trainer samples that step while the process samples the next (a step the process was not asked for ahead is never waited
for).

Where it can (`forks`: Linux, a one-thread share, no CUDA in the trainer) the process is forked from the trainer's: it
starts with torch imported and the teacher in memory, shared with the trainer (copy-on-write, never sent), and is ready
at once. Otherwise it is a fresh interpreter that imports torch and transformers (about 4 s of CPU here, which an
8-step warmup never got back: measured in benchmarks/backend_speed.py) and is sent the teacher pickled, so the teacher is
held twice. A fork cannot take more threads: GNU OpenMP's pool (torch's on Linux) does not survive it, and a forked
child's first parallel region over more than one thread hangs (tested here); nor can CUDA be used after one.

The rollouts are the trainer's own, bit for bit: the same weights, the same engine (`open_rollouts`), the same prompts
and seeds (`protocol.peek_draw` reads the next step's draw without moving the stage's random stream, which its
checkpoints save). The stage's torch threads are split between the two processes (one each at `threads: 1`), so on a
CPU the bits are those of a warmup trained in the trainer at the trainer's share of threads: the same as without the
process at `threads: 1` (tested), not on a lone node's two threads at the embedded default's shapes, where one and two
threads give other bits (scheduler.py). So the option changes how long a stage takes, and its numbers only as a thread
count does, and is left out of config hashes as `threads` is (`identity.RUN_ONLY`).
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.config import RolloutConfig
from s2d_bench.generation.engine import open_rollouts
from s2d_bench.generation.protocol import render
from s2d_bench.generation.rollouts import Rollouts, rollouts_from_tokens
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.sequences import Batch, completion_hidden
from s2d_bench.worker_process import can_fork, fork, reap, start


def thread_shares(threads: int) -> tuple[int, int]:
    """(the teacher process's, the trainer's) torch threads out of a stage's `threads`: half each, the odd one to the
    trainer, at least one each (at one thread both run on it)."""
    return max(1, threads // 2), max(1, threads - threads // 2)


FORKED_READY_S = 10  # how long a stage waits for a forked process to be ready (it takes ms); past that the trainer samples


def forks(teacher_threads: int) -> bool:
    """Whether the teacher's process is forked from the trainer's (see the module's docstring), given its thread share."""
    return teacher_threads == 1 and can_fork() and not torch.cuda.is_initialized()


class TeacherProcess:
    """The teacher's process for one distillation stage; requests (sent once it is `ready`) are answered in the order sent."""

    def __init__(self, teacher: PreTrainedModel, tok: PreTrainedTokenizerBase, rollout: RolloutConfig, thinking: bool,
                 student: PreTrainedModel | None = None) -> None:
        """`student`: on-policy distillation's, whose samples the process shares (`ask_samples`, with its weights then)."""
        self._asked: deque[Any] = deque()  # what each request sent and not yet answered was for, oldest first
        self._ready = False
        self._threads = torch.get_num_threads()  # the stage's: shared with the teacher's process until close
        teachers, trainers = thread_shares(self._threads)
        init = (teacher, tok, rollout, thinking, teachers, student)
        self._sending: threading.Thread | None = None
        if forks(teachers):
            self.proc, self.conn, self._reaper = fork(_serve, init, self)
            self._await(FORKED_READY_S)  # milliseconds: it has torch and the teacher, so it takes over from the first step
        else:
            self.proc, self.conn, self._reaper = start(f"{__name__}:_worker", self)
            # sent from a thread: the socket holds less than a model, and the process reads it only once it has imported torch
            self._sending = threading.Thread(target=self._send_init, args=(pickle.dumps(init),), daemon=True)
            self._sending.start()
        torch.set_num_threads(trainers)

    def __enter__(self) -> "TeacherProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_init(self, init: bytes) -> None:
        with contextlib.suppress(OSError):  # it died starting: `ready` reads why
            self.conn.send_bytes(init)

    def ready(self, timeout: float | None = 0.0) -> bool:
        """Whether the process has the teacher and takes requests (waiting up to `timeout` seconds, None: until it does)."""
        return self._await(timeout)

    def rollouts(self, prompts: list[str], seeds: list[int], sampling: Sampling,
                 upcoming: tuple[list[str], list[int]] | None) -> Rollouts | None:
        """The teacher's rollouts of this step if they were asked a step ahead, else None (the trainer samples them while
        this process samples the next step's), after asking for those of `upcoming` (the next step's prompts and seeds;
        None at the last step)."""
        key = (list(prompts), list(seeds))
        if self._asked and self._asked[0] != key:  # not what the last step looked ahead to (a stage's draws never do this)
            self._drop_replies()
        asked = bool(self._asked)
        if upcoming is not None:
            self._ask_rollouts((list(upcoming[0]), list(upcoming[1])), sampling)
        return self._reply() if asked else None

    def ask_hidden(self, batch: Batch) -> None:
        """Ask for the teacher's final hidden states at `batch`'s completion positions (`completion_hidden`); `answer`
        takes them, and the seconds the process took."""
        self._asked.append("hidden")
        self._put(("hidden", batch))

    def ask_samples(self, student: PreTrainedModel, rows: list[list[int]], seeds: list[int], sampling: Sampling) -> None:
        """Ask for the student's samples of prompt `rows` (token ids) at its weights as they are now (sent with the
        request): `answer` takes their token ids (the engine's `generate_ids`), and the seconds the process took."""
        weights = {name: p.detach() for name, p in student.named_parameters()}
        self._asked.append("samples")
        self._put(("samples", weights, rows, seeds, sampling))

    def answer(self) -> Any:
        """The answer to the oldest request asked by `ask_hidden` or `ask_samples`."""
        return self._reply()

    def close(self) -> None:
        """Stop the process: told to when it is idle, killed when it is still starting or working (nothing it does is kept)."""
        if self._ready and not self._asked:
            with contextlib.suppress(OSError):
                self.conn.send_bytes(pickle.dumps(None))
        else:
            self.proc.kill()
        if self._sending is not None:
            self._sending.join()  # done once the process has the teacher, or once it is gone (the pipe breaks)
        reap(self.proc, self.conn, self._reaper, wait=10)
        torch.set_num_threads(self._threads)

    def _await(self, timeout: float | None) -> bool:
        if not self._ready and self.conn.poll(timeout):
            self._ready = self._receive() == "ready"
        return self._ready

    def _ended(self) -> RuntimeError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the teacher process ended (exit code {code}); what it printed is above")

    def _ask_rollouts(self, key: tuple[list[str], list[int]], sampling: Sampling) -> None:
        self._asked.append(key)
        self._put(("rollouts", key[0], key[1], sampling))

    def _drop_replies(self) -> None:
        while self._asked:
            self._reply()

    def _put(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message))
        except OSError as e:  # a broken pipe: it is gone
            raise self._ended() from e

    def _reply(self) -> Any:
        """The answer to the oldest request."""
        self._asked.popleft()
        return self._receive()

    def _receive(self) -> Any:
        try:
            kind, value = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as e:
            raise self._ended() from e
        if kind == "error":
            raise RuntimeError(f"the teacher process failed:\n{value}")
        return value


def _worker(conn: Connection) -> None:
    """A fresh interpreter's teacher process: take the teacher, then `_serve`."""
    _serve(conn, *pickle.loads(conn.recv_bytes()))


def _serve(conn: Connection, teacher: PreTrainedModel, tok: PreTrainedTokenizerBase, rollout: RolloutConfig, thinking: bool,
           threads: int, student: PreTrainedModel | None = None) -> None:
    """The teacher's process, at `threads` torch threads: answer what is asked until told to stop (None) or the parent is
    gone: the teacher's rollouts, its hidden states over a batch, or (given the `student`) the student's samples."""
    torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        engines = {"teacher": stack.enter_context(open_rollouts(rollout, teacher.eval(), tok, thinking, trained=False))}
        if student is not None:  # as the trainer's engine samples it: trained, in its mode
            engines["student"] = stack.enter_context(open_rollouts(rollout, student, tok, thinking, trained=True))
        conn.send_bytes(pickle.dumps(("ok", "ready")))
        while True:
            try:
                request = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if request is None:
                return
            try:
                answer = ("ok", ANSWERS[request[0]](teacher, student, engines, *request[1:]))
            except Exception:  # noqa: BLE001 - the trainer raises it, with this traceback
                answer = ("error", traceback.format_exc())
            conn.send_bytes(pickle.dumps(answer))


def _rollouts(teacher: PreTrainedModel, student: PreTrainedModel | None, engines: dict, prompts: list[str], seeds: list[int],
              sampling: Sampling) -> Rollouts:
    return engines["teacher"].rollouts(prompts, sampling, seeds)


def _hidden(teacher: PreTrainedModel, student: PreTrainedModel | None, engines: dict, batch: Batch) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        hidden = completion_hidden(teacher, batch)
    return hidden, time.perf_counter() - start


def _samples(teacher: PreTrainedModel, student: PreTrainedModel | None, engines: dict, weights: dict[str, torch.Tensor],
             rows: list[list[int]], seeds: list[int], sampling: Sampling) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    with torch.no_grad():
        for name, p in student.named_parameters():
            p.copy_(weights[name])
    ids = [c.ids for c in engines["student"].generate_ids(rows, sampling, seeds)]
    return ids, time.perf_counter() - start


ANSWERS = {"rollouts": _rollouts, "hidden": _hidden, "samples": _samples}  # what the process answers, by request


def process_share(n: int, before_s: float, own_row_s: float | None, their_row_s: float) -> float:
    """The process's share of the next call's `n` rows, so that both sides end together: the trainer's `before_s` (work
    of its own first) plus its rows take as long as the process's rows, at the last call's seconds per row (the process's
    where the trainer had none)."""
    own_row_s = their_row_s if own_row_s is None else own_row_s
    ours = (n * their_row_s - before_s) / (own_row_s + their_row_s)
    return min(max(1 - ours / n, 0.0), 1.0)


class SplitTeacher:
    """On-policy distillation's frozen teacher, with the teacher's process (otherwise idle there: the student samples)
    taking a share of the work of each step:
    - the student's samples: the process gets the student's weights and the last rows of prompts, the trainer samples
      the first; a prompt's samples do not depend on the other prompts of its batch (their own seeds), so the rollouts
      are those the trainer's engine alone draws;
    - the teacher's forward over each micro-batch: the process runs the last rows while the trainer runs the student's
      forward and then the first rows; a row's hidden states do not depend on the other rows (tested, bit for bit, at
      one thread).
    The shares are set each call from the last call's times so that both sides end together (`process_share`). A
    stage's numbers are those of the teacher in the trainer. Until the process is ready the trainer does it all."""

    def __init__(self, model: PreTrainedModel, helper: TeacherProcess, clock: Callable[[], float] = time.perf_counter) -> None:
        self.model, self.helper, self.clock = model, helper, clock
        self.shares = {"hidden": 0.5, "samples": 0.5}  # the process's, until the first times are measured

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def _theirs(self, n: int, work: str) -> int:
        """Rows the process takes: its share, one at least (its time is measured), none until it is ready."""
        return max(1, round(n * self.shares[work])) if n > 1 and self.helper.ready() else 0

    def rollouts(self, engine: Any, student: PreTrainedModel, prompts: list[str], sampling: Sampling, seeds: list[int]) -> Rollouts:
        """The student's rollouts of `prompts`, as `engine.rollouts` draws them; an engine without `generate_ids` (token
        rows in, token ids out) samples them all."""
        if not hasattr(engine, "generate_ids"):
            return engine.rollouts(prompts, sampling, seeds)
        rows = render(engine.tok, prompts, engine.cfg.thinking)
        n = len(rows)
        theirs = self._theirs(n, "samples")
        ours = n - theirs
        if theirs:
            self.helper.ask_samples(student, rows[ours:], seeds[ours:], sampling)
        start = self.clock()
        ids = [c.ids for c in engine.generate_ids(rows[:ours], sampling, seeds[:ours])]  # none asked: none sampled
        own_s = self.clock() - start
        if theirs:
            their_ids, seconds = self.helper.answer()
            ids += their_ids
            self.shares["samples"] = process_share(n, 0.0, own_s / ours if ours else None, seconds / theirs)
        return rollouts_from_tokens(engine.tok, rows, sampling.k, ids)

    def hidden(self, batch: Batch, student: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(the student's hidden states, from `student()`, the teacher's at `batch`'s completion positions, no gradient)."""
        n = batch.completion_ids.shape[0]
        theirs = self._theirs(n, "hidden")
        ours = n - theirs
        if theirs:
            self.helper.ask_hidden(batch.rows(slice(ours, None)))
        start = self.clock()
        student_hidden = student()
        own_start = self.clock()
        with torch.no_grad():
            parts = [completion_hidden(self.model, batch.rows(slice(ours)))] if ours else []  # a forward of no rows fails
        end = self.clock()
        if theirs:
            hidden, seconds = self.helper.answer()
            parts.append(hidden)
            self.shares["hidden"] = process_share(n, own_start - start, (end - own_start) / ours if ours else None, seconds / theirs)
        return student_hidden, torch.cat(parts)
