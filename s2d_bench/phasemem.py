"""Each phase's measured memory peak as a run goes, kept beside the preflight's estimate of the same phase.

The preflight promises that every phase fits; this module measures what each one took, so a run
proves (or disproves) the promise on its own hardware. A phase is a stage's rollouts, its update,
GRPO's reference copy, evaluating one benchmark, or C2. Its peak is counted above the memory at its
start (the model states already there are the preflight's `before`, not the phase's work):
- CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`, reset at the phase's start)
  above what was allocated then;
- Linux without a GPU: the resident peak (VmHWM, reset through /proc/self/clear_refs) above the
  resident set then, less the file pages it faulted in (mapped weights, see `_host_probe`). Memory glibc keeps for reuse is resident already and is not counted again, so
  this is the phase's growth of the process; `benchmarks/run_memory.py` serves large allocations by
  mmap (MALLOC_MMAP_THRESHOLD_) so that a phase's tensors are counted in full;
- anywhere else nothing is measured.
Phases do not nest (a reset would lose the outer peak); a phase met again keeps its largest peak.
The pipeline opens a `Meter` around each node and writes what it met to the node's `memory.json`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path
from typing import Callable, Iterator

from s2d_bench.nodefiles import write_json

MIB = 2**20
_ACTIVE: contextvars.ContextVar["Meter | None"] = contextvars.ContextVar("s2d_phase_meter", default=None)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024


def _host_probe() -> tuple[Callable[[], object], Callable[[object], int]] | None:
    """(start, growth) of the resident set, or None where its peak cannot be reset (not Linux, no /proc).

    Weights loaded from safetensors on the CPU are file pages mapped, not copied: the first forward after a load
    faults them in, which is the weights (the preflight's memory before the phase), not the phase's work. Pages of
    files stay resident once faulted in, so the file pages the phase added are taken off its peak. The optimizer's
    first step writes those mapped weights in place, which turns each file page into an anonymous copy, one for one:
    the resident set does not grow, but the file pages fall (by the weights, 42 MiB in run_memory.py's small GRPO
    teacher), and a fall is not taken off (it once counted the weights as the update's growth: 184 MiB measured, 150 real)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: VmHWM starts again from the current resident set
        _status_bytes("VmHWM")
    except OSError:
        return None

    def start() -> object:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS"), _status_bytes("RssFile")

    def growth(begun: object) -> int:
        rss, files = begun  # type: ignore[misc]
        return _status_bytes("VmHWM") - rss - max(_status_bytes("RssFile") - files, 0)

    return start, growth


def _cuda_probe() -> tuple[Callable[[], object], Callable[[object], int]]:
    import torch

    def start() -> object:
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    return start, lambda begun: torch.cuda.max_memory_allocated() - begun  # type: ignore[operator]


class Meter:
    """The peaks of the phases met while it is active, in bytes above each phase's start."""

    def __init__(self, device: str) -> None:
        self.probe = _cuda_probe() if str(device).startswith("cuda") else _host_probe()
        self.kind = "cuda allocated" if str(device).startswith("cuda") else "resident set"
        self.peaks: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.probe is None:
            yield
            return
        start, growth = self.probe
        begun = start()
        try:
            yield
        finally:
            self.peaks[name] = max(self.peaks.get(name, 0), max(growth(begun), 0))

    def rows(self) -> dict[str, float]:
        return {name: round(b / MIB, 1) for name, b in sorted(self.peaks.items())}


@contextlib.contextmanager
def measuring(device: str) -> Iterator[Meter]:
    """Phases entered (`phase`) in this context are measured into the meter yielded."""
    meter = Meter(device)
    token = _ACTIVE.set(meter)
    try:
        yield meter
    finally:
        _ACTIVE.reset(token)


def phase(name: str) -> contextlib.AbstractContextManager:
    """Measure `name` if a meter is active (the pipeline's); otherwise nothing (a backend run by hand, a test)."""
    meter = _ACTIVE.get()
    return meter.phase(name) if meter is not None else contextlib.nullcontext()


def write(meter: Meter, path: Path) -> None:
    """Merge the meter's peaks into `path` (a node evaluated again later keeps its training phases' figures)."""
    if not meter.peaks:
        return
    kept = json.loads(path.read_text()) if path.exists() else {}
    peaks = {**kept.get("peaks_mib", {}), **meter.rows()}
    write_json(path, {"measure": meter.kind, "peaks_mib": dict(sorted(peaks.items()))})
