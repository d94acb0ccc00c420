"""The distillation stages' frozen teacher in a process of its own (config `teacher_process`), on a core the trainer leaves free.

The warmup's teacher work (sampling a step's rollouts, then the teacher's hidden states over them) does not depend on
anything the student learns, so this process does step t + 1's while the student trains on step t: on the tiny world it was
three quarters of a warmup step. In on-policy distillation it runs the teacher over the student's samples while the
student runs its own forward.

The results are the in-process teacher's, bit for bit: the same weights (the model itself is sent, pickled), the same
code (`open_rollouts`, `completion_hidden`) and the same shapes (each micro-batch as the trainer splits it). The stage's
torch threads are split between the two processes (one each at `threads: 1`), so on a CPU the bits are the same where
torch's kernels give the same bits at any thread count, as they do here (the scheduler relies on it too; tested). So the
option changes how long a stage takes, never its numbers, and is left out of config hashes (`identity.RUN_ONLY`). The
teacher is held twice (the trainer keeps its head, to map hidden states to logits).
"""

from __future__ import annotations

import contextlib
import pickle
import random
import subprocess
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.backends.batching import micro_batches
from s2d_bench.backends.runtime import LocalRuntime
from s2d_bench.config import RolloutConfig
from s2d_bench.generation.engine import open_rollouts
from s2d_bench.generation.protocol import draw_step
from s2d_bench.generation.rollouts import Rollouts
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.sequences import Batch, completion_hidden
from s2d_bench.worker_process import start


class TeacherHidden:
    """The teacher's final hidden states over one batch, a tensor per micro-batch (read by its rows), and the teacher's
    head that maps them to logits. A reply the teacher process is still computing is waited for at the first read."""

    def __init__(self, head: torch.nn.Module, reply: Callable[[], dict[tuple[int, int], torch.Tensor]]) -> None:
        self.head = head
        self._reply = reply
        self._parts: dict[tuple[int, int], torch.Tensor] | None = None

    def rows(self, rows: slice) -> torch.Tensor:
        if self._parts is None:
            self._parts = self._reply()
        return self._parts[(rows.start, rows.stop)]


def peek_draw(rng: random.Random, items: Sequence, n: int) -> tuple[list, list[int]]:
    """The draw the next `draw_step(rng, items, n)` will make, leaving `rng` as it is (a stage's checkpoint saves it)."""
    copy = random.Random()
    copy.setstate(rng.getstate())
    return draw_step(copy, items, n)


class TeacherProcess:
    """The teacher's process for one stage; requests are answered in the order they are sent."""

    def __init__(self, teacher: PreTrainedModel, tok: PreTrainedTokenizerBase, rollout: RolloutConfig, thinking: bool) -> None:
        self.proc, self.conn, self._reaper = start(f"{__name__}:_worker", self)
        self.head = teacher.get_output_embeddings()
        self._asked: deque[Any] = deque()  # what each request sent and not yet answered was for, oldest first
        self._threads = torch.get_num_threads()  # the stage's: half to the teacher's process, the rest to the trainer until close
        self._put(("init", teacher, tok, rollout, thinking, max(1, self._threads // 2)))
        torch.set_num_threads(max(1, self._threads - self._threads // 2))

    def __enter__(self) -> "TeacherProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rollouts(self, prompts: list[str], seeds: list[int], sampling: Sampling, micro_batch_size: int,
                 upcoming: tuple[list[str], list[int]] | None) -> tuple[Rollouts, TeacherHidden]:
        """The teacher's rollouts of this step and its hidden states over them (asked a step ahead, or now), after
        asking for those of `upcoming` (the next step's prompts and seeds; None at the last step)."""
        key = (list(prompts), list(seeds))
        if self._asked and self._asked[0] != key:  # not what the last step looked ahead to (a stage's draws never do this)
            self._drop_replies()
        if not self._asked:
            self._ask_rollouts(key, sampling, micro_batch_size)
        if upcoming is not None:
            self._ask_rollouts((list(upcoming[0]), list(upcoming[1])), sampling, micro_batch_size)
        roll, parts = self._reply()
        return roll, TeacherHidden(self.head, lambda: parts)

    def hidden(self, batch: Batch, micro_batch_size: int) -> TeacherHidden:
        """The teacher's hidden states over `batch` (the student's samples), asked now, computed while the caller works."""
        self._drop_replies()
        self._asked.append(None)
        self._put(("hidden", batch, micro_batch_size))
        return TeacherHidden(self.head, self._reply)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send_bytes(pickle.dumps(None))
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reaper.detach()
        self.conn.close()
        torch.set_num_threads(self._threads)

    def _ended(self) -> RuntimeError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the teacher process ended (exit code {code}); what it printed is above")

    def _ask_rollouts(self, key: tuple[list[str], list[int]], sampling: Sampling, micro_batch_size: int) -> None:
        self._asked.append(key)
        self._put(("rollouts", key[0], key[1], sampling, micro_batch_size))

    def _drop_replies(self) -> None:
        while self._asked:
            self._reply()

    def _put(self, message: tuple) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as e:  # a broken pipe: it is gone
            raise self._ended() from e

    def _reply(self) -> Any:
        self._asked.popleft()
        try:
            kind, value = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as e:
            raise self._ended() from e
        if kind == "error":
            raise RuntimeError(f"the teacher process failed:\n{value}")
        return value


def _hidden(teacher: PreTrainedModel, batch: Batch, micro_batch_size: int) -> dict[tuple[int, int], torch.Tensor]:
    """The teacher's hidden states per micro-batch, split as the trainer splits the batch (one process: `LocalRuntime`)."""
    with torch.no_grad():
        return {(p.rows.start, p.rows.stop): completion_hidden(teacher, batch.rows(p.rows))
                for p in micro_batches(batch.completion_ids.shape[0], micro_batch_size, LocalRuntime())}


def _worker(conn: Connection) -> None:
    """The teacher process: take the teacher, then answer requests until told to stop (None) or the parent is gone."""
    _, teacher, tok, rollout, thinking, threads = pickle.loads(conn.recv_bytes())
    torch.set_num_threads(threads)
    teacher.eval()
    with contextlib.ExitStack() as opened:
        engine = None
        while True:
            try:
                request = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if request is None:
                return
            try:
                if request[0] == "rollouts":
                    _, prompts, seeds, sampling, size = request
                    engine = engine or opened.enter_context(open_rollouts(rollout, teacher, tok, thinking, trained=False))
                    roll = engine.rollouts(prompts, sampling, seeds)
                    answer = ("ok", (roll, _hidden(teacher, roll.batch, size)))
                else:
                    _, batch, size = request
                    answer = ("ok", _hidden(teacher, batch, size))
            except Exception:  # noqa: BLE001 - the trainer raises it, with this traceback
                answer = ("error", traceback.format_exc())
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
