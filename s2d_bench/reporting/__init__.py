"""Training curves where people look for them, mirrored from metrics.jsonl (which stays the record).

`report_to: [tensorboard]` sends every per-step metric of every stage (and of base pretraining)
to `<run_dir>/tb/<node>` and each evaluation's avg@k to the same run, so `tensorboard --logdir
runs/<name>` shows the whole workflow, one run per node; `tb/arms/<arm>` has each arm's avg@k
after each of its stages. Independent of it, `curves.png` beside every node's metrics.jsonl plots
the stage's reward or KL, entropy and length (curves.py). A reporter is `REPORTERS.get(name)(log_dir)`
with `log(tag_prefix, row, step)` and `close()`; `reporting` opens and closes those a config names.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

from s2d_bench.registry import Registry

Report = Callable[[str, dict, int], None]

REPORTERS: Registry = Registry("reporter")
REPORTERS.register("tensorboard", "s2d_bench.reporting.tensorboard:TensorBoard",
                   "TensorBoard event files under <run_dir>/tb/<node> (extra tensorboard)", extra="tensorboard")


@contextlib.contextmanager
def reporting(names: list[str], log_dir: Path) -> Iterator[Report]:
    """A `report(prefix, row, step)` that sends to one reporter per configured name under `log_dir`, all closed on exit
    (none, and no folder, when `names` is empty)."""
    reporters = [REPORTERS.get(name)(log_dir) for name in names]

    def report(prefix: str, row: dict[str, Any], step: int) -> None:
        for reporter in reporters:
            reporter.log(prefix, row, step)

    try:
        yield report
    finally:
        for reporter in reporters:
            reporter.close()


def report_evaluations(names: list[str], log_dir: Path, records: list[dict[str, Any]], step: int) -> None:
    """Evaluation records in a node's run, at the stage's last step, so each sits at the end of its curves."""
    if names and records:
        with reporting(names, log_dir) as report:
            for r in records:
                report(f"eval/{r['task']}", {f"avg@{r['k']}": r["mean"], "stderr": r["stderr"]}, step)


def report_arms(names: list[str], folder: Path, arm_rows: dict[str, list[tuple[str, str]]], records: list[dict[str, Any]]) -> None:
    """`folder/<arm>`: each arm's avg@k after each of its stages (step i = the arm's i-th model), the whole workflow on
    one axis; rewritten every time, as it is derived from the records."""
    if not names:
        return
    by_node: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_node.setdefault(r["node"], []).append(r)
    for arm, rows in arm_rows.items():
        shutil.rmtree(folder / arm, ignore_errors=True)
        with reporting(names, folder / arm) as report:
            for i, (node_id, _) in enumerate(rows):
                for r in by_node.get(node_id, []):
                    report(f"eval/{r['task']}", {f"avg@{r['k']}": r["mean"]}, i)
