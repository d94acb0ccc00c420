"""Build a plan's nodes in parallel worker processes (config `jobs`): a node starts once its parent
and its teacher are built.

The embedded world is CPU-bound at one thread a process (two threads on two cores are slower
than one when anything else runs, ../shared/research/env.md), and its arms are mostly independent
once their shared prefix is built: the teacher's and the student's base models, direct GRPO
beside the bridge, the ablation grid's branches. So `jobs: 2` on two cores runs two nodes at a
time, each in its own process with `threads` torch threads. A lone node (`lone`, decided from the
plan alone) gets all `jobs x threads` threads instead, so the tail of a chain does not leave cores
idle and no two processes ever share a core. It was once decided from timing (nothing else
running as the node starts), and a node's thread count changes its bits: a weight's gradient
(x.T @ dy over the batch's tokens) differs at one and two threads (a 64 x 128 weight: the same
bits over 512 tokens, not over 1,024; measured, torch 2.13 CPU), so a run could write other
numbers than the same run before it. A node's seeds come from its id, so a run writes the same
numbers every time at the same `jobs`, and a parallel run writes what a sequential one writes
where one and two threads give the same bits (the tests' tiny shapes: tests/test_pipeline.py
compares whole runs; not the embedded default's).
Workers only build (train, evaluate, diagnose, all to the node's folder); the calling process then
stores the records in plan order.
A failed node stops the run after the nodes already running finish; finished nodes stay on disk,
so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator

from s2d_bench import resume
from s2d_bench.plan import ancestors

Build = Callable[[dict[str, Any], str, int], None]


def _deps(node: Any) -> list[str]:
    return [d for d in (node.parent, node.teacher) if d]


def _built_from(nodes: dict[str, Any], node_id: str) -> set[str]:
    """Every node `node_id` is built from, transitively (`plan.ancestors`, less the node)."""
    return {n.id for n in ancestors(nodes, node_id)[1:]}


def lone(nodes: dict[str, Any]) -> dict[str, set[str]]:
    """The nodes that get every job's threads, each with the unrelated nodes it waits for, from the plan alone.

    A node is lone when every node neither built from it nor among its own sources is ready strictly earlier: its
    sources are a proper subset of the node's (direct GRPO, from the student's base model, against the warmup, from
    both base models and the RL teacher). Such a node starts once those have finished too, so nothing runs beside it,
    whatever finishes first. Nodes that are ready together (two base models, an ablation grid's branches, other
    seeds' chains) stay at `threads` each and run side by side. Every wait is on a node with fewer sources, so no
    two nodes wait on each other.
    """
    sources = {node_id: _built_from(nodes, node_id) for node_id in nodes}
    out = {}
    for node_id in nodes:
        unrelated = {other for other in nodes if other != node_id and other not in sources[node_id]
                     and node_id not in sources[other]}
        if all(sources[other] < sources[node_id] for other in unrelated):
            out[node_id] = unrelated
    return out


def build_all(nodes: dict[str, Any], jobs: int, build: Build, cfgs: dict[str, dict[str, Any]], threads: int) -> None:
    """Call build(cfgs[node_id], node_id, node_threads) for every node in worker processes, dependencies first.

    `nodes` maps id -> node (with `.parent` and `.teacher` ids or None), in plan order; `cfgs` gives
    each node the config of a run it belongs to; `build` must be a module-level function (it is
    pickled into spawned workers).
    """
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        with _terminate_is_an_interrupt(), resume.listening(interrupt=False, forward=lambda signum: _signal_workers(pool, signum)):
            _schedule(pool, nodes, jobs, build, cfgs, threads)
    except KeyboardInterrupt:  # Ctrl-C or a kill: no worker outlives the run (a half-built node is model.partial, redone)
        workers = list((pool._processes or {}).values())  # noqa: SLF001 - the executor has no public way to stop a task
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.join(timeout=10)
        raise
    finally:  # nothing queued starts; after a failed node the running ones finish first, so their work is kept
        pool.shutdown(wait=True, cancel_futures=True)


def _signal_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    """A stop asked of the run (SIGUSR1) reaches every worker: each saves at its stage's next step and stops."""
    for proc in list((pool._processes or {}).values()):  # noqa: SLF001 - as in build_all
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


def _worker_init() -> None:
    """Worker initializer. Ctrl-C reaches the whole process group; the parent alone answers it, by stopping the workers,
    so the user sees one line instead of a traceback per worker. Progress bars share a thread lock, not tqdm's default
    multiprocessing lock: a worker stopped mid-stage would leave that semaphore behind, and Python warns of it at exit."""
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a stop forwarded to an idle worker; a building one listens (resume.listening)
    tqdm.set_lock(threading.RLock())


@contextlib.contextmanager
def _terminate_is_an_interrupt() -> Iterator[None]:
    """`kill` (SIGTERM) of the parent while workers build: handled as Ctrl-C, so the workers are stopped too (they were
    left running, orphaned, and kept writing). Only the main thread may set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _schedule(pool: ProcessPoolExecutor, nodes: dict[str, Any], jobs: int, build: Build, cfgs: dict[str, dict[str, Any]], threads: int) -> None:
    deps = {node_id: set(_deps(node)) for node_id, node in nodes.items()}
    outside = sorted(node_id for node_id, own in deps.items() if not own <= nodes.keys())
    if outside:
        raise RuntimeError(f"nodes wait on nodes outside the plan: {outside}")
    lone_waits = lone(nodes)  # after the check: ancestors of a node outside the plan cannot be walked
    for node_id, unrelated in lone_waits.items():
        deps[node_id] |= unrelated
    waiting = dict.fromkeys(nodes)  # plan order
    done: set[str] = set()
    running: dict[Future, str] = {}
    while waiting or running:
        if resume.stop_requested():
            waiting.clear()  # a stop was asked for: start nothing new; the running nodes save at their next step and stop
        for node_id in list(waiting):
            if len(running) >= jobs:
                break
            if deps[node_id] <= done:
                del waiting[node_id]
                running[pool.submit(build, cfgs[node_id], node_id, threads * jobs if node_id in lone_waits else threads)] = node_id
        if not running:
            if not waiting:
                break
            raise RuntimeError(f"nodes wait on each other: {sorted(waiting)}")
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            node_id = running.pop(future)
            error = future.exception()
            if error is not None:
                waiting.clear()  # start nothing new; the running ones finish on exit
                for other in running:
                    other.cancel()
                raise error
            done.add(node_id)
    resume.stop_if_requested("the nodes built so far are kept")
