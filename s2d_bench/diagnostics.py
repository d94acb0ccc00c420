"""The paper's two conditions for the dense bridge, measured per stage node.

C1, the teacher is reward-shaped: stage 1 raised the teacher's reward. Measured as the held-out
avg@k after stage 1 minus before (from the two evaluation records) and as the training reward of
the last tenth of the steps minus the first tenth (from metrics.jsonl).

C2, the teacher stays within small KL of the student: per-token KL in both directions, before and
after a distillation stage, on the same held-out prompts (the task's test prompts, never trained
on). KL(T || S) is measured on the teacher's samples, KL(S || T) on the student's, each as the
token mean of the exact full-vocabulary KL: the quantities stages 2a and 2b minimise. Samples
come from the hf engine under the run's prompt protocol, so C2 reads the prompts training and
evaluation read, whatever the backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench import losses
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.sequences import completion_logits
from s2d_bench.nodefiles import write_json

C2_PROMPTS = 64  # held-out prompts per measurement
C2_SAMPLES = 4  # samples per prompt and direction


@torch.no_grad()
def kl_both_ways(
    teacher: PreTrainedModel, student: PreTrainedModel, tok: PreTrainedTokenizerBase,
    prompts: list[str], max_new_tokens: int, seed: int, thinking: bool = False,
) -> dict[str, float]:
    """Token-mean KL(T || S) on teacher samples and KL(S || T) on student samples (temperature 1)."""
    sampling = Sampling(k=C2_SAMPLES, temperature=1.0, max_new_tokens=max_new_tokens)
    out = {}
    for name, sampler in (("kl_forward", teacher), ("kl_reverse", student)):
        engine = HFEngine(sampler, tok, EngineConfig(prompts_per_batch=0, thinking=thinking))
        batch = engine.rollouts(prompts, sampling, prompt_seeds(seed, len(prompts))).batch.to(student.device)
        t_logits, s_logits = completion_logits(teacher, batch), completion_logits(student, batch)
        kl = losses.forward_kl if name == "kl_forward" else losses.reverse_kl
        out[name] = float(kl(s_logits, t_logits, batch.completion_mask))
    return out


def c2(
    teacher: PreTrainedModel, before: PreTrainedModel, after: PreTrainedModel,
    tok: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int, seed: int, thinking: bool = False,
) -> dict[str, Any]:
    """C2 around one distillation stage: the teacher against the student before and after it."""
    prompts = prompts[:C2_PROMPTS]
    record: dict[str, Any] = {"prompts": len(prompts), "samples_per_prompt": C2_SAMPLES}
    for when, student in (("before", before), ("after", after)):
        for key, value in kl_both_ways(teacher, student, tok, prompts, max_new_tokens, seed, thinking).items():
            record[f"{key}_{when}"] = value
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
            thinking: bool) -> dict[str, Any] | None:
    """A node's diagnostics, computed once into `folder`/diagnostics.json: C1 after teacher RL (from its metrics), C2
    around each distillation stage (`load(node id)` gives a built model and tokenizer); None for other stages."""
    path = folder / "diagnostics.json"
    if not path.exists():
        if node.stage == "teacher_rl":
            result = {"kind": "c1", **(reward_gain(folder / "metrics.jsonl") or {})}
        elif node.stage in C2_STAGES:
            (teacher, tok), (before, _), (after, _) = (load(i) for i in (node.teacher, node.parent, node.id))
            result = {"kind": "c2", **c2(teacher, before, after, tok, prompts, max_new_tokens, seed, thinking)}
        else:
            return None
        write_json(path, result)
    return json.loads(path.read_text())
