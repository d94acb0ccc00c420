"""The parallel scheduler (scheduler.py) on a small graph with a build that only logs: dependencies first, at most
`jobs` at once, all threads to a node nothing can run beside, a failure stops the run. Workers are spawned processes,
so the build below is module-level and logs to a file every worker appends to."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from s2d_bench import scheduler
from s2d_bench.plan import Node


def _build(cfg: dict, node_id: str, threads: int) -> None:
    """Log this build's start (with its threads) and end; fail where the config says so."""
    with open(cfg["log"], "a") as log:
        log.write(f"start {node_id} {threads}\n")
    time.sleep(cfg.get("seconds", 0.3))
    if node_id in cfg.get("fail", ()):
        raise ValueError(f"{node_id} failed on purpose")
    with open(cfg["log"], "a") as log:
        log.write(f"end {node_id}\n")


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
    log = tmp_path / "log.txt"
    scheduler.build_all(nodes, jobs, _build, {i: {"log": str(log), **cfg} for i in nodes}, threads)
    return _events(log)


def test_every_node_is_built_once_after_its_parent_and_teacher_at_most_jobs_at_a_time(tmp_path):
    events = _run(tmp_path, _graph(), jobs=2)
    starts = [e[1] for e in events if e[0] == "start"]
    assert sorted(starts) == ["a", "b", "c", "d"]
    order = {e[:2]: i for i, e in enumerate(events)}
    for node in _graph().values():
        for dep in (node.parent, node.teacher):
            if dep:
                assert order[("end", dep)] < order[("start", node.id)], (node.id, dep)
    running, most = 0, 0
    for kind, *_ in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2  # b and c side by side: two jobs were used, never more


def test_a_node_nothing_can_run_beside_gets_every_jobs_threads(tmp_path):
    """a: every other node descends from it (jobs x threads); b and c run side by side (threads each); d is last, alone."""
    threads = {e[1]: int(e[2]) for e in _run(tmp_path, _graph(), jobs=2, threads=3) if e[0] == "start"}
    assert threads == {"a": 6, "b": 3, "c": 3, "d": 6}


def test_a_node_whose_waiting_nodes_all_descend_from_it_gets_every_jobs_threads(tmp_path):
    """e waits on d: nothing can run beside d, so d gets jobs x threads, as the chain's last node e does."""
    nodes = {**_graph(), "e": _node("e", parent="d")}
    threads = {e[1]: int(e[2]) for e in _run(tmp_path, nodes, jobs=2, threads=1) if e[0] == "start"}
    assert threads == {"a": 2, "b": 1, "c": 1, "d": 2, "e": 2}


def test_a_failed_node_stops_the_run_with_its_error_and_its_descendants_never_start(tmp_path):
    with pytest.raises(ValueError, match="b failed on purpose"):
        _run(tmp_path, _graph(), jobs=2, fail=["b"])
    events = _events(tmp_path / "log.txt")
    assert ("start", "d") not in {e[:2] for e in events}
    assert ("end", "c") in events  # c was running beside b: it finishes, its work kept


def test_nodes_waiting_on_a_node_outside_the_plan_are_named(tmp_path):
    nodes = {"x": _node("x", parent="missing")}
    with pytest.raises(RuntimeError, match=r"outside the plan: \['x'\]"):
        _run(tmp_path, nodes, jobs=2)
    assert not (tmp_path / "log.txt").exists()


def test_workers_ignore_ctrl_c_which_the_parent_answers(tmp_path):
    """The worker initializer leaves Ctrl-C and a forwarded stop to the parent (one line, not a traceback per worker)."""
    import signal

    log = tmp_path / "log.txt"
    scheduler.build_all({"a": _node("a")}, 1, _signals, {"a": {"log": str(log)}})
    assert log.read_text().split() == [str(signal.SIG_IGN), str(signal.SIG_IGN)]


def _signals(cfg: dict, node_id: str, threads: int) -> None:
    import signal

    with open(cfg["log"], "a") as log:
        log.write(f"{signal.getsignal(signal.SIGINT)} {signal.getsignal(signal.SIGUSR1)}\n")
