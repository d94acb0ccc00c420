"""Do two versions of the code produce the same outputs? For restructurings that must change nothing (issue #27).

Runs, from each code folder (a git worktree of each commit), the embedded default (`s2d-bench run`) and a
short ablation grid (`ablate --drop warmup --seeds 2` at test budgets), each into its own run directory and
store, then compares every node folder: model files byte for byte, JSON and JSON Lines records after
dropping what differs run to run (timings, timestamps, the git commit), completions byte for byte, and the
printed tables. Prints and writes a JSON summary.

    git worktree add /tmp/old OLD_COMMIT && git worktree add /tmp/new NEW_COMMIT
    python benchmarks/same_outputs.py /tmp/old /tmp/new --out /tmp/same   # about 25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VARYING = {"git_commit", "timestamp", "eval_seconds", "samples_per_second", "tokens_per_second", "train_seconds", "seconds",
           "peaks_mib"}  # peaks_mib: measured memory (memory.json), which moves by allocator pages run to run like a timing
GRID = ["ablate", "--drop", "warmup", "--seeds", "2", "teacher.pretrain.steps=20", "student.pretrain.steps=20", "stages.teacher_rl.steps=2",
        "stages.student_rl.steps=2", "stages.warmup.steps=2", "stages.opd.steps=2", "task.n_test=6", "eval.samples=2"]
CLI = "import sys; from s2d_bench.cli import main; sys.argv[0] = 's2d-bench'; sys.exit(main())"


def _stable(value):  # noqa: ANN001, ANN202 - JSON values
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def produce(code: Path, out: Path, runs: tuple[str, ...]) -> None:
    """The commands `runs` names (run, grid) from `code`'s package (PYTHONPATH first; run from `out`, so the current
    folder adds nothing)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "S2D_STORE": str(out / "store.sqlite")}
    for name, args in (("run", ["run"]), ("grid", GRID)):
        if name not in runs:
            continue
        with open(out / f"{name}.log", "w") as log:
            subprocess.run([sys.executable, "-c", CLI, *args, f"run_dir={out / name}"], cwd=out, env=env, stdout=log, stderr=log, check=True)


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".png":  # plots carry no numbers of their own (their metrics.jsonl is compared)
        return True
    if a.suffix == ".json":
        return _stable(json.loads(a.read_text())) == _stable(json.loads(b.read_text()))
    if a.name == "metrics.jsonl":
        return [_stable(json.loads(x)) for x in a.read_text().splitlines()] == [_stable(json.loads(x)) for x in b.read_text().splitlines()]
    return a.read_bytes() == b.read_bytes()


def compare(a: Path, b: Path, runs: tuple[str, ...]) -> dict:
    report: dict = {"different": []}
    for sub in runs:
        nodes_a, nodes_b = (sorted(p.name for p in (x / sub / "nodes").iterdir()) for x in (a, b))
        files = [p for node in nodes_a for p in sorted((a / sub / "nodes" / node).rglob("*")) if p.is_file()]
        different = [str(p) for p in files if not _same(p, b / p.relative_to(a))] if nodes_a == nodes_b else ["node ids differ"]
        tables = [[line for line in (x / f"{sub}.log").read_text().replace("\r", "\n").splitlines()
                   if line.startswith("|") or line.strip().split(" ")[0] in ("arm", "(base)", "direct-grpo", "bridge", "full")]
                  for x in (a, b)]
        report[sub] = {"nodes": len(nodes_a), "files": len(files), "identical": len(files) - len(different), "table_identical": tables[0] == tables[1]}
        report["different"] += different
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path, help="code folder of the version before")
    ap.add_argument("new", type=Path, help="code folder of the version after")
    ap.add_argument("--out", type=Path, required=True, help="where both versions' run directories go")
    ap.add_argument("--compare-only", action="store_true", help="compare outputs already under --out")
    ap.add_argument("--grid-only", action="store_true", help="the short grid alone (a few minutes), not the embedded default")
    args = ap.parse_args()
    runs = ("grid",) if args.grid_only else ("run", "grid")
    if not args.compare_only:
        for name, code in (("old", args.old), ("new", args.new)):
            produce(code.resolve(), (args.out / name).resolve(), runs)
    report = compare(args.out / "old", args.out / "new", runs)
    print(json.dumps(report, indent=1))
    (args.out / "same_outputs.json").write_text(json.dumps(report, indent=1) + "\n")
    if report["different"]:
        raise SystemExit(f"{len(report['different'])} files differ")


if __name__ == "__main__":
    main()
