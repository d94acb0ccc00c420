"""The process pool isolated graders run in: a hard per-item deadline, a stuck worker killed and replaced.

math-verify can hang in C-level sympy code (`10^{10^{10}}`), where no in-process timeout reaches,
so it runs in worker processes. The deadline is the worker's own CPU time on the item (where the
OS reports it), so a worker starved by a loaded machine is not mistaken for a stuck one; it starts
once the worker has warmed up; an item that runs out, or whose worker dies (killed, out of memory,
a crash at start-up or mid-item), is retried once on a fresh worker, and a failure after that is
reported as None (grading.grade counts it wrong, and counts it with the timeouts): one bad item
never costs the run.

A worker is a fresh interpreter that imports the graders and nothing else (`s2d_bench.worker_process`: multiprocessing's
spawn re-ran the parent's main script in every worker, seconds of CPU each for a script that imports torch).
"""

from __future__ import annotations

import os
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path

from s2d_bench.harness.graders import GRADERS, ISOLATED
from s2d_bench.worker_process import reap, start

STARTUP = 300.0  # seconds a fresh worker may take to import and warm up its graders (a loaded machine is slow)
MAX_STALL = 30.0  # a starved worker's item may take this many times the timeout in wall time before it counts anyway
READY = "ready"
MAX_START_FAILURES = 3  # workers that die before they are ready, in one run: beyond this it is the environment, not an item


def _worker(conn: Connection) -> None:
    """Warm up, say so, then grade (key, grader, gold, pred) items until told to stop with None.

    Importing math-verify and its first parse (sympy, the LaTeX grammar) take seconds, more on a
    loaded machine; an item's deadline must not pay for them, so they happen before `READY`.
    """
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the one-time "timeout disabled" warning
    for name in ISOLATED:
        GRADERS.get(name)("1", "1")
    conn.send(READY)
    while (item := _receive(conn)) is not None:
        key, grader, gold, pred = item
        try:
            conn.send((key, bool(GRADERS.get(grader)(gold, pred))))
        except Exception:  # noqa: BLE001 - unparseable garbage is a wrong answer, not a crash
            conn.send((key, False))


def _receive(conn: Connection) -> tuple | None:
    """The next item; None when told to stop or when the parent is gone (its end of the socket closed)."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used (Linux /proc); None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _Slot:
    """One worker process and the item it is grading."""

    def __init__(self) -> None:
        target = f"{_worker.__module__}:{_worker.__qualname__}"  # read now: a test swaps the worker function
        self.proc, self.conn, self._reaper = start(target, self)  # killed at the latest when the parent exits
        self.key: tuple | None = None
        self.deadline = 0.0
        self.ready = False
        self.started = time.monotonic()
        self.sent = 0.0
        self.cpu_at_send: float | None = None

    def give(self, key: tuple, timeout: float) -> None:
        self.key, self.sent = key, time.monotonic()
        self.deadline = self.sent + timeout
        self.cpu_at_send = cpu_seconds(self.proc.pid)
        self.conn.send((key, *key))

    def starved(self, timeout: float) -> float:
        """Seconds to extend a passed deadline by: the CPU time the item has not had yet (0: really out of time)."""
        now_cpu = cpu_seconds(self.proc.pid)
        if now_cpu is None or self.cpu_at_send is None or time.monotonic() - self.sent > timeout * MAX_STALL:
            return 0.0
        return max(0.0, timeout - (now_cpu - self.cpu_at_send))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                self.proc.kill()
        reap(self.proc, self.conn, self._reaper, wait=5)


class GradingPool:
    """Runs isolated graders in `workers` processes; an item over `timeout` seconds is killed.

    Identical (grader, gold, pred) items are graded once. Use as a context manager, or call
    close(); workers start on first use.
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0) -> None:
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout = timeout
        self._slots: list[_Slot] = []
        self.timeouts = 0

    def __enter__(self) -> "GradingPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for slot in self._slots:
            slot.stop()
        self._slots = []

    def run(self, items: list[tuple[str, str, str | None]]) -> dict[tuple, bool | None]:
        """{(grader, gold, pred): verdict} for every item; None marks a timeout."""
        todo = deque(dict.fromkeys(items))
        results: dict[tuple, bool | None] = {}
        retried: set[tuple] = set()
        if not todo:
            return results
        while len(self._slots) < min(self.workers, len(todo)):
            self._slots.append(_Slot())
        start_failures = 0
        while todo or any(s.key is not None for s in self._slots):
            for slot in self._slots:
                if slot.ready and slot.key is None and todo:
                    key = todo.popleft()
                    try:
                        slot.give(key, self.timeout)  # the deadline runs from now: the worker is warm and idle
                    except OSError:  # it died while idle: the item goes to its replacement
                        todo.appendleft(key)
                        slot.key = None
                        self._replace(slot)
            busy = [s for s in self._slots if s.key is not None]
            starting = [s for s in self._slots if not s.ready]
            until = min([s.deadline for s in busy] + [s.started + STARTUP for s in starting])
            ready = wait([s.conn for s in busy + starting], timeout=max(0.0, until - time.monotonic()))
            for slot in starting:
                if slot.conn in ready:
                    try:
                        message = slot.conn.recv()
                    except (EOFError, OSError):  # it crashed while starting: another takes its place, a few times
                        start_failures += 1
                        if start_failures > MAX_START_FAILURES:
                            raise RuntimeError(f"grading workers keep dying while they start (exit code {slot.proc.poll()}); "
                                               "is math-verify importable in this environment?") from None
                        self._replace(slot)
                        continue
                    if message != READY:
                        raise RuntimeError("grading worker sent a result before it was ready")
                    slot.ready = True
                elif time.monotonic() >= slot.started + STARTUP:
                    raise RuntimeError(f"a grading worker did not start within {STARTUP:.0f} s (exit code {slot.proc.poll()})")
            for slot in busy:
                if slot.conn in ready:
                    try:
                        key, ok = slot.conn.recv()
                    except (EOFError, OSError):  # it died on this item (killed, out of memory, a crash in sympy)
                        self._fail(slot, todo, retried, results)
                        continue
                    results[key], slot.key = ok, None
                elif time.monotonic() >= slot.deadline:
                    extra = slot.starved(self.timeout)
                    if extra > 0.05:  # the machine, not the item: wait for the CPU time it is owed
                        slot.deadline = time.monotonic() + extra
                        continue
                    self._fail(slot, todo, retried, results)
        return results

    def _fail(self, slot: _Slot, todo: deque, retried: set[tuple], results: dict[tuple, bool | None]) -> None:
        """The slot's item timed out or its worker died: once more on a fresh worker, then a grading failure (None, wrong,
        counted in `timeouts`); the worker is replaced either way, so one bad item never costs the run."""
        if slot.key not in retried:
            retried.add(slot.key)
            todo.appendleft(slot.key)
        else:
            results[slot.key] = None
            self.timeouts += 1
        slot.key = None
        self._replace(slot)

    def _replace(self, slot: _Slot) -> None:
        slot.stop(kill=True)
        self._slots[self._slots.index(slot)] = _Slot()
