"""Base models for the embedded world: a built model, briefly pretrained on the task's noisy corpus.

Plain teacher-forced next-token training on (prompt, completion) pairs, loss on the completion
only. It stands in for the pretrained checkpoint a real user starts from, so by default it is seeded
by the world (task.seed), not by the run seed: every run seed starts from the same base models.
With `seed_scope: all` its seed (`RunConfig.base_seed`) also follows the run seed, and so does the
corpus it draws, so seeds cover the whole chain.
"""

from __future__ import annotations

import random
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.config import PretrainConfig
from s2d_bench.losses import token_nll
from s2d_bench.models.sequences import completion_logits, join_texts


def pretrain(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: Callable[[random.Random, int], list[tuple[str, str]]],
    cfg: PretrainConfig,
    seed: int,
    log: Callable[[dict], None],
    desc: str = "pretrain",
) -> None:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    bar = tqdm(range(cfg.steps), desc=desc, unit="step", dynamic_ncols=True)
    for step in bar:
        prompts, completions = zip(*examples(rng, cfg.batch_size))
        batch = join_texts(tok, list(prompts), list(completions)).to(model.device)
        loss = token_nll(completion_logits(model, batch), batch.completion_ids, batch.completion_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log({"step": step, "loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.3f}")
