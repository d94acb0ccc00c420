"""Which stage moves a backend difference: cross-swap one stage's inputs between two backends' grids.

When the leaderboard's "backend agreement" section says an arm scores differently on another
backend than on torch, the difference was made somewhere along the arm's chain. Swapping the
inputs of one stage S (its parent checkpoint and, for distillation, its teacher) says where: per
seed, torch's S is trained again from the other backend's inputs and the other backend's S from
torch's, each with the seed of the stage it stands in for, and the four (stage backend x inputs
backend) final models are scored on the same problems with the same evaluation seed. Then

  stage effect   (other's S - torch's S) on the same inputs:  did S itself move it?
  inputs effect  (other's inputs - torch's) under the same S:  was it made upstream of S?
  seed yardstick (torch's S under another seed - torch's S):   how far S moves from its random stream alone

as paired deltas over seeds and problems with 95% intervals over both (leaderboards/intervals.py). The
yardstick matters because the two backends' stages never share a random stream (a stage's seed comes
from its node id, which hashes the backend): it is a null effect by construction, and its interval
holding 0 is the check that the intervals cover seed noise.
Both grids must be in one run directory (`s2d-bench ablate ... run_dir=D` for each backend).

Usage:
    python benchmarks/cross_swap.py [OVERRIDE ...] --run-dir D --arm full [--stage student_rl] [--other trl] [--seeds 0 1 2]
OVERRIDEs (first) are the grids' own (e.g. seed_scope=all). Writes benchmarks/results/cross_swap-<arm>-<stage>.json and prints
a table. The swapped nodes are kept under D/nodes (ids `<stage>-<hash>` of the swap), so a rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from s2d_bench.ablations import ablation_config  # noqa: E402
from s2d_bench.config import load_config  # noqa: E402
from s2d_bench.leaderboards.intervals import interval  # noqa: E402
from s2d_bench.pipeline import Runner  # noqa: E402
from s2d_bench.identity import node_id  # noqa: E402
from s2d_bench.plan import Node  # noqa: E402

ROOT = Path(__file__).resolve().parent
REFERENCE = "torch"


def grid_runner(backend: str, seed: int, run_dir: str, overrides: list[str], grid: str = "all") -> Runner:
    """The runner of `s2d-bench ablate --all` (grid "all") or of `s2d-bench run` (grid "config") for one backend and
    seed: its node ids are the grid's."""
    cfg = load_config(None, [*overrides, f"backend={backend}", f"seed={seed}", f"run_dir={run_dir}",
                             f"store={Path(run_dir) / 'cross_swap.sqlite'}"])
    return Runner(ablation_config(cfg, [], [], everything=True) if grid == "all" else cfg)


def stage_node(runner: Runner, arm: str, stage: str | None) -> Node:
    path = [runner.nodes[i] for i in runner.arm_paths()[arm]]
    matches = [n for n in path if stage is None or n.stage == stage]
    if not matches:
        raise SystemExit(f"arm {arm} runs no {stage} ({', '.join(n.stage for n in path)})")
    return matches[-1]


def swapped_score(runner: Runner, own: Node, inputs: Node, reseed: int = 0) -> dict[str, float]:
    """`runner`'s stage of node `own`, trained from the inputs (parent, teacher) of node `inputs` of the other grid, with
    `own`'s stage seed (plus `reseed`: the stage again under another random stream); its per-problem scores."""
    swap = Node(node_id(own.stage, {"cross_swap_of": own.id, "inputs_of": inputs.id, **({"reseed": reseed} if reseed else {})}),
                own.stage, own.role, inputs.parent, inputs.teacher, own.cfg, [], seed=own.seed + reseed, settings=own.settings)
    runner.add(swap)
    runner.build(swap)
    return scores(runner, swap)


def scores(runner: Runner, node: Node) -> dict[str, float]:
    (target,) = runner.targets
    record = runner.dir.read_record(node, target)
    if record is None:
        raise SystemExit(f"node {node.id} has no evaluation record: run both grids first")
    return record["per_problem"]


def delta(a: list[dict[str, float]], b: list[dict[str, float]]) -> str:
    """a - b paired over seeds and problems, mean [95% CI]."""
    ids = sorted(set.intersection(*(set(x) for x in a + b)))
    return str(interval(np.array([[x[i] for i in ids] for x in a]) - np.array([[x[i] for i in ids] for x in b])))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--arm", required=True)
    ap.add_argument("--stage", default=None, help="the stage whose inputs are swapped (default: the arm's last)")
    ap.add_argument("--other", default="trl", help="the backend compared with torch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grid", choices=["all", "config"], default="all", help="the arms of `ablate --all`, or the config's own")
    ap.add_argument("--out", default=None, help="the JSON to write (default benchmarks/results/cross_swap-<arm>-<stage>.json)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cells: dict[str, list[dict[str, float]]] = {"torch S, torch inputs": [], "torch S, other inputs": [],
                                                "other S, torch inputs": [], "other S, other inputs": [],
                                                "torch S reseeded, torch inputs": []}
    stage = args.stage
    for seed in args.seeds:
        ref, other = (grid_runner(b, seed, args.run_dir, args.overrides, args.grid) for b in (REFERENCE, args.other))
        ref_node, other_node = stage_node(ref, args.arm, stage), stage_node(other, args.arm, stage)
        stage = ref_node.stage
        for a, b in ((ref, other), (other, ref)):  # each runner can load the other grid's checkpoints
            for node in b.nodes.values():
                if node.id not in a.nodes:
                    a.add(node)
        cells["torch S, torch inputs"].append(scores(ref, ref_node))
        cells["other S, other inputs"].append(scores(other, other_node))
        cells["torch S, other inputs"].append(swapped_score(ref, ref_node, other_node))
        cells["other S, torch inputs"].append(swapped_score(other, other_node, ref_node))
        cells["torch S reseeded, torch inputs"].append(swapped_score(ref, ref_node, ref_node, reseed=1))
    means = {k: float(np.mean([np.mean(list(s.values())) for s in v])) for k, v in cells.items()}
    effects = {
        f"stage effect on torch's inputs ({args.other} S - torch S)": delta(cells["other S, torch inputs"], cells["torch S, torch inputs"]),
        f"stage effect on {args.other}'s inputs ({args.other} S - torch S)": delta(cells["other S, other inputs"], cells["torch S, other inputs"]),
        f"inputs effect under torch's S ({args.other} inputs - torch)": delta(cells["torch S, other inputs"], cells["torch S, torch inputs"]),
        f"inputs effect under {args.other}'s S ({args.other} inputs - torch)": delta(cells["other S, other inputs"], cells["other S, torch inputs"]),
        f"total ({args.other} arm - torch arm)": delta(cells["other S, other inputs"], cells["torch S, torch inputs"]),
        "seed yardstick (torch S reseeded - torch S, same inputs)": delta(cells["torch S reseeded, torch inputs"], cells["torch S, torch inputs"]),
    }
    print(f"arm {args.arm}, stage {stage} swapped, seeds {args.seeds}, other backend {args.other}")
    print(f"{'cell':<28}{'mean avg@k':>12}")
    for k, v in means.items():
        print(f"{k.replace('other', args.other):<28}{v:>12.3f}")
    for k, v in effects.items():
        print(f"{k:<62}{v}")
    out = Path(args.out) if args.out else ROOT / "results" / f"cross_swap-{args.arm}-{stage}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"arm": args.arm, "stage": stage, "other": args.other, "seeds": args.seeds, "overrides": args.overrides,
              "means": means, "effects": effects, "per_problem": cells}  # cell -> per seed, problem id -> avg@k: recompute any interval
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
