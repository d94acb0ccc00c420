"""A run's evaluation targets: each benchmark's protocol (its own, the `eval` section's for the task, an entry's fields
over both), its problems, graders, data source and label, as records and hashes will read them."""

import json
import shutil

from conftest import SHARED_DATA
from s2d_bench.config import load_config
from s2d_bench.harness.targets import LATER_PROTOCOL, PROTOCOL, benchmark_target, run_targets
from s2d_bench.tasks import BENCHMARKS, TASKS
from s2d_bench.tasks.benchmarks import load_problems


def test_run_targets_merge_each_entrys_settings_over_its_benchmarks_or_the_eval_sections(tmp_path):
    cfg = load_config(None, [f"task.data_dir={SHARED_DATA}", "eval.samples=5", "eval.temperature=0.3", "eval.top_p=0.9", "eval.top_k=7",
                             "eval.max_new_tokens=21", "eval.prompts_per_batch=6", "eval.engine=hf-compiled",
                             "eval.benchmarks=[{name: task, limit: 2, samples: 3}, {name: math500, limit: 4, temperature: 0.5, extraction: last_box}]"])
    task = TASKS.get(cfg.task.name)(cfg.task)
    test = task.splits().test
    own, math = run_targets(cfg, "exact", test)

    assert (own.label, own.benchmark, own.grader, own.audit, own.data, own.limit) == ("add3mix", "task", "exact", None, "task:add3mix", 2)
    assert own.problems == test[:2]
    assert [getattr(own.cfg, n) for n in PROTOCOL] == [3, 0.3, 0.9, 7, 21, "last_box"]  # the entry's samples, eval's others
    assert (math.label, math.benchmark, math.grader, math.audit, math.data, math.limit) == \
        ("math500", "math500", "math_verify", "hendrycks", str(SHARED_DATA), 4)
    first = [json.loads(line) for line in (SHARED_DATA / "math500.jsonl").read_text().splitlines()[:4]]
    assert [(p.id, p.answer) for p in math.problems] == [(row["id"], row["answer"]) for row in first]  # the first 4
    assert all(p.prompt.startswith(row["problem"]) for p, row in zip(math.problems, first))  # (the template's instruction after)
    assert [getattr(math.cfg, n) for n in PROTOCOL] == [16, 0.5, 0.8, 20, 4096, "last_box"]  # the benchmark's, the entry's two
    for target in (own, math):  # how to sample, carried from eval; not part of the protocol
        assert (target.cfg.prompts_per_batch, target.cfg.engine) == (6, "hf-compiled")
    assert own.protocol() == {n: getattr(own.cfg, n) for n in PROTOCOL if n not in LATER_PROTOCOL}  # last_box: left out
    assert math.protocol()["temperature"] == 0.5 and "extraction" not in math.protocol()

    whole = run_targets(load_config(None, [f"task.data_dir={SHARED_DATA}", "eval.benchmarks=[{name: task}, {name: aime24}]"]), "exact", test)
    assert whole[0].problems == test and whole[0].limit is None and len(whole[1].problems) == 30
    assert whole[1].protocol()["extraction"] == "boxes" and whole[1].cfg.max_new_tokens == 8192


def test_a_benchmark_read_from_another_file_is_labelled_by_it(tmp_path):
    from s2d_bench.config import BenchmarkConfig, EvalConfig

    bench = BENCHMARKS.get("math500")
    mine = tmp_path / "hard-half.jsonl"  # the last problems first: not the benchmark's own file
    mine.write_text("\n".join(reversed((SHARED_DATA / "math500.jsonl").read_text().splitlines())) + "\n")
    target = benchmark_target(BenchmarkConfig(name="math500", limit=3), bench, EvalConfig(), str(mine))
    assert (target.label, target.data, len(target.problems)) == ("math500[hard-half]", str(mine), 3)
    same = benchmark_target(BenchmarkConfig(name="math500", limit=3), bench, EvalConfig(), str(shutil.copy(mine, tmp_path / "math500.jsonl")))
    assert same.label == "math500"  # the benchmark's own file name, wherever it lies
    folder = benchmark_target(BenchmarkConfig(name="math500", limit=3), bench, EvalConfig(), str(SHARED_DATA))
    assert folder.label == "math500" and [p.id for p in folder.problems] != [p.id for p in target.problems]
    assert [p.id for p in target.problems] == [p.id for p in reversed(load_problems(bench, str(SHARED_DATA), None))][:3]
