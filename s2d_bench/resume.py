"""A training stage's resumable state: saved every N steps or minutes and when asked to stop, so a stage killed
mid-way, stopped by hand or cut by a cluster's time limit continues where it was, to the weights of an uninterrupted run.

A paper-scale stage runs for hours to days and clusters cap jobs at 24-48 h; without this, a kill at warmup step 31
redid the warmup from step 0. What a step depends on is saved whole, so the continued stage takes the same steps:
  resume/step-<k>/trainer/   the model and optimizer as the runtime holds them (`Trainer.save_state`: one file for
                             one process, DeepSpeed's engine checkpoint, each rank its ZeRO partition, for several)
  resume/step-<k>/loop.pt    steps done, the stage's draw generator, torch's random states, what the loop kept
                             (GRPO: the labeled draws so far)
  resume/step-<k>/complete   written last; a save cut short has none and is ignored
Only the latest complete save is kept; the pipeline removes `resume/` once the node's model is committed.

Stopping: SIGUSR1 (Slurm's `--signal` before a time limit, or `kill -USR1` by hand) and, in a run in a terminal, a
first Ctrl-C ask the stage to save after the step in progress and stop (`Stopped`); a second Ctrl-C stops at once.
Every rank decides together (the largest request over ranks), so a group saves and stops at the same step.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from s2d_bench.errors import Stopped

if TYPE_CHECKING:  # types only: importing this module must not load torch (cli build-node listens before it does)
    from s2d_bench.backends.runtime import Runtime, Trainer
    from s2d_bench.config import CheckpointConfig

_requested: list[str] = []  # why a stop was asked for (a signal's name), empty when none was
_forwards: list[Callable[[int], None]] = []  # who else is told (listening's `forward`)


def stop_if_requested(what: str) -> None:
    """Stop now if a stop was asked for (a stage that ended as it was asked: its model is saved, `what` says so)."""
    reason = stop_requested()
    if reason is not None:
        raise Stopped(what, reason)


def stop_requested() -> str | None:
    return _requested[0] if _requested else None


@contextlib.contextmanager
def listening(interrupt: bool, forward: Callable[[int], None] | None = None) -> Iterator[None]:
    """SIGUSR1 (and, with `interrupt`, a first Ctrl-C where Python's own handler has it) asks for a stop at the next step
    boundary instead of ending the process; `forward(signal)` passes the request on (to a scheduler's workers). Nested
    uses keep the outermost handler and what it was asked; off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    if not _is_ours(signal.getsignal(signal.SIGUSR1)):
        _requested.clear()
        installed[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, _ask)
    if interrupt and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where a pool worker ignores it
        installed[signal.SIGINT] = signal.signal(signal.SIGINT, _ask)
    if forward is not None:
        _forwards.append(forward)
    try:
        yield
    finally:
        if forward is not None:
            _forwards.remove(forward)
        for signum, handler in installed.items():  # what was asked stays until `stop_if_requested` reads it
            signal.signal(signum, handler)


def _ask(signum: int, frame: Any) -> None:
    if signum == signal.SIGINT and _requested:
        raise KeyboardInterrupt  # the second Ctrl-C: now
    if not _requested:
        _requested.append(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            print("\nstopping after this step, once its state is saved (Ctrl-C again to stop now)", file=sys.stderr)
        for forward in _forwards:
            forward(signal.SIGUSR1)


_ask.ours = True  # type: ignore[attr-defined]


def _is_ours(handler: Any) -> bool:
    return getattr(handler, "ours", False)


class Checkpoints:
    """One stage's saves in `folder` (its node's `resume/`), by `cfg`; `main`: this rank writes the loop's file."""

    def __init__(self, folder: Path, cfg: CheckpointConfig, stage: str, main: bool = True) -> None:
        self.folder, self.cfg, self.main, self.stage = Path(folder), cfg, main, stage
        self._last = time.monotonic()

    def latest(self) -> tuple[int, Path] | None:
        """The last complete save: (steps done, its folder), or None."""
        done = [(int(p.name.split("-")[1]), p) for p in self.folder.glob("step-*") if (p / "complete").exists()]
        return max(done) if done else None

    def resume(self, trainer: Trainer, rng: random.Random) -> tuple[int, dict[str, Any]]:
        """Load the last save into `trainer` and `rng` (and torch's random states): (steps done, what the loop kept);
        (0, {}) when there is none."""
        found = self.latest()
        if found is None:
            return 0, {}
        import torch  # here, not at the top: a Slurm job listens for its signal before torch has loaded (cli build-node)

        step, path = found
        trainer.load_state(path / "trainer")
        loop = torch.load(path / "loop.pt", weights_only=False)  # our own file: a generator's state is a tuple
        rng.setstate(loop["rng"])
        torch.set_rng_state(loop["torch_rng"])
        if torch.cuda.is_available() and loop.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(loop["cuda_rng"])
        if self.main:
            print(f"{self.stage}: continuing from its saved state at step {step}", file=sys.stderr)
        self._last = time.monotonic()
        return step, loop["kept"]

    def step_done(self, done: int, steps: int, trainer: Trainer, rt: Runtime, rng: random.Random, kept: dict[str, Any]) -> None:
        """After each step, on every rank: save when one is due or a stop was asked for (on any rank), then stop if asked.
        The last step saves nothing: the model itself is saved next."""
        due = bool(self.cfg.every_steps and done % self.cfg.every_steps == 0) or \
            bool(self.cfg.every_minutes and time.monotonic() - self._last >= 60 * self.cfg.every_minutes)
        wanted = rt.most(2 if stop_requested() else int(due))  # one collective a step: 2 stop, 1 save
        if wanted == 0 or done >= steps:
            return
        self.save(done, trainer, rt, rng, kept)
        if wanted == 2:
            raise Stopped(f"{self.stage} saved its state at step {done} of {steps} ({self.folder})",
                          stop_requested() or "another rank was asked to")

    def save(self, done: int, trainer: Trainer, rt: Runtime, rng: random.Random, kept: dict[str, Any]) -> None:
        import torch

        path = self.folder / f"step-{done:08d}"
        if self.main:
            shutil.rmtree(path, ignore_errors=True)  # a save of this step cut short
            path.mkdir(parents=True)
        rt.most(0)  # the folder exists before any rank writes into it
        trainer.save_state(path / "trainer")
        rt.most(0)  # every rank's part is written
        if self.main:
            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            torch.save({"step": done, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "cuda_rng": cuda, "kept": kept},
                       path / "loop.pt")
            with open(path / "complete", "w") as handle:
                handle.flush()
                os.fsync(handle.fileno())
            for old in self.folder.glob("step-*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        self._last = time.monotonic()


def kept_rows(metrics: Path, step: int) -> None:
    """Keep a stage's metrics.jsonl rows of the steps before `step` (those a continued stage does not redo)."""
    if not metrics.exists():
        return
    rows = [line for line in metrics.read_text().splitlines() if line.strip()]
    keep = []
    for line in rows:
        try:
            if int(json.loads(line).get("step", 0)) < step:
                keep.append(line)
        except ValueError:
            continue  # a line cut by the kill
    metrics.write_text("".join(line + "\n" for line in keep))
