"""The parallel scheduler (scheduler.py) on a small graph with a build that only logs: dependencies first, at most
`jobs` at once, every job's threads to a lone node (from the plan, whichever build ends first), a failure stops the
run. Workers are spawned processes, so the build below is module-level and logs to a file every worker appends to."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from s2d_bench import scheduler
from s2d_bench.plan import Node


def _build(cfg: dict, node_id: str, threads: int) -> None:
    """Log this build's start (with its threads) and end; wait for the nodes `cfg["beside"]` pairs it with to start
    (at most 10 s), then `cfg["hold"]` seconds; fail where the config says so; log what this process was handed of the
    parent's state."""
    log = Path(cfg["log"])
    with open(log, "a") as out:
        out.write(f"start {node_id} {threads} {MARK}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(f"start {other} " in log.read_text() for other in cfg.get("beside", {}).get(node_id, ())):
        time.sleep(0.05)
    time.sleep(cfg.get("hold", {}).get(node_id, 0))
    if node_id in cfg.get("fail", ()):
        raise ValueError(f"{node_id} failed on purpose")
    with open(log, "a") as out:
        out.write(f"end {node_id}\n")


MARK = "fresh"  # the parent sets another value: a spawned worker imports this module anew and never sees it


def _node(node_id: str, parent: str | None = None, teacher: str | None = None) -> Node:
    return Node(node_id, "base" if parent is None else "opd", "student", parent=parent, teacher=teacher, seed=0)


def _graph() -> dict[str, Node]:
    """a; b and c from a; d from b with teacher c (a distillation node)."""
    nodes = [_node("a"), _node("b", parent="a"), _node("c", parent="a"),
             _node("d", parent="b", teacher="c")]
    return {n.id: n for n in nodes}


def _events(log: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()]


def _run(tmp_path: Path, nodes: dict[str, Node], jobs: int, threads: int = 1, **cfg) -> list[tuple[str, ...]]:
    """The schedule, bounded: a schedule that never ends (one that forgets a finished build spins) fails at 60 s."""
    import signal

    def late(signum, frame):
        raise TimeoutError("the schedule did not end within 60 s")

    log = tmp_path / "log.txt"
    previous = signal.signal(signal.SIGALRM, late)
    signal.alarm(60)
    try:
        scheduler.build_all(nodes, jobs, _build, {i: {"log": str(log), **cfg} for i in nodes}, threads)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return _events(log)


def _most_at_once(events: list[tuple[str, ...]]) -> int:
    running, most = 0, 0
    for kind, *_ in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


def test_every_node_is_built_once_after_its_parent_and_teacher_at_most_jobs_at_a_time(tmp_path):
    beside = {"b": ["c"], "c": ["b"]}  # each waits for the other to start: only two jobs let them both finish at once
    events = _run(tmp_path, _graph(), jobs=2, beside=beside)
    starts = [e[1] for e in events if e[0] == "start"]
    assert sorted(starts) == ["a", "b", "c", "d"]
    order = {e[:2]: i for i, e in enumerate(events)}
    for node in _graph().values():
        for dep in (node.parent, node.teacher):
            if dep:
                assert order[("end", dep)] < order[("start", node.id)], (node.id, dep)
    assert _most_at_once(events) == 2
    (tmp_path / "log.txt").unlink()
    assert _most_at_once(_run(tmp_path, _graph(), jobs=1)) == 1  # one job: b and c one after the other


def test_a_node_starts_as_soon_as_its_parent_is_built_not_when_every_running_build_ends(tmp_path):
    """e (from b) starts while c still builds: c waits for e to start, which only a schedule that acts on each finished
    build lets happen before c's 10 s are out."""
    nodes = {**_graph(), "e": _node("e", parent="b")}
    events = _run(tmp_path, nodes, jobs=2, beside={"c": ["e"]})
    order = {e[:2]: i for i, e in enumerate(events)}
    assert order[("start", "e")] < order[("end", "c")]


def test_workers_are_spawned_fresh_never_forked_from_the_parent(tmp_path, monkeypatch):
    """A fork would copy a parent that has run torch (its thread pools, a CUDA context): workers start a new interpreter."""
    monkeypatch.setattr(sys.modules[__name__], "MARK", "parent")
    assert {e[3] for e in _run(tmp_path, _graph(), jobs=2) if e[0] == "start"} == {"fresh"}


def test_a_node_nothing_can_run_beside_gets_every_jobs_threads(tmp_path):
    """a: every other node descends from it (jobs x threads); b and c run side by side (threads each); d is last, alone."""
    threads = {e[1]: int(e[2]) for e in _run(tmp_path, _graph(), jobs=2, threads=3) if e[0] == "start"}
    assert threads == {"a": 6, "b": 3, "c": 3, "d": 6}


def test_a_node_whose_waiting_nodes_all_descend_from_it_gets_every_jobs_threads(tmp_path):
    """e waits on d: nothing can run beside d, so d gets jobs x threads, as the chain's last node e does."""
    nodes = {**_graph(), "e": _node("e", parent="d")}
    threads = {e[1]: int(e[2]) for e in _run(tmp_path, nodes, jobs=2, threads=1) if e[0] == "start"}
    assert threads == {"a": 2, "b": 1, "c": 1, "d": 2, "e": 2}


def _bridge() -> dict[str, Node]:
    """The embedded default's shape: base models s and t; x (direct GRPO) from s; r (teacher RL) from t; w (the
    warmup) from s with teacher r; o from w with teacher r."""
    nodes = [_node("s"), _node("t"), _node("x", parent="s"), _node("r", parent="t"),
             _node("w", parent="s", teacher="r"), _node("o", parent="w", teacher="r")]
    return {n.id: n for n in nodes}


def test_lone_nodes_come_from_the_plan_alone():
    """w and o: x, the only node they are not related to, is ready strictly earlier (from s alone), so they wait for
    it. s and t, x and r are ready together: none waits. In _graph, b and c (siblings) are not lone; a and d are."""
    assert scheduler.lone(_bridge()) == {"w": {"x"}, "o": {"x"}}
    assert scheduler.lone(_graph()) == {"a": set(), "d": set()}
    seeds = {**_bridge(), **{f"{i}2": _node(f"{i}2", parent=n.parent and f"{n.parent}2", teacher=n.teacher and f"{n.teacher}2")
                             for i, n in _bridge().items()}}
    assert scheduler.lone(seeds) == {}  # two seeds' chains: every node has another seed's node ready as early


@pytest.mark.parametrize("slow", ["x", "r"])
def test_a_lone_nodes_threads_do_not_depend_on_which_build_ends_first(tmp_path, slow):
    """x outlasting r used to start w beside x at `threads` (other bits at these shapes than at 2 threads); now w waits
    for x and gets jobs x threads, whichever ends first."""
    events = _run(tmp_path, _bridge(), jobs=2, hold={slow: 1.5}, beside={"s": ["t"], "t": ["s"]})
    threads = {e[1]: int(e[2]) for e in events if e[0] == "start"}
    assert threads == {"s": 1, "t": 1, "x": 1, "r": 1, "w": 2, "o": 2}
    order = {e[:2]: i for i, e in enumerate(events)}
    assert order[("end", "x")] < order[("start", "w")] and order[("end", "r")] < order[("start", "w")]


def test_a_failed_node_stops_the_run_with_its_error_and_its_descendants_never_start(tmp_path):
    with pytest.raises(ValueError, match="b failed on purpose"):
        _run(tmp_path, _graph(), jobs=2, fail=["b"], beside={"b": ["c"]}, hold={"c": 1.0})
    events = _events(tmp_path / "log.txt")
    assert ("start", "d") not in {e[:2] for e in events}
    assert ("end", "c") in events  # c was running beside b (and outlasts it): the run waits for it to finish, its work kept


def test_nodes_waiting_on_a_node_outside_the_plan_are_named(tmp_path):
    nodes = {"x": _node("x", parent="missing")}
    with pytest.raises(RuntimeError, match=r"outside the plan: \['x'\]"):
        _run(tmp_path, nodes, jobs=2)
    assert not (tmp_path / "log.txt").exists()


def test_nodes_that_wait_on_each_other_are_named_and_nothing_runs_forever(tmp_path):
    nodes = {"a": _node("a", parent="b"), "b": _node("b", parent="a"), "c": _node("c")}
    with pytest.raises(RuntimeError, match=r"wait on each other: \['a', 'b'\]"):
        _run(tmp_path, nodes, jobs=2)
    assert [e[:2] for e in _events(tmp_path / "log.txt")] == [("start", "c"), ("end", "c")]  # what could be built was


def test_workers_leave_interrupts_to_the_parent(tmp_path):
    """The worker initializer leaves Ctrl-C and a forwarded stop to the parent (one line, not a traceback per worker)."""
    import signal

    log = tmp_path / "log.txt"
    scheduler.build_all({"a": _node("a")}, 1, _signals, {"a": {"log": str(log)}}, 1)
    assert log.read_text().split() == [str(signal.SIG_IGN), str(signal.SIG_IGN)]


def _signals(cfg: dict, node_id: str, threads: int) -> None:
    import signal

    with open(cfg["log"], "a") as log:
        log.write(f"{signal.getsignal(signal.SIGINT)} {signal.getsignal(signal.SIGUSR1)}\n")


def test_a_worker_ignores_ctrl_c_and_a_stop_and_shares_bars_through_a_thread_lock():
    """The initializer, run here: Ctrl-C and SIGUSR1 ignored (a building worker listens for the stop itself), tqdm's
    lock a thread lock (a multiprocessing one would be left behind by a worker stopped mid-stage)."""
    import signal
    import threading

    from tqdm import tqdm

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1), tqdm.get_lock()
    try:
        scheduler._worker_init()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        assert isinstance(tqdm.get_lock(), type(threading.RLock()))
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGUSR1, saved[1])
        tqdm.set_lock(saved[2])


def _until_stopped(cfg: dict, node_id: str, threads: int) -> None:
    """A build that listens for a stop (as a building stage does) and logs whether one reached it within 20 s."""
    import signal

    got = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    log = Path(cfg["log"])
    with open(log, "a") as out:
        out.write(f"start {node_id}\n")
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(log, "a") as out:
        out.write(f"{'asked' if got else 'unasked'} {node_id}\n")


def _wait_for(log: Path, text: str, count: int = 1) -> None:
    """Until `text` is in the log `count` times (at most 60 s)."""
    deadline = time.monotonic() + 60
    while (not log.exists() or log.read_text().count(text) < count) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_when_started(log: Path, signum: int, starts: int = 1) -> None:
    """From a thread: send this process `signum` once `starts` builds have logged their start."""
    import threading

    def send() -> None:
        _wait_for(log, "start", starts)
        os.kill(os.getpid(), signum)  # handled by the main thread, which is waiting on the builds

    threading.Thread(target=send, daemon=True).start()


def test_a_stop_asked_of_the_run_reaches_every_worker(tmp_path):
    import multiprocessing as mp
    import signal
    from concurrent.futures import ProcessPoolExecutor

    log = tmp_path / "log.txt"
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_until_stopped, {"log": str(log)}, name, 1) for name in ("a", "b")]
        _wait_for(log, "start", 2)
        scheduler._signal_workers(pool, signal.SIGUSR1)
        for future in futures:
            future.result(timeout=30)
    assert sorted(log.read_text().splitlines()) == ["asked a", "asked b", "start a", "start b"]


def test_a_stop_reaches_the_live_workers_when_one_has_just_exited():
    """The pool lists a worker that has exited and been reaped until it notices (a pid no process has now): the stop
    passes over it, raises nothing, and reaches the others."""
    import signal
    import subprocess
    from types import SimpleNamespace

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # SIGUSR1's default action ends it
    try:
        pool = SimpleNamespace(_processes={1: SimpleNamespace(pid=gone.pid), 2: SimpleNamespace(pid=live.pid)})
        scheduler._signal_workers(pool, signal.SIGUSR1)
        assert live.wait(timeout=30) == -signal.SIGUSR1
    finally:
        live.kill()
        live.wait()


def test_a_stop_asked_of_the_run_reaches_the_building_workers_and_nothing_new_starts(tmp_path, python_signals):
    """Three nodes ready at once, two jobs: a stop asked while two build reaches both, and the third never starts (it was
    never handed to the pool, where a queued build would start once a worker is free)."""
    import signal

    from s2d_bench.resume import Stopped

    log = tmp_path / "log.txt"
    _signal_when_started(log, signal.SIGUSR1, starts=2)
    nodes = {"a": _node("a"), "b": _node("b"), "c": _node("c")}
    with pytest.raises(Stopped, match=r"the nodes built so far are kept; stopped \(SIGUSR1\)"):
        scheduler.build_all(nodes, 2, _until_stopped, {i: {"log": str(log)} for i in nodes}, 1)
    lines = log.read_text().splitlines()
    assert sorted(lines) == ["asked a", "asked b", "start a", "start b"]


def test_a_stop_asked_while_the_last_running_build_ends_still_stops_the_run(tmp_path, python_signals):
    """a answers the stop and ends, so nothing runs when the schedule clears b: the run stops (Stopped), never returns as
    if every node were built."""
    import signal

    from s2d_bench.resume import Stopped

    log = tmp_path / "log.txt"
    _signal_when_started(log, signal.SIGUSR1)
    nodes = {"a": _node("a"), "b": _node("b", parent="a")}
    with pytest.raises(Stopped, match="the nodes built so far are kept"):
        scheduler.build_all(nodes, 2, _until_stopped, {i: {"log": str(log)} for i in nodes}, 1)
    assert log.read_text().splitlines() == ["start a", "asked a"]


def test_ctrl_c_stops_the_run_at_once_stopping_its_workers(tmp_path, python_signals):
    import signal

    log = tmp_path / "log.txt"
    _signal_when_started(log, signal.SIGINT)
    nodes = {"a": _node("a"), "b": _node("b", parent="a")}
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        scheduler.build_all(nodes, 2, _until_stopped, {i: {"log": str(log)} for i in nodes}, 1)
    assert time.monotonic() - start < 15  # not after the build's 20 s: the pool's shutdown did not wait, its worker was stopped
    assert log.read_text().split() == ["start", "a"]
