"""lm-eval reproduces s2d-bench's protocol: same prompts, all 16 repeats scored, same grader."""

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")

from s2d_bench.config import EvalConfig, PretrainConfig, TaskConfig  # noqa: E402
from s2d_bench.generation.engine import EngineConfig  # noqa: E402
from s2d_bench.generation.hf import HFEngine  # noqa: E402
from s2d_bench.generation.protocol import prompt_seeds  # noqa: E402
from s2d_bench.harness.evaluate import evaluate  # noqa: E402
from s2d_bench.lmeval import TASKS_DIR  # noqa: E402
from s2d_bench.models.builders import save, tiny_qwen3_student  # noqa: E402
from s2d_bench.models.pretrain import pretrain  # noqa: E402
from s2d_bench.tasks.arithmetic import AdditionTask  # noqa: E402
from s2d_bench.tasks.benchmarks import MATH500, load_problems  # noqa: E402

GREEDY = EvalConfig(samples=16, temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=16, prompts_per_batch=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model that answers in \\boxed{} (briefly trained on MATH-500-templated sums) and a
    data file whose gold answers make about half of its greedy answers right."""
    root = tmp_path_factory.mktemp("lmeval")
    task = AdditionTask(TaskConfig(n_labeled=8, n_unlabeled=8, n_test=12))
    model, tok = tiny_qwen3_student()
    corpus = lambda rng, n: [(MATH500.template.format(problem=p), c) for p, c in task.pretrain_examples(rng, n)]  # noqa: E731
    pretrain(model, tok, corpus, PretrainConfig(steps=150, batch_size=32, lr=3e-3), 0, lambda row: None)
    save(model, tok, root / "model")
    problems = task.splits().test
    first = HFEngine(model, tok).generate([MATH500.template.format(problem=p.prompt) for p in problems], _greedy_one(),
                                         prompt_seeds(0, len(problems)))
    rows = []
    for i, (p, c) in enumerate(zip(problems, first)):
        answer = c.text.split("{")[-1].rstrip("}") if i % 2 == 0 else "99999"
        rows.append({"id": p.id, "problem": p.prompt, "answer": answer})
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _greedy_one():
    from s2d_bench.generation.sampling import Sampling

    return Sampling(k=1, temperature=0.0, max_new_tokens=16)


def _lm_eval_score(model: str, model_args: str, data: str) -> float:
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=["s2d_math500"],
        task_manager=TaskManager(include_path=str(TASKS_DIR), metadata={"data": data}), apply_chat_template=True,
        gen_kwargs="do_sample=False,temperature=0,max_gen_toks=16",
    )
    return out["results"]["s2d_math500"]["avg_at_k,all"]


def test_lm_eval_hf_and_s2d_hf_give_our_greedy_avg_at_16(world):
    import s2d_bench.lmeval.model  # noqa: F401 - registers s2d-hf

    data = str(world / "data.jsonl")
    engine = HFEngine.load(str(world / "model"), EngineConfig(device="cpu", prompts_per_batch=16))
    ours = evaluate(engine, load_problems(MATH500, data), GREEDY, 0, "math_verify").score.mean
    assert 0.0 < ours < 1.0  # the world is not degenerate: some answers right, some wrong
    assert _lm_eval_score("hf", f"pretrained={world / 'model'},device=cpu,dtype=float32", data) == pytest.approx(ours)
    assert _lm_eval_score("s2d-hf", f"pretrained={world / 'model'},device=cpu", data) == pytest.approx(ours)


def test_every_benchmark_has_an_lm_eval_yaml_written_from_its_definition():
    """One protocol, written once: each shipped YAML is what `task_yaml` makes of the benchmark's definition (samples,
    sampling, token cap), and there is one per registered benchmark (`python -c 'import s2d_bench.lmeval as m;
    m.write_task_yamls()'` after adding one)."""
    from s2d_bench.lmeval import task_yaml
    from s2d_bench.tasks import BENCHMARKS

    assert sorted(p.stem for p in TASKS_DIR.glob("s2d_*.yaml")) == [f"s2d_{n}" for n in BENCHMARKS.names()]
    for name in BENCHMARKS.names():
        assert (TASKS_DIR / f"s2d_{name}.yaml").read_text() == task_yaml(BENCHMARKS.get(name)), name
    olympiad = (TASKS_DIR / "s2d_olympiadbench.yaml").read_text()
    assert "repeats: 16" in olympiad and "temperature: 0.7, top_p: 0.8, top_k: 20, max_gen_toks: 8192" in olympiad


def test_lm_eval_local_completions_through_s2d_bench_serve_gives_our_score(world):
    """Conformance of `s2d-bench serve` from a client nobody here wrote: lm-eval's own `local-completions` model evaluates
    the benchmark through the server and scores what `s2d-bench eval` scores on the same model. lm-eval renders the chat
    template with the model's tokenizer and sends token ids (`tokenized_requests=True`: a completions API takes no chat
    messages, vLLM's neither), with its own stop strings, seed and sampling fields."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "served"))
    from served_server import serving

    data = str(world / "data.jsonl")
    engine = HFEngine.load(str(world / "model"), EngineConfig(device="cpu", prompts_per_batch=16))
    ours = evaluate(engine, load_problems(MATH500, data), GREEDY, 0, "math_verify").score.mean
    with serving(world / "model", name="tiny") as (url, _):
        args = (f"model=tiny,base_url={url}/v1/completions,tokenizer_backend=huggingface,tokenizer={world / 'model'},"
                "num_concurrent=4,max_retries=1,tokenized_requests=True")
        assert _lm_eval_score("local-completions", args, data) == pytest.approx(ours)
