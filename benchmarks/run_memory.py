"""Every phase of a whole run, measured as it runs, beside the preflight's estimate of the same phase: CPU, scaled Qwen3.

A run of all four stages (GRPO on the teacher with its KL anchor, so the reference copy too; the
forward-KL warmup; OPD; GRPO on the student), each node evaluated and the distillation nodes
diagnosed (C2), at a scaled Qwen3 shape: randomly initialised models (a random model rarely stops,
so every sample runs to max_new_tokens, the worst case the estimate assumes) saved as folders,
vocabulary 4,096, completions of 256 tokens. The pipeline measures each phase itself
(s2d_bench/phasemem.py: the resident peak above the phase's start; large allocations served by
mmap, MALLOC_MMAP_THRESHOLD_, so a phase's freed tensors leave the resident set) and writes it to
each node's memory.json; the estimate beside it is the preflight's (`preflight.json`, `nodes`:
`growth_gib`, what the phase adds to the memory at its start). Float32, one thread, jobs 1.

    python benchmarks/run_memory.py            # prints the table, writes results/run_memory.json
    python benchmarks/run_memory.py --small --out F.json   # the fast test's case: a shorter run, the same phases
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
TEACHER = dict(layers=6, hidden=384, heads=6, kv_heads=2, mlp=1024)
STUDENT = dict(layers=4, hidden=256, heads=4, kv_heads=2, mlp=768)
VOCAB = 4096
FULL = dict(new_tokens=256, prompts=8, samples=4, batch=32, test=16)
SMALL = dict(new_tokens=64, prompts=2, samples=2, batch=4, test=2, steps=1, unlabeled=200)
LOW, HIGH = 0.9, 1.3  # the band: estimate / measured within -10% / +30%


def _models(folder: Path) -> dict[str, str]:
    """The two models, random, saved as folders a config points at (the character tokenizer, 4,096 embedding rows)."""
    from s2d_bench.models.builders import Qwen3Shape, save, tiny_qwen3

    paths = {}
    for role, shape, seed in (("teacher", TEACHER, 1), ("student", STUDENT, 2)):
        model, tok = tiny_qwen3(Qwen3Shape(**shape, max_positions=1024), seed, vocab_size=VOCAB)
        save(model, tok, folder / role)
        paths[role] = str(folder / role)
    return paths


def _prompt_tokens(config: Path) -> int:
    """The longest rendered prompt the run samples (training and test prompts): the estimate's preflight.prompt_tokens."""
    from s2d_bench.config import load_config
    from s2d_bench.generation.protocol import render
    from s2d_bench.models.builders import load_tokenizer
    from s2d_bench.tasks import TASKS

    cfg = load_config(str(config))
    task = TASKS.get(cfg.task.name)(cfg.task)
    splits = task.splits()
    prompts = [p.prompt for p in splits.labeled + splits.unlabeled + splits.test]
    tok = load_tokenizer(cfg.student.path)
    return max(len(ids) for ids in render(tok, prompts, cfg.prompt.thinking))


def config(paths: dict[str, str], run_dir: Path, size: dict[str, int]) -> dict:
    new, steps = size["new_tokens"], size.get("steps", 2)
    grpo = dict(steps=steps, prompts_per_step=size["prompts"], samples_per_prompt=size["samples"], max_new_tokens=new, chunk_size=256)
    distill = dict(steps=steps, batch_size=size["batch"], max_new_tokens=new, chunk_size=256)
    return {
        "name": "run-memory", "seed": 0, "backend": "torch", "device": "cpu", "threads": 1, "jobs": 1,
        "run_dir": str(run_dir / "run"), "store": str(run_dir / "store.sqlite"),
        "task": {"name": "add3mix", "n_labeled": 64, "n_unlabeled": size.get("unlabeled", 2000), "n_test": size["test"]},
        "teacher": {"path": paths["teacher"]}, "student": {"path": paths["student"]},
        "stages": {"teacher_rl": {**grpo, "kl_coef": 0.05}, "warmup": distill, "opd": distill, "student_rl": grpo},
        "arms": {"full": {"stages": ["teacher_rl", "warmup", "opd", "student_rl"]}},
        "eval": {"samples": size["samples"], "max_new_tokens": new, "prompts_per_batch": 4},
        "diagnostics": {"c2_prompts": size["test"], "c2_samples": size["samples"], "chunk_size": 256},
    }


def measure(size: dict[str, int], work: Path) -> list[dict]:
    """Runs the whole run in a fresh process and joins each node's measured peaks with the preflight's estimates."""
    paths = _models(work / "models")
    cfg = config(paths, work, size)
    path = work / "run-memory.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cfg["preflight"] = {"prompt_tokens": _prompt_tokens(path)}
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(Path(sys.executable).parent / "s2d-bench"), "run", "--config", str(path)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"s2d-bench run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    run = Path(cfg["run_dir"])
    estimates = json.loads((run / "preflight.json").read_text())["nodes"]
    rows = []
    for node in estimates:
        measured = json.loads((run / "nodes" / node["node"] / "memory.json").read_text())["peaks_mib"]
        for name in sorted(set(node["phases"]) | set(measured)):
            est = node["phases"].get(name, {}).get("growth_gib")
            rows.append({"node": node["node"], "stage": node["stage"], "phase": name, "measured_mib": measured.get(name),
                         "estimate_mib": round(est * 1024, 1) if est is not None else None})
    return rows


def ratio(row: dict) -> float | None:
    """Estimate over measured; None where either is missing or nothing rose over the allocator's noise (0.0 MiB: a
    small phase whose pages were all reused, which once ended the small case with a ZeroDivisionError)."""
    if not row["measured_mib"] or row["estimate_mib"] is None:
        return None
    return row["estimate_mib"] / row["measured_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the fast test's shorter run")
    parser.add_argument("--out", type=Path, help="the JSON written (default: results/run_memory.json; none with --small)")
    args = parser.parse_args()
    size = SMALL if args.small else FULL
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(size, Path(tmp))
    print(f"{'node':<28}{'phase':<16}{'measured MiB':>13}{'estimate MiB':>13}{'ratio':>7}")
    for r in rows:
        q = ratio(r)
        cells = [f"{r[k]:>13.1f}" if r[k] is not None else f"{'missing':>13}" for k in ("measured_mib", "estimate_mib")]
        print(f"{r['node']:<28}{r['phase']:<16}{''.join(cells)}{q:>7.2f}" if q else f"{r['node']:<28}{r['phase']:<16}{''.join(cells)}")
    within = [r for r in rows if ratio(r) is not None and LOW <= ratio(r) <= HIGH]
    print(f"{len(within)} of {len(rows)} phases within {LOW:.2f}..{HIGH:.2f}")
    meta = {"teacher": TEACHER, "student": STUDENT, "vocab": VOCAB, **size, "band": [LOW, HIGH],
            "machine": "2-core CPU, float32, one thread", "rows": rows}
    out = args.out or (None if args.small else ROOT / "results" / "run_memory.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
