"""Training curves where people look for them, mirrored from metrics.jsonl (which stays the record).

`report_to: [tensorboard]` sends every per-step metric of every stage (and of base pretraining)
to `<run_dir>/tb/<node>` and each evaluation's avg@k to the same run, so `tensorboard --logdir
runs/<name>` shows the whole workflow, one run per node; `tb/arms/<arm>` has each arm's avg@k
after each of its stages. Independent of it, `curves.png` beside every node's metrics.jsonl plots
the stage's reward or KL, entropy and length (curves.py). A reporter is `REPORTERS.get(name)(log_dir)`
with `log(tag_prefix, row, step)` and `close()`.
"""

from s2d_bench.registry import Registry

REPORTERS: Registry = Registry("reporter")
REPORTERS.register("tensorboard", "s2d_bench.reporting.tensorboard:TensorBoard",
                   "TensorBoard event files under <run_dir>/tb/<node> (extra tensorboard)", extra="tensorboard")


def open_reporters(names: list[str], log_dir):  # noqa: ANN001, ANN201 - a Path; the reporters
    """One reporter per configured name, writing under `log_dir` (none when `report_to` is empty)."""
    return [REPORTERS.get(name)(log_dir) for name in names]


def log_all(reporters: list, prefix: str, row: dict, step: int) -> None:
    for reporter in reporters:
        reporter.log(prefix, row, step)


def close_all(reporters: list) -> None:
    for reporter in reporters:
        reporter.close()
