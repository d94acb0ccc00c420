"""Evaluation throughput: s2d-bench's avg@16 generation against lm-eval's `hf` model, and grading.

1. Generation: the same tiny Qwen3 model (built from config, float32, CPU) and the same first N
   MATH-500 problems, 16 samples each at temperature 1.0, through (a) s2d-bench's HF engine and
   (b) lm-eval 0.4.13's `hf` model on the shipped `s2d_math500` task (repeats: 16), at each batch
   size given. Both generate to EOS or max tokens; only generation is timed (ours without grading,
   lm-eval's `generate_until` without its set-up); samples/s and generated tokens/s are reported,
   and the speed-up is taken against lm-eval's fastest batch size.
2. Grading: 8,000 distinct completions built from MATH-500 gold answers (right, reformatted,
   and other problems' answers), graded by math-verify in the process pool plus the audit grader.

Usage: python benchmarks/eval_throughput.py [--data ../shared/data] [--problems 48] [--runs 3] [--note "nothing else running"]
       python benchmarks/eval_throughput.py --engine hf-compiled --passes 2 --skip-grading --out F.json
Prints a table a run and the median and spread of `--runs` runs (the machine is noisy: one run of 16 problems moved
by 30% run to run), and writes them all to benchmarks/results/eval_throughput.json (or --out). With --passes 2 our engine evaluates
twice in one process and the second pass is compared: hf-compiled's first pass pays its compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from s2d_bench.config import EvalConfig  # noqa: E402
from s2d_bench.generation.engine import EngineConfig  # noqa: E402
from s2d_bench.generation import ENGINES  # noqa: E402
from s2d_bench.harness.evaluate import evaluate  # noqa: E402
from s2d_bench.harness.grading import GradingPool, grade  # noqa: E402
from s2d_bench.models.builders import Qwen3Shape, save, tiny_qwen3  # noqa: E402
from s2d_bench.tasks.benchmarks import MATH500, load_problems  # noqa: E402

ROOT = Path(__file__).resolve().parent


def ours(model_dir: Path, data: str, n: int, max_new: int, prompts_per_batch: int, engine_name: str = "hf", passes: int = 1) -> dict:
    """s2d-bench's evaluation; its generation time (grading excluded) is what is compared. With `passes` > 1 the same
    engine evaluates again in the same process (hf-compiled compiles in its first pass); the last pass is reported,
    every pass's samples/s beside it."""
    engine = ENGINES.get(engine_name).load(str(model_dir), EngineConfig(device="cpu", prompts_per_batch=prompts_per_batch))
    problems = load_problems(MATH500, data, n)
    cfg = EvalConfig(samples=16, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new, prompts_per_batch=prompts_per_batch)
    results = [evaluate(engine, problems, cfg, 0, "math_verify", None) for _ in range(passes)]
    result = results[-1]
    return {"engine": engine_name, "samples": n * 16, "seconds": n * 16 / result.samples_per_second, "prompts_per_batch": prompts_per_batch,
            "gen_samples_per_s": result.samples_per_second, "gen_tokens_per_s": result.tokens_per_second,
            "passes_samples_per_s": [round(r.samples_per_second, 1) for r in results]}


def lm_eval_hf(model_dir: Path, data: str, n: int, max_new: int, batch_size: int) -> dict:
    """lm-eval's `hf` model on the shipped task; only its `generate_until` is timed, as ours is."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from s2d_bench.lmeval import TASKS_DIR

    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=batch_size)
    timed, seconds = lm.generate_until, 0.0

    def generate_until(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal seconds
        start = time.perf_counter()
        try:
            return timed(*args, **kwargs)
        finally:
            seconds += time.perf_counter() - start

    lm.generate_until = generate_until
    out = lm_eval.simple_evaluate(
        model=lm, tasks=["s2d_math500"], task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"data": data, "limit": n}),
        apply_chat_template=True, log_samples=True,
        gen_kwargs=f"do_sample=True,temperature=1.0,top_p=1.0,top_k=0,max_gen_toks={max_new}",
    )
    samples = out["samples"]["s2d_math500"]
    texts = [t for s in samples for t in s["resps"][0]]
    tokens = sum(min(len(tok(t, add_special_tokens=False)["input_ids"]) + 1, max_new) for t in texts)  # + EOS
    return {"samples": len(texts), "seconds": seconds, "batch_size": batch_size,
            "gen_samples_per_s": len(texts) / seconds, "gen_tokens_per_s": tokens / seconds}


def grading_items(data: str, count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` distinct (completion, gold) pairs: right answers, reformatted ones and wrong ones."""
    golds = [p.answer for p in load_problems(MATH500, data)]
    rng = random.Random(seed)
    completions, targets = [], []
    for i in range(count):
        gold = golds[i % len(golds)]
        kind = i % 4
        if kind == 0:
            answer = gold
        elif kind == 1:
            answer = f"{gold} " + " " * (i // len(golds))  # right, spaced differently
        elif kind == 2:
            answer = golds[rng.randrange(len(golds))]  # another problem's answer
        else:
            answer = str(rng.randint(0, 10**6))
        completions.append(f"Step {i}: reasoning...\nThe final answer is $\\boxed{{{answer}}}$.")
        targets.append(gold)
    return completions, targets


def grading(data: str, count: int, workers: int) -> dict:
    completions, golds = grading_items(data, count)
    start = time.perf_counter()
    with GradingPool(workers=workers, timeout=5.0) as pool:
        verdicts = grade(completions, golds, "math_verify", "hendrycks", pool)
        timeouts = pool.timeouts
    seconds = time.perf_counter() - start
    distinct = len({(c, g) for c, g in zip(completions, golds)})
    return {"completions": count, "distinct": distinct, "workers": workers, "seconds": seconds,
            "per_s": count / seconds, "correct": sum(v.correct for v in verdicts), "timeouts": timeouts}


FIGURES = {  # the figures each run gives, and where in its report they are
    "s2d_bench_samples_per_s": lambda r: r["s2d_bench"]["gen_samples_per_s"],
    "lm_eval_fastest_samples_per_s": lambda r: max(v["gen_samples_per_s"] for k, v in r.items() if k.startswith("lm_eval_hf_")),
    "speedup": lambda r: r["speedup_samples_per_s"],
    "grading_seconds": lambda r: r["grading"]["seconds"],  # --grading-count completions (8,000)
}


def measure(args: argparse.Namespace, model_dir: Path) -> dict:
    """One run: our generation, lm-eval's at each batch size, grading."""
    report: dict = {"device": "cpu", "torch_threads": 1, "cpu_count": os.cpu_count(), "model": "tiny-qwen3-teacher (random init)", **vars(args)}
    report["s2d_bench"] = ours(model_dir, args.data, args.problems, args.max_new_tokens, args.prompts_per_batch, args.engine, args.passes)
    if not args.skip_lm_eval:
        for size in map(int, args.lm_eval_batch_sizes.split(",")):
            report[f"lm_eval_hf_batch{size}"] = lm_eval_hf(model_dir, args.data, args.problems, args.max_new_tokens, size)
        best = max((v for key, v in report.items() if key.startswith("lm_eval_hf_")), key=lambda r: r["gen_samples_per_s"])
        report["speedup_samples_per_s"] = report["s2d_bench"]["gen_samples_per_s"] / best["gen_samples_per_s"]
    if not args.skip_grading:
        report["grading"] = grading(args.data, args.grading_count, args.grading_workers)

    print(f"\navg@16 generation, {args.problems} MATH-500 problems x 16, max {args.max_new_tokens} new tokens, 1 torch thread")
    print(f"ours: engine {args.engine}, passes (samples/s): {report['s2d_bench']['passes_samples_per_s']}")
    print(f"{'engine':<22}{'samples':>9}{'seconds':>10}{'samples/s':>12}{'tokens/s':>11}")
    for name in [key for key in report if key == "s2d_bench" or key.startswith("lm_eval_hf_")]:
        r = report[name]
        print(f"{name:<22}{r['samples']:>9}{r['seconds']:>10.1f}{r['gen_samples_per_s']:>12.1f}{r['gen_tokens_per_s']:>11.0f}")
    if "speedup_samples_per_s" in report:
        print(f"speed-up against lm-eval's fastest batch size (samples/s): {report['speedup_samples_per_s']:.1f}x  (target >= 8x)")
    if "grading" in report:
        g = report["grading"]
        print(f"\ngrading {g['completions']} completions ({g['distinct']} distinct), {g['workers']} workers: "
              f"{g['seconds']:.1f} s, {g['per_s']:.0f}/s, {g['timeouts']} timeouts  (target < 15 s)")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data"))
    parser.add_argument("--problems", type=int, default=48, help="16 samples each; 48 (768 samples) keeps a run's figure within a few percent")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts-per-batch", type=int, default=8, help="ours: prompts per forward (x 16 rows)")
    parser.add_argument("--lm-eval-batch-sizes", default="16,64", help="lm-eval hf batch sizes tried; the fastest is compared")
    parser.add_argument("--grading-count", type=int, default=8000)
    parser.add_argument("--grading-workers", type=int, default=2)
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--skip-grading", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "eval_throughput.json"))
    parser.add_argument("--engine", default="hf", help="ours: hf, or hf-compiled (compiled decode step)")
    parser.add_argument("--passes", type=int, default=1, help="ours: evaluations in one process; the last is compared")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements one after another; their median and spread are reported")
    parser.add_argument("--note", default="", help="what the machine was doing (written with the figures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model_dir = ROOT / "results" / "tiny-teacher-random"
    # The tiny teacher's shape, with room for MATH prompts (lm-eval truncates to max positions).
    model, tok = tiny_qwen3(Qwen3Shape(layers=4, hidden=96, heads=4, kv_heads=2, mlp=256, max_positions=4096), seed=0)
    save(model, tok, model_dir)

    runs = [measure(args, model_dir) for _ in range(args.runs)]
    skipped = ({"lm_eval_fastest_samples_per_s", "speedup"} if args.skip_lm_eval else set()) | ({"grading_seconds"} if args.skip_grading else set())
    figures = {name: [get(r) for r in runs] for name, get in FIGURES.items() if name not in skipped}
    summary = {"measured": f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, one torch thread; {args.note}".rstrip("; "),
               "command": "python " + " ".join(sys.argv), "median": {k: statistics.median(v) for k, v in figures.items()},
               "spread": figures, "runs": runs}
    print(f"\n{args.runs} runs, median [min, max]:")
    for name, values in figures.items():
        print(f"  {name:<32}{statistics.median(values):>9.1f}  [{min(values):.1f}, {max(values):.1f}]")
    out = Path(args.out)
    out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
