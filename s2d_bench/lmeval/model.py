"""`s2d-hf`: s2d-bench's HF engine as an lm-eval model, for generation tasks.

lm-eval sends `repeats: 16` as 16 identical requests. Here identical (context, settings) requests
are regrouped into one prompt with k samples, so the prompt is prefilled once, not 16 times.
"""

from __future__ import annotations

import json
from collections import defaultdict

import lm_eval.models  # noqa: F401 - registers the built-ins first (else `hf` disappears, env.md)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds, render_chat
from s2d_bench.generation.sampling import Sampling


def sampling_from_gen_kwargs(gen: dict, k: int) -> Sampling:
    greedy = not gen.get("do_sample", False) or float(gen.get("temperature", 1.0)) == 0.0
    return Sampling(
        k=k,
        temperature=0.0 if greedy else float(gen.get("temperature", 1.0)),
        top_p=float(gen.get("top_p", 1.0)),
        top_k=int(gen.get("top_k", 0) or 0),
        max_new_tokens=int(gen.get("max_gen_toks", 256)),
    )


def cut_at(text: str, until: list[str]) -> str:
    """The text before the first stop string, as lm-eval's own models return it."""
    for stop in until:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


@register_model("s2d-hf")
class S2DHFLM(LM):
    def __init__(self, pretrained: str, device: str = "auto", dtype: str = "auto", batch_prompts: int = 8, seed: int = 0,
                 thinking: bool | str = False, **_: object) -> None:
        super().__init__()
        thinking = str(thinking).lower() in ("1", "true", "yes")  # lm-eval passes model_args as strings
        self.engine = HFEngine.load(pretrained, EngineConfig(device=device, dtype=dtype, prompts_per_batch=int(batch_prompts), thinking=thinking))
        self.seed = int(seed)
        self.pretrained = pretrained

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.engine.tok.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Rendered as s2d-bench renders every prompt (`protocol.render_chat`: enable_thinking always passed)."""
        return render_chat(self.engine.tok, chat_history, self.engine.cfg.thinking, add_generation_prompt)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            context, gen = req.args
            groups[(context, json.dumps(gen, sort_keys=True, default=str))].append(i)
        by_settings: dict[tuple[str, int], list[tuple[str, list[int]]]] = defaultdict(list)
        for (context, gen_key), idx in groups.items():
            by_settings[(gen_key, len(idx))].append((context, idx))
        answers: list[str] = [""] * len(requests)
        with tqdm(total=len(requests), desc="s2d-hf", unit="sample", disable=disable_tqdm) as bar:
            for (gen_key, k), items in by_settings.items():
                gen = json.loads(gen_key)
                rows = [self.engine.tok(context, add_special_tokens=False)["input_ids"] for context, _ in items]
                completions = self.engine.generate_ids(rows, sampling_from_gen_kwargs(gen, k), prompt_seeds(self.seed, len(rows)), bar.update)
                until = gen.get("until") or []
                until = [until] if isinstance(until, str) else until
                for n, (_, idx) in enumerate(items):
                    for j, i in enumerate(idx):
                        answers[i] = cut_at(completions[n * k + j].text, until)
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d-hf serves generate_until tasks only; use lm-eval's `hf` model for loglikelihood tasks")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("s2d-hf serves generate_until tasks only; use lm-eval's `hf` model for loglikelihood tasks")
