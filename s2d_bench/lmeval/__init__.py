"""lm-eval interop (extra `lmeval`): our tasks as lm-eval YAMLs, and our engine as an lm-eval model.

`lm_eval --include_path $(python -c "import s2d_bench.lmeval as m; print(m.TASKS_DIR)") --tasks s2d_math500`
reproduces s2d-bench's protocol inside lm-eval: the same prompts, 16 repeats that are all scored
(lm-eval's default filter keeps only the first), math-verify grading, avg@16. `--model s2d-hf`
(after `import s2d_bench.lmeval.model`) serves lm-eval tasks with s2d-bench's HF engine.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"


def task_yaml(bench) -> str:  # noqa: ANN001 - a tasks.benchmarks.Benchmark
    """The lm-eval task YAML of a benchmark, from its definition (tasks/benchmarks.py): the protocol is written once,
    and tests/lmeval/test_lmeval_interop.py checks every shipped YAML against this, so the two cannot drift apart."""
    k = bench.samples
    return (
        f"# s2d-bench's {bench.name} protocol for lm-eval: {k} repeats, all scored, math-verify, avg@{k}.\n"
        f"task: s2d_{bench.name}\n"
        "custom_dataset: !function utils.load\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{answer}}"\n'
        f"repeats: {k}\n"
        f"generation_kwargs: {{until: [], do_sample: true, temperature: {bench.temperature:g}, top_p: {bench.top_p:g}, "
        f"top_k: {bench.top_k}, max_gen_toks: {bench.max_new_tokens}}}\n"
        "filter_list:\n"
        "  - name: all\n"
        "    filter:\n"
        "      - function: custom\n"
        "        filter_fn: !function utils.keep_all\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n"
        "  - {metric: avg_at_k, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: pass_at_k, aggregation: mean, higher_is_better: true}\n"
        f"metadata: {{version: 1.0, benchmark: {bench.name}}}\n"
    )


def write_task_yamls() -> list[Path]:
    """(Re)write `tasks/s2d_<name>.yaml` for every registered benchmark; run after adding one."""
    from s2d_bench.tasks import BENCHMARKS

    paths = []
    for name in BENCHMARKS.names():
        path = TASKS_DIR / f"s2d_{name}.yaml"
        path.write_text(task_yaml(BENCHMARKS.get(name)), encoding="utf-8")
        paths.append(path)
    return paths
