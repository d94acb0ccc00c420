"""Evaluation: split over ranks it samples exactly what one process samples; its scores, votes and files on known samples."""

import pytest

from s2d_bench import distributed
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness import evaluate as evaluate_module
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.tasks.base import Problem


def test_each_rank_samples_its_share_with_the_problems_own_seeds_and_rank_0_gets_them_in_order(monkeypatch, capsys):
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
        capsys.readouterr()
        out = evaluate_module.generate_shared(engine, problems, s, 11, "eval")
        assert (out is None) == (rank == 1)
        bars = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("eval:")]
        if rank:  # one bar per launch, rank 0's, counting its own share's samples
            assert bars == []
        else:
            assert bars[-1].startswith("eval: 100%") and " 12/12 " in bars[-1] and "sample/s]" in bars[-1]
    assert asked[0] == [p.prompt for p in problems[0::2]] and asked[1] == [p.prompt for p in problems[1::2]]
    assert [c.ids for c in out] == [c.ids for c in alone]


class ScriptedEngine:
    """An engine whose completions are written out per prompt: evaluate's arithmetic on known samples."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.calls, self.checked = script, [], []

    def check_prompts(self, prompts, names, max_new_tokens):
        self.checked.append((prompts, names, max_new_tokens))

    def generate(self, prompts, sampling, seeds, progress=None):
        from s2d_bench.generation.engine import Completion

        self.calls.append((prompts, sampling, seeds))
        out = [Completion(text, tokens=3 + len(text) % 5) for p in prompts for text in self.script[p][: sampling.k]]
        if progress is not None:
            progress(len(out))
        return out


def test_evaluate_scores_votes_audits_and_writes_every_sample_as_graded(tmp_path, capsys):
    """Twelve scripted samples, graded `exact` with the Hendrycks audit, checked by hand: avg@4, unbiased pass@1/2/4,
    maj@4 (votes by Hendrycks-normalised answer: 0.5 and \\frac{1}{2} are one vote), the audit's agreement, answerless
    samples, the subject and level breakdown, per-problem means, the sampling protocol and seeds the engine got, and the
    completions and problems files row by row."""
    import json

    from s2d_bench.config import EvalConfig
    from s2d_bench.generation.protocol import prompt_seeds

    problems = [Problem("p0", "half?", "0.5", "algebra", 1), Problem("p1", "seven?", "7", "algebra", 2),
                Problem("p2", "two?", "2", "geometry", 2)]
    script = {"half?": ["\\boxed{3}", "\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "no box"],  # exact: F T F F; audit: F T T F
              "seven?": ["\\boxed{7}", "\\boxed{7}", "\\boxed{7}", "\\boxed{8}"],
              "two?": ["\\boxed{9}", "\\boxed{9}", "\\boxed{2}", "\\boxed{9}"]}
    engine = ScriptedEngine(script)
    cfg = EvalConfig(samples=4, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=33)
    path = tmp_path / "out" / "completions-x.jsonl"
    result = evaluate_module.evaluate(engine, problems, cfg, 5, "exact", "hendrycks", path)

    assert engine.checked == [(["half?", "seven?", "two?"], ["p0", "p1", "p2"], 33)]
    ((prompts, sampling, seeds),) = engine.calls
    assert prompts == ["half?", "seven?", "two?"] and seeds == prompt_seeds(5, 3)
    assert sampling == Sampling(k=4, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=33)
    assert (result.score.n, result.score.k) == (3, 4) and abs(result.score.mean - 5 / 12) < 1e-12
    assert result.per_problem == {"p0": 0.25, "p1": 0.75, "p2": 0.25}
    assert result.pass_at.keys() == {1, 2, 4}
    assert abs(result.pass_at[1] - 5 / 12) < 1e-12 and abs(result.pass_at[2] - (0.5 + 1 + 0.5) / 3) < 1e-12 and result.pass_at[4] == 1.0
    assert abs(result.maj - 2 / 3) < 1e-12  # p0's vote is one half (2 of 4), right; p1 right; p2 votes 9, wrong
    assert abs(result.agreement - 11 / 12) < 1e-12  # they differ on \frac{1}{2} only
    assert abs(result.no_answer - 1 / 12) < 1e-12 and result.timeouts == 0
    assert result.breakdown == [{"by": "subject", "group": "algebra", "n": 2, "mean": 0.5},
                                {"by": "subject", "group": "geometry", "n": 1, "mean": 0.25},
                                {"by": "level", "group": "1", "n": 1, "mean": 0.25}, {"by": "level", "group": "2", "n": 2, "mean": 0.5}]
    texts = [t for p in problems for t in script[p.prompt]]
    tokens = sum(3 + len(t) % 5 for t in texts)
    assert abs(result.tokens_per_second / result.samples_per_second - tokens / 12) < 1e-9
    assert 0 < result.seconds < 60 and result.samples_per_second >= 12 / result.seconds  # generation is part of the whole
    assert "eval: 100%" in capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]  # the bar: named, and counted to its total
    summary = result.summary()
    assert summary["score"] == {"n": 3, "k": 4, "mean": result.score.mean, "stderr": result.score.stderr}
    assert summary["per_problem"] == result.per_problem and summary["maj"] == result.maj and summary["pass_at"] == result.pass_at

    rows = [json.loads(x) for x in path.read_text().splitlines()]
    exact = [False, True, False, False, True, True, True, False, False, False, True, False]
    audit = [False, True, True, False, True, True, True, False, False, False, True, False]
    assert rows == [{"id": f"p{i // 4}", "sample": i % 4, "text": texts[i], "tokens": 3 + len(texts[i]) % 5,
                     "extracted": None if texts[i] == "no box" else texts[i][7:-1], "correct": exact[i], "grader": "exact",
                     "audit": audit[i], "audit_grader": "hendrycks", "timed_out": False} for i in range(12)]
    written = [json.loads(x) for x in (path.parent / "problems-x.jsonl").read_text().splitlines()]
    assert written == [{"id": p.id, "prompt": p.prompt, "answer": p.answer, "subject": p.subject, "level": p.level} for p in problems]

    alone = evaluate_module.evaluate(ScriptedEngine(script), problems, EvalConfig(samples=3), 5)  # the default grader: exact
    assert alone.agreement is None and alone.pass_at.keys() == {1, 2}  # no audit; powers of two up to k = 3
    assert [row["mean"] for row in alone.breakdown] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 2 / 3])  # p0 1/3, p1 1, p2 1/3


def test_evaluate_applies_each_problems_rules_grades_in_the_given_pool_and_keeps_text_as_written(tmp_path, agreeing_pool):
    """A problem's answer rules (here its unit) reach the grader; an isolated grader runs in the pool it is handed; a
    second evaluation writes beside the first; completions and problems files keep non-ASCII text as written; a problem
    set without subjects or levels has no breakdown rows."""
    import json

    from s2d_bench.config import EvalConfig
    from s2d_bench.tasks.answer_rules import AnswerRules

    problems = [Problem("u", "length in cm, π?", "7", rules=AnswerRules(unit="cm")), Problem("v", "π?", "\\pi")]
    engine = ScriptedEngine({"length in cm, π?": ["\\boxed{7 cm}", "\\boxed{8}"], "π?": ["\\boxed{π}", "none"]})
    cfg = EvalConfig(samples=2)
    result = evaluate_module.evaluate(engine, problems, cfg, 0, "exact", None, tmp_path / "a" / "completions-1.jsonl")
    assert result.per_problem == {"u": 0.5, "v": 0.0} and result.breakdown == []  # 7 cm is 7 in cm
    text = (tmp_path / "a" / "completions-1.jsonl").read_text(encoding="utf-8")
    assert "\\boxed{π}" in text and "π?" in (tmp_path / "a" / "problems-1.jsonl").read_text(encoding="utf-8")
    pooled = evaluate_module.evaluate(engine, problems, cfg, 0, "math_verify", None, tmp_path / "a" / "completions-2.jsonl", pool=agreeing_pool)
    assert pooled.per_problem == {"u": 1.0, "v": 0.5}  # the handed pool's verdicts ("none" has no answer to ask about)
    assert sorted(agreeing_pool.asked) == [("math_verify", "7", "7"), ("math_verify", "7", "8"), ("math_verify", "\\pi", "π")]
    assert len([json.loads(x) for x in (tmp_path / "a" / "completions-2.jsonl").read_text().splitlines()]) == 4


def test_an_engine_that_returns_too_few_samples_is_an_error():
    from s2d_bench.config import EvalConfig

    engine = ScriptedEngine({"q": ["\\boxed{1}"]})  # one sample where k = 2 were asked
    with pytest.raises(RuntimeError, match="engine returned 1 completions for 1 problems x k=2"):
        evaluate_module.evaluate(engine, [Problem("q0", "q", "1")], EvalConfig(samples=2), 0, "exact")
