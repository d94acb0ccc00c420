"""Mutation score of the code that makes the numbers (`make mutants`; not part of `make test` or CI).

Runs mutmut (configured in pyproject.toml: which modules, which tests) with one worker per core,
then reads its results (mutants/**/*.meta) and writes, per module, how many mutants the tests
killed, how many survived and how many are equivalent (listed in EQUIVALENT below with the
reason: same behaviour, so no test can kill them). The score is killed / (all - equivalent).

    python benchmarks/mutants.py              # run, then score; writes results/mutants.json
    python benchmarks/mutants.py --score-only # score the last run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "mutants.json"

# mutant name -> why it behaves as the original (reviewed by hand; a new survivor is either killed by a test or added here)
EQUIVALENT: dict[str, str] = {
    "s2d_bench.chunked.xǁObjectiveǁper_token__mutmut_21":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.xǁObjectiveǁper_token__mutmut_23":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.xǁObjectiveǁper_token__mutmut_30":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.xǁObjectiveǁper_token__mutmut_32":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x__log_softmax__mutmut_7":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x__chunk__mutmut_44":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x__logp_chunk__mutmut_19":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x__logp_chunk__mutmut_21":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x__logp_chunk__mutmut_23":
        "the tensors are (m, V) or (m, 1): dim/index +1 is dim -1",
    "s2d_bench.chunked.x_distill_loss__mutmut_1":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x_distill_loss__mutmut_2":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x_token_logprobs__mutmut_1":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x_token_logprobs__mutmut_2":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_3":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_6":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_11":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_28":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_29":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_36":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x__over_chunks__mutmut_37":
        "chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)",
    "s2d_bench.chunked.x_token_logprobs__mutmut_21":
        "values are float32 always (_log_softmax casts): float32 is the default dtype",
    "s2d_bench.chunked.x_token_logprobs__mutmut_24":
        "values are float32 always (_log_softmax casts): float32 is the default dtype",
    "s2d_bench.generation.sampling.x_next_token__mutmut_4":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_16":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_21":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_23":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_44":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_46":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_53":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_58":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_83":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_91":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_93":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_109":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_112":
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    "s2d_bench.generation.sampling.x_next_token__mutmut_35":
        'float("-INF") is float("-inf")',
    "s2d_bench.generation.sampling.x_next_token__mutmut_68":
        'float("-INF") is float("-inf")',
    "s2d_bench.generation.sampling.x_next_token__mutmut_82":
        'float("-INF") is float("-inf")',
    "s2d_bench.generation.sampling.x_next_token__mutmut_36":
        "top_p is at most 1 (config-checked); at 1 the exclusive cumulative mass never exceeds it: nothing is dropped either way",
    "s2d_bench.generation.sampling.x_next_token__mutmut_37":
        "top_p is at most 1 (config-checked); at 1 the exclusive cumulative mass never exceeds it: nothing is dropped either way",
    "s2d_bench.generation.sampling.x_next_token__mutmut_97":
        "uniforms.to(None) leaves them where they are; on one device the same",
    "s2d_bench.generation.sampling.x_next_token__mutmut_111":
        "a uniform below 1 times the total stays below the cdf's last entry: the index never exceeds V - 1, so a clamp at V + 1 is the clamp at V - 1",
    "s2d_bench.leaderboards.tables.x_bootstrap__mutmut_11":
        "rng.integers(n, size=...) draws from [0, n) exactly as rng.integers(0, n, size=...): numpy reads a lone bound as high",
}


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def score() -> dict:
    modules: dict[str, dict] = defaultdict(lambda: {"killed": 0, "survived": 0, "equivalent": 0, "no tests": 0, "timeout": 0, "other": 0,
                                                    "survivors": []})
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        for name, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            status = _status(code)
            row = modules[module]
            if status == "survived" and name in EQUIVALENT:
                row["equivalent"] += 1
            elif status == "survived":
                row["survived"] += 1
                row["survivors"].append(name)
            elif status in row:
                row[status] += 1
            else:
                row["other"] += 1
    for row in modules.values():
        judged = row["killed"] + row["survived"] + row["no tests"] + row["timeout"] + row["other"]
        row["score"] = round((row["killed"] + row["timeout"]) / judged, 3) if judged else None
    killed = sum(r["killed"] + r["timeout"] for r in modules.values())
    judged = sum(r["killed"] + r["survived"] + r["no tests"] + r["timeout"] + r["other"] for r in modules.values())
    return {"modules": dict(modules), "total": {"killed": killed, "judged": judged, "score": round(killed / judged, 3) if judged else None},
            "equivalent": EQUIVALENT}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--score-only", action="store_true")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    seconds = None
    if not args.score_only:
        start = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)], cwd=ROOT, env=env, check=False)
        seconds = round(time.perf_counter() - start)
    report = score()
    report["seconds"] = seconds
    print(f"{'module':<40}{'killed':>8}{'survived':>10}{'equiv':>7}{'no tests':>10}{'score':>7}")
    for module, row in sorted(report["modules"].items()):
        print(f"{module:<40}{row['killed'] + row['timeout']:>8}{row['survived']:>10}{row['equivalent']:>7}{row['no tests']:>10}"
              f"{row['score'] if row['score'] is not None else '-':>7}")
    print(f"total: {report['total']['killed']} of {report['total']['judged']} killed ({report['total']['score']}), {seconds} s")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
