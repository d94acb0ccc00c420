"""The paper's two conditions for the dense bridge, measured per stage node.

C1, the teacher is reward-shaped: stage 1 raised the teacher's reward. Measured as the held-out
avg@k after stage 1 minus before (from the two evaluation records) and as the training reward of
the last tenth of the steps minus the first tenth (from metrics.jsonl).

C2, the teacher stays within small KL of the student: per-token KL in both directions, before and
after a distillation stage, on the same held-out prompts (the task's test prompts, never trained
on). KL(T || S) is measured on the teacher's samples, KL(S || T) on the student's, each as the
token mean of the exact full-vocabulary KL: the quantities stages 2a and 2b minimise, scored a
chunk of positions at a time so that memory stays bounded at any length (`kl_both_ways`). Samples
come from the hf engine under the run's prompt protocol, so C2 reads the prompts training and
evaluation read, whatever the backend.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench import chunked, phasemem
from s2d_bench.config import DiagnosticsConfig
from s2d_bench.estimators import DIRECTIONS
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.sequences import completion_hidden
from s2d_bench.nodefiles import write_json
from s2d_bench.served.teacher import ServedTeacher


@torch.no_grad()
def kl_both_ways(
    teacher: PreTrainedModel, student: PreTrainedModel, tok: PreTrainedTokenizerBase,
    prompts: list[str], max_new_tokens: int, seed: int, thinking: bool = False, settings: DiagnosticsConfig = DiagnosticsConfig(),
    batching: EngineConfig = EngineConfig(prompts_per_batch=0),
) -> dict[str, float]:
    """Token-mean KL(T || S) on teacher samples and KL(S || T) on student samples (temperature 1).

    Memory is bounded whatever the length: prompts are sampled and scored in the sampler's batches (`batching`:
    prompts per batch and KV-cache positions, as evaluation sets them), and each batch is scored from both models'
    final hidden states a `settings.chunk_size` of positions at a time (`chunked.distill_loss`), so no (sequences,
    length, vocabulary) logits exist. Problems sample from their own seeds, so the batching changes no token (but
    through float rounding: sampling.py)."""
    sampling = Sampling(k=settings.c2_samples, temperature=1.0, max_new_tokens=max_new_tokens)
    seeds = prompt_seeds(seed, len(prompts))
    heads = student.get_output_embeddings(), teacher.get_output_embeddings()
    out = {}
    for name, sampler in (("kl_forward", teacher), ("kl_reverse", student)):
        engine = HFEngine(sampler, tok, replace(batching, thinking=thinking))
        total, tokens = 0.0, 0
        for group in engine.batches(prompts, sampling):
            batch = engine.rollouts([prompts[i] for i in group], sampling, [seeds[i] for i in group]).batch.to(student.device)
            s_hidden, t_hidden = completion_hidden(student, batch), completion_hidden(teacher, batch)
            _, means = chunked.distill_loss(s_hidden, heads[0], t_hidden, heads[1], batch.completion_ids, batch.completion_mask,
                                            chunked.Objective("forward"), chunk=settings.chunk_size)
            count = int(batch.completion_mask.sum())
            total, tokens = total + means[name] * count, tokens + count
        out[name] = total / max(tokens, 1)
    return out


@torch.no_grad()
def served_kl_both_ways(
    teacher: ServedTeacher, student: PreTrainedModel, prompts: list[str], max_new_tokens: int, seed: int, top_k: int,
    settings: DiagnosticsConfig = DiagnosticsConfig(), batching: EngineConfig = EngineConfig(prompts_per_batch=0),
) -> dict[str, float]:
    """`kl_both_ways` with a served teacher, from what its API gives: the same samples (the teacher's drawn on its server from
    the same per-prompt seeds; the student's here), scored by the sampled token's log-ratio, the single-sample estimate of
    each direction's per-token KL (exact in expectation: log p_T - log p_S on teacher samples, log p_S - log p_T on student
    samples), and by the KL over the teacher's top k + tail (a lower bound), both from the same top-k log-probs."""
    sampling = Sampling(k=settings.c2_samples, temperature=1.0, max_new_tokens=max_new_tokens)
    seeds = prompt_seeds(seed, len(prompts))
    head = student.get_output_embeddings()
    engine = HFEngine(student, teacher.tok, replace(batching, thinking=teacher.thinking))
    out = {}
    for direction in DIRECTIONS:
        totals, tokens = {}, 0
        for group in engine.batches(prompts, sampling):
            mine, my_seeds = [prompts[i] for i in group], [seeds[i] for i in group]
            if direction == "forward":  # KL(T || S) on the teacher's samples
                roll, view = teacher.rollouts(mine, sampling, my_seeds, top_k)
            else:
                roll = engine.rollouts(mine, sampling, my_seeds)
                view = teacher.score(roll.batch, top_k)
            batch = roll.batch.to(student.device)
            _, means = chunked.served_distill_loss(completion_hidden(student, batch), head, view.to(student.device), batch.completion_ids,
                                                   batch.completion_mask, chunked.Objective(direction, "topk", top_k), chunk=settings.chunk_size)
            count = int(batch.completion_mask.sum())
            totals = {key: totals.get(key, 0.0) + value * count for key, value in means.items()}
            tokens += count
        out[f"kl_{direction}"] = totals["kl_sampled"] / max(tokens, 1)
        out[f"kl_{direction}_topk"] = totals[f"kl_{direction}_topk"] / max(tokens, 1)
    return out


def c2(
    teacher: PreTrainedModel | ServedTeacher, students: Iterable[tuple[str, Callable[[], PreTrainedModel]]], tok: PreTrainedTokenizerBase,
    prompts: list[str], max_new_tokens: int, seed: int, thinking: bool, top_k: int, settings: DiagnosticsConfig = DiagnosticsConfig(),
    batching: EngineConfig = EngineConfig(prompts_per_batch=0),
) -> dict[str, Any]:
    """C2 around one distillation stage: the teacher against each student, `students` as ("before"/"after", loader).

    A student is loaded when its turn comes and let go after, so at most the teacher and one student are held. A served
    teacher's record says its KLs are estimates (`served_kl_both_ways`), and from which top k (its stage's: what its
    server sends; a local teacher's KLs are exact and `top_k` is not read)."""
    prompts = prompts[: settings.c2_prompts]
    record: dict[str, Any] = {"prompts": len(prompts), "samples_per_prompt": settings.c2_samples}
    served = isinstance(teacher, ServedTeacher)
    if served:
        record.update(teacher="served", kl_estimate="sampled-token log-ratio (kl_*_topk: top-k + tail lower bound)", top_k=top_k)
    for when, load in students:
        student = load()
        with phasemem.phase("c2"):  # the models loaded before it (budget.c2_bytes' weights), its work measured
            if served:
                measured = served_kl_both_ways(teacher, student, prompts, max_new_tokens, seed, top_k, settings, batching)
            else:
                measured = kl_both_ways(teacher, student, tok, prompts, max_new_tokens, seed, thinking, settings, batching)
        for key, value in measured.items():
            record[f"{key}_{when}"] = value
        del student
    return record


def reward_gain(metrics_path: Path) -> dict[str, float] | None:
    """Training reward of the last tenth of steps minus the first tenth (C1 from the stage's own log)."""
    if not metrics_path.exists():
        return None
    rewards = [row["reward"] for row in map(json.loads, metrics_path.read_text().splitlines()) if "reward" in row]
    if not rewards:
        return None
    tenth = max(1, len(rewards) // 10)
    first, last = sum(rewards[:tenth]) / tenth, sum(rewards[-tenth:]) / tenth
    return {"reward_first": first, "reward_last": last, "reward_gain": last - first}


C2_STAGES = ("warmup", "opd")  # distillation stages around which the teacher-student KL is measured


def of_node(node: Any, folder: Path, load: Callable[[str], tuple[Any, Any]], prompts: list[str], max_new_tokens: int, seed: int,
            thinking: bool, settings: DiagnosticsConfig = DiagnosticsConfig(),
            batching: EngineConfig = EngineConfig(prompts_per_batch=0)) -> dict[str, Any] | None:
    """A node's diagnostics, computed once into `folder`/diagnostics.json: C1 after teacher RL (from its metrics), C2
    around each distillation stage (`load(node id)` gives a built model and tokenizer); None for other stages.
    A C2 record made with other prompt or sample counts than `settings` asks for is measured again."""
    path = folder / "diagnostics.json"
    wanted = {"prompts": min(len(prompts), settings.c2_prompts), "samples_per_prompt": settings.c2_samples}
    kept = json.loads(path.read_text()) if path.exists() else None
    if kept is not None and (kept.get("kind") != "c2" or all(kept.get(k) == v for k, v in wanted.items())):
        return kept
    if node.stage == "teacher_rl":
        result = {"kind": "c1", **(reward_gain(folder / "metrics.jsonl") or {})}
    elif node.stage in C2_STAGES:
        teacher, tok = load(node.teacher)
        students = [(when, lambda i=i: load(i)[0]) for when, i in (("before", node.parent), ("after", node.id))]
        try:
            top_k = node.settings.top_k  # a served teacher's: what its server sends
            result = {"kind": "c2", **c2(teacher, students, tok, prompts, max_new_tokens, seed, thinking, top_k, settings, batching)}
        finally:
            if isinstance(teacher, ServedTeacher):
                teacher.close()
    else:
        return None
    write_json(path, result)
    return result
