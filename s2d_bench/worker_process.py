"""A helper process running one worker function on its end of a socket pair: a fresh interpreter (`start`) or a fork (`fork`).

The grading pool's workers start as fresh interpreters, not through multiprocessing: its spawn re-runs the parent's main
script in every worker, and a script that imports torch at the top (a benchmark, a notebook's export) paid seconds of CPU
for each. The worker imports what its own module needs and nothing else; it finds the parent's code where the parent does
(PYTHONPATH is the parent's `sys.path`).

The warmup's teacher process is forked where it can be (Linux; see backends/teacher_process.py for when): it starts with
torch imported and the teacher in memory, where a fresh interpreter spends seconds of CPU importing torch and transformers
(about 4 s here) that a short stage never gets back. A forked worker runs the function on the objects it is given (nothing
is pickled), leaves by `os._exit` (the parent's exit handlers, which kill its other helpers, are not the child's to run),
and has the signal handlers a fresh interpreter would.

Either way a worker ignores Ctrl-C and SIGUSR1 (the parent answers a stop and ends its helpers: under Slurm the signal
can reach every process of the job) and is killed when the parent exits at the latest.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection

# Ctrl-C reaches the whole process group and SIGUSR1 (a stop asked before a time limit) may reach every process of a
# Slurm job: the parent answers both and ends its helpers, so a worker ignores them from its first line
STOPS = (signal.SIGINT, signal.SIGUSR1)
BOOT = ("import signal, sys; " + "".join(f"signal.signal(signal.{stop.name}, signal.SIG_IGN); " for stop in STOPS)
        + "from s2d_bench.worker_process import serve; serve(sys.argv[1], int(sys.argv[2]))")


def serve(target: str, fd: int) -> None:
    """A worker process's entry (BOOT): run the worker function `module:name` on the connection at file descriptor `fd`."""
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(Connection(fd))


def start(target: str, owner: object) -> tuple[subprocess.Popen, Connection, weakref.finalize]:
    """A process running the function `target` ("module:name") on the other end of the returned connection, and the
    finalizer that kills it when `owner` is collected or the parent exits (detach it once the process is stopped)."""
    mine, theirs = socket.socketpair()
    conn = Connection(mine.detach())
    fd = theirs.detach()
    path = [p for p in sys.path if p]  # what the parent imports from (PYTHONPATH's entries among them, unless it ran with -E)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
    try:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, target, str(fd)], pass_fds=[fd], env=env, stdin=subprocess.DEVNULL)
    except BaseException:
        conn.close()
        raise
    finally:
        os.close(fd)
    return proc, conn, weakref.finalize(owner, proc.kill)


def can_fork() -> bool:
    """Whether `fork` may be used: on Linux only (macOS's system frameworks are not safe across a fork without an exec)."""
    return sys.platform.startswith("linux")


def fork(function: Callable[..., None], args: tuple, owner: object) -> tuple["Forked", Connection, weakref.finalize]:
    """A forked process running `function(connection, *args)` on the other end of the returned connection, and the
    finalizer that kills it when `owner` is collected or the parent exits (as `start`'s). The child shares what the
    parent holds (copy-on-write), so it must not rely on a thread pool or device context of the parent's (GNU OpenMP's
    pool and CUDA's do not survive a fork) nor take a lock another thread of the parent's may hold."""
    mine, theirs = socket.socketpair()
    for stream in (sys.stdout, sys.stderr):  # what the parent wrote and has not flushed would be written twice
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            mine.close()  # the parent's end: the child sees the parent go (EOF) once the parent's copy closes
            _helper_signals()
            null = os.open(os.devnull, os.O_RDONLY)  # stdin, as `start`'s: the terminal's input is the parent's
            os.dup2(null, 0)
            os.close(null)
            function(Connection(theirs.detach()), *args)
            code = 0
        except BaseException:  # noqa: BLE001 - printed for the parent's stderr, which reports the exit code
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    theirs.close()
    proc = Forked(pid)
    return proc, Connection(mine.detach()), weakref.finalize(owner, proc.kill)


def _helper_signals() -> None:
    """A forked worker's signal handlers as a fresh interpreter's would be, less the stops it ignores (see STOPS)."""
    for signum in signal.valid_signals():
        if signum in STOPS:
            signal.signal(signum, signal.SIG_IGN)
        elif callable(signal.getsignal(signum)):  # a Python handler of the parent's (its own state is not the child's)
            signal.signal(signum, signal.SIG_DFL)


class Forked:
    """A forked worker, waited for and killed as a `subprocess.Popen` is: `pid`, `returncode`, `poll`, `wait`, `kill`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code (minus the signal that killed it), or None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code once it has ended; `subprocess.TimeoutExpired` past `timeout` seconds (None: no limit)."""
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline, delay = time.monotonic() + timeout, 0.0005
        while self.poll() is None:  # as Popen.wait(timeout) does: short sleeps, longer up to 50 ms
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL, unless it has already been waited for (its pid may be another process's by then)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def reap(proc: subprocess.Popen | Forked, conn: Connection, reaper: weakref.finalize, wait: float) -> None:
    """Let go of a worker told to stop (or killed): wait up to `wait` seconds for it to exit, kill it past that, and close
    its connection; its finalizer (from `start`) is no longer needed."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reaper.detach()
    conn.close()
