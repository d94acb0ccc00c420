"""Helper processes (s2d_bench/worker_process.py), fresh (`start`) or forked (`fork`): each runs its function on its end of
the connection, ignores the stops its parent answers (Ctrl-C, SIGUSR1), ends when told or killed; a forked one works on
the parent's own objects, has no Python signal handler of the parent's, reports a failure by its exit code and traceback,
and leaves without running the parent's exit handlers."""

import contextlib
import os
import signal
import subprocess
import threading
import time

import pytest

from s2d_bench import worker_process


@pytest.fixture(autouse=True)
def _tests_pid(monkeypatch):
    monkeypatch.setenv("S2D_TESTS_PID", str(os.getpid()))


def _echo(conn, *args):  # noqa: ANN001, ANN202 - the worker: answer each message (and what it was given) until None
    if os.getpid() == int(os.environ["S2D_TESTS_PID"]):  # a fork that swapped its roles: the tests go on in the child
        raise RuntimeError("the worker runs in the tests' own process")
    try:
        while (message := conn.recv()) is not None:
            conn.send((message, [a() if callable(a) else a for a in args], os.getpid()))
    except EOFError:  # the parent's end closed: the parent is gone
        return


def _fail(conn, what):  # noqa: ANN001, ANN202
    raise ValueError(what)


class _Owner:
    pass


def _helper(how, *args):  # noqa: ANN001, ANN202
    owner = _Owner()
    if how == "fork":
        proc, conn, reaper = worker_process.fork(_echo, args, owner)
    else:
        proc, conn, reaper = worker_process.start(f"{__name__}:_echo", owner)
    return owner, proc, conn, reaper


def _answers(conn, message):  # noqa: ANN001, ANN202 - bounded: a worker that stopped answering fails instead of hanging
    conn.send(message)
    assert conn.poll(60), "the worker did not answer"
    return conn.recv()


@pytest.mark.parametrize("how", ["start", "fork"])
def test_a_worker_answers_ignores_ctrl_c_and_a_stop_request_and_ends_when_told_when_the_parent_goes_or_killed(how):
    read, write = os.pipe()  # the parent's stdin, as a terminal's would be (pytest's may be /dev/null already)
    saved = os.dup(0)
    os.dup2(read, 0)
    try:
        owner, proc, conn, reaper = _helper(how)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read, write):
            os.close(fd)
    assert _answers(conn, "a")[::2] == ("a", proc.pid)
    assert os.readlink(f"/proc/{proc.pid}/fd/0") == os.devnull  # the terminal's input stays the parent's
    for stop in (signal.SIGINT, signal.SIGUSR1):  # the parent's to answer: it ends its helpers
        os.kill(proc.pid, stop)
        assert _answers(conn, stop.name)[0] == stop.name and proc.poll() is None
    conn.send(None)
    worker_process.reap(proc, conn, reaper, wait=30)
    assert proc.returncode == 0

    owner, proc, conn, reaper = _helper(how)
    conn.close()  # as when the parent dies: the worker holds no copy of the parent's end, so it sees the end
    assert proc.wait(timeout=30) == 0
    reaper.detach()

    owner, proc, conn, reaper = _helper(how)
    assert _answers(conn, "b")[0] == "b"
    del owner  # collected: its finalizer kills the worker
    assert proc.wait(timeout=30) == -signal.SIGKILL
    worker_process.reap(proc, conn, reaper, wait=30)


def test_a_forked_worker_works_on_the_parents_own_objects_with_none_of_its_signal_handlers():
    """Nothing is pickled (a lock and a closure could not be); a handler the parent installed (a scheduler's SIGTERM) is not
    the child's: SIGTERM ends it as it would a fresh interpreter."""
    lock, seen = threading.Lock(), []
    previous = signal.signal(signal.SIGTERM, lambda *a: seen.append(a))
    try:
        owner, proc, conn, reaper = _helper("fork", lock.locked, lambda: "closure", 7)
        assert _answers(conn, "x") == ("x", [False, "closure", 7], proc.pid) and proc.pid != os.getpid()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM and seen == []
        worker_process.reap(proc, conn, reaper, wait=30)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_forked_worker_that_fails_exits_1_with_its_traceback_and_runs_none_of_the_parents_exit_handlers(capfd):
    """The parent's exit handlers (finalizers such as each helper's, which kill it) stay the parent's: a sibling helper
    outlives a forked worker's end, failed or not."""
    sibling, sib_proc, sib_conn, sib_reaper = _helper("fork")
    owner = _Owner()
    proc, conn, reaper = worker_process.fork(_fail, ("no such thing",), owner)
    assert proc.wait(timeout=30) == 1
    worker_process.reap(proc, conn, reaper, wait=30)
    err = capfd.readouterr().err
    assert "Traceback" in err and "ValueError: no such thing" in err
    assert _answers(sib_conn, "alive")[0] == "alive" and sib_proc.poll() is None
    sib_conn.send(None)
    worker_process.reap(sib_proc, sib_conn, sib_reaper, wait=30)
    assert sib_proc.returncode == 0


def test_a_forked_workers_wait_runs_out_then_reap_kills_it():
    owner, proc, conn, reaper = _helper("fork")
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 10 and proc.returncode is None
    worker_process.reap(proc, conn, reaper, wait=0.2)  # it never exits by itself: killed past the wait
    assert proc.returncode == -signal.SIGKILL and conn.closed
    proc.kill()  # already waited for: its pid is not signalled again
    assert proc.returncode == -signal.SIGKILL


def test_a_fresh_interpreters_entry_runs_the_named_function_on_the_descriptor_it_is_given():
    """`serve` (run in the fresh interpreter, so reached here in a thread of the tests' own process)."""
    import socket

    mine, theirs = socket.socketpair()
    conn = worker_process.Connection(mine.detach())
    os.environ["S2D_TESTS_PID"] = "0"  # the monkeypatched value: the worker runs in this process, on purpose
    loop = threading.Thread(target=worker_process.serve, args=(f"{__name__}:_echo", theirs.detach()))
    loop.start()
    assert _answers(conn, "m") == ("m", [], os.getpid())
    conn.send(None)
    loop.join(timeout=30)
    assert not loop.is_alive()
    conn.close()


def test_a_forked_workers_signal_handlers_are_a_fresh_interpreters_less_the_stops_it_ignores():
    """Run here (the child's are out of mutmut's sight), every handler put back after: a Python handler of the parent's is
    dropped for the default, the stops are ignored, and what a fresh interpreter also ignores (SIGPIPE) stays ignored."""
    saved = {s: signal.getsignal(s) for s in signal.valid_signals() if signal.getsignal(s) is not None}
    try:
        signal.signal(signal.SIGTERM, lambda *a: None)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        worker_process._helper_signals()
        got = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)}
    finally:
        for s, handler in saved.items():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(s, handler)
    assert got == {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_IGN, signal.SIGUSR1: signal.SIG_IGN,
                   signal.SIGUSR2: signal.SIG_IGN, signal.SIGPIPE: signal.SIG_IGN}
