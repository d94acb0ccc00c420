"""Evaluation split over ranks samples exactly what one process samples."""

from s2d_bench import distributed
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness import evaluate as evaluate_module
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.tasks.base import Problem


def test_each_rank_samples_its_share_with_the_problems_own_seeds_and_rank_0_gets_them_in_order(monkeypatch):
    model, tok = tiny_qwen3_student(seed=3)
    problems = [Problem(str(i), f"{i}+{2 * i}=", "0") for i in range(7)]
    s = Sampling(k=3, temperature=1.0, max_new_tokens=6)
    engine = HFEngine(model, tok, EngineConfig(prompts_per_batch=2))
    alone = evaluate_module.generate_shared(engine, problems, s, 11, "eval")

    asked: dict[int, list[str]] = {}
    shares = {}
    real_generate = engine.generate
    for rank in (1, 0):  # rank 1's share first, then rank 0 gathers it with its own
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world", lambda: 2)
        monkeypatch.setattr(distributed, "gather", lambda part, r=rank: (shares.setdefault(r, part), None)[1] if r else [part, shares[1]])

        def generate(prompts, sampling, seeds, progress=None, r=rank):
            asked[r] = prompts
            return real_generate(prompts, sampling, seeds, progress)

        monkeypatch.setattr(engine, "generate", generate)
        out = evaluate_module.generate_shared(engine, problems, s, 11, "eval")
        assert (out is None) == (rank == 1)
    assert asked[0] == [p.prompt for p in problems[0::2]] and asked[1] == [p.prompt for p in problems[1::2]]
    assert [c.ids for c in out] == [c.ids for c in alone]
