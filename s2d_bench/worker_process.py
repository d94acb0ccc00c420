"""A helper process: a fresh interpreter running one worker function on its end of a socket pair.

The grading pool's workers and the distillation stages' teacher process start this way (`start`), not through
multiprocessing: its spawn re-runs the parent's main script in every worker, and a script that imports torch at the
top (a benchmark, a notebook's export) paid seconds of CPU for each. The worker imports what its own module needs and
nothing else; it finds the parent's code where the parent does (PYTHONPATH is the parent's `sys.path`), ignores Ctrl-C
(the parent answers it and ends its helpers), and is killed when the parent exits at the latest.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection

# Ctrl-C reaches the whole process group: the parent answers it and ends its helpers, so a worker ignores it from its first line
BOOT = ("import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "from s2d_bench.worker_process import serve; serve(sys.argv[1], int(sys.argv[2]))")


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
    path = [p for p in [*sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)] if p]  # what the parent imports from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}
    try:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, target, str(fd)], pass_fds=[fd], env=env, stdin=subprocess.DEVNULL)
    except BaseException:
        conn.close()
        raise
    finally:
        os.close(fd)
    return proc, conn, weakref.finalize(owner, proc.kill)


def reap(proc: subprocess.Popen, conn: Connection, reaper: weakref.finalize, wait: float) -> None:
    """Let go of a worker told to stop (or killed): wait up to `wait` seconds for it to exit, kill it past that, and close
    its connection; its finalizer (from `start`) is no longer needed."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reaper.detach()
    conn.close()
