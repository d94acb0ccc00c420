"""Evaluation of a served teacher through its server: the harness renders and grades, the server samples.

An evaluation engine (generation/engine.py's protocol) over `ServedTeacher`: problem i is one request with
`n` = k samples and the problem's own `seed`, so a model served by `s2d-bench serve` scores what the same
weights score locally, and a model behind `vllm serve` is measured under the run's one prompt protocol.
Prompts are rendered with the student's tokenizer, which the preflight probed against the server's.
"""

from __future__ import annotations

from s2d_bench.generation.engine import Completion, Progress
from s2d_bench.generation.protocol import check_context, completion_texts, render
from s2d_bench.generation.rollouts import Rollouts
from s2d_bench.generation.sampling import Sampling
from s2d_bench.served.teacher import ServedTeacher


class ServedEngine:
    def __init__(self, teacher: ServedTeacher) -> None:
        self.teacher, self.tok = teacher, teacher.tok

    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        """len(prompts) * k completions; entry i * k + j is sample j of prompt i, drawn from seeds[i] (on the server)."""
        rows = render(self.tok, prompts, self.teacher.thinking)

        def one(job: tuple[list[int], int]) -> list[list[int]]:
            ids = self.teacher.sample_ids(job[0], job[1], sampling)
            if progress is not None:
                progress(len(ids))
            return ids

        tokens = [ids for per_prompt in self.teacher.client.map(one, list(zip(rows, seeds))) for ids in per_prompt]
        return [Completion(text, len(ids), ids) for text, ids in zip(completion_texts(self.tok, tokens), tokens)]

    def rollouts(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> Rollouts:
        return self.teacher.rollouts(prompts, sampling, seeds, k=0)[0]

    def check_prompts(self, prompts: list[str], names: list[str], max_new_tokens: int) -> None:
        check_context(self.tok, prompts, names, self.teacher.thinking, self.teacher.max_model_len(), max_new_tokens)

    def close(self) -> None:
        self.teacher.close()
