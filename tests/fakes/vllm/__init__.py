"""A stand-in for the parts of vLLM that s2d-bench's rollout engine uses (vLLM needs a GPU build).

It is strict where a real engine would go wrong silently: it samples from dummy (random) weights
until every parameter has been pushed through `load_weights`, and level-2 sleep discards the
weights (NaN), so an engine that forgets a push samples garbage and a test comparing against the
built-in sampler fails. Names, signatures and the object path to the model follow vLLM 0.31 as
TRL 1.16's colocate mode uses it. Sampling is the s2d-bench sampler with each request's own seed
(`generate` takes one SamplingParams per request, as vLLM does), so the same weights and seeds give
the same tokens as the hf engine. Like vLLM 0.31, it refuses n > 1 with greedy sampling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from s2d_bench.generation.sampling import Sampling, sample
from s2d_bench.models.sequences import left_pad

INSTANCES: list["LLM"] = []
ENGINE_ARGS = {"model", "load_format", "skip_tokenizer_init", "dtype", "tensor_parallel_size", "distributed_executor_backend",
               "seed", "gpu_memory_utilization", "max_model_len", "enable_sleep_mode", "enforce_eager", "max_num_seqs"}


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    detokenize: bool = True

    def __post_init__(self) -> None:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")  # vLLM 0.31 sampling_params.py


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: tuple[int, ...]


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Model:
    """What `driver_worker.model_runner.model` is: the model, with vLLM's `load_weights`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.loaded: set[str] = set()

    def named_parameters(self):  # noqa: ANN201 - vLLM's model is the nn.Module itself
        return self.module.named_parameters()

    def load_weights(self, weights) -> set[str]:  # noqa: ANN001 - Iterable[tuple[str, Tensor]], as in vLLM
        params = dict(self.module.named_parameters())
        names = set()
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)  # KeyError on a name the model does not have, as vLLM
                names.add(name)
        self.loaded |= names
        return names


def _reseed(seed: int) -> None:
    """vLLM seeds Python's, NumPy's and torch's global generators when an engine starts."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class LLM:
    def __init__(self, model: str, **kwargs) -> None:
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("distributed_executor_backend") == "external_launcher":
            missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
            assert not missing, f"external_launcher needs {missing} in the environment"
        self.kwargs = kwargs
        _reseed(kwargs.get("seed", 0))  # as vLLM's engine start does
        if kwargs.get("load_format") == "dummy":  # a colocated copy: weights arrive by push
            assert kwargs.get("skip_tokenizer_init"), "a dummy-weight copy is driven with token ids"
            config = AutoConfig.from_pretrained(model)
            self._model = _Model(AutoModelForCausalLM.from_config(config, dtype=kwargs.get("dtype", torch.float32)).eval())
        else:  # evaluation: the checkpoint's own weights, read from the folder
            dtype = kwargs.get("dtype", "auto")
            self._model = _Model(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32 if dtype == "auto" else dtype).eval())
            self._model.loaded = {n for n, _ in self._model.module.named_parameters()}
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=self._model))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))
        self.asleep: set[str] = set()
        self.events: list[str] = []
        self.weights_at_generate: list[dict[str, torch.Tensor]] = []
        self.prompts_at_generate: list[list[list[int]]] = []
        self.params_at_generate: list[list[SamplingParams]] = []
        INSTANCES.append(self)

    @property
    def module(self) -> torch.nn.Module:
        return self._model.module

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True

    def sleep(self, level: int = 1) -> None:
        assert self.kwargs.get("enable_sleep_mode"), "sleep needs enable_sleep_mode=True"
        assert not self.asleep, "sleep while asleep"
        self.events.append(f"sleep{level}")
        self.asleep = {"weights", "kv_cache"}
        if level == 2:  # weights discarded: a push must follow
            with torch.no_grad():
                for p in self.module.parameters():
                    p.fill_(float("nan"))
            self._model.loaded.clear()

    def wake_up(self, tags: list[str] | None = None) -> None:
        tags = ["weights", "kv_cache"] if tags is None else tags
        self.events.append("wake_" + "+".join(tags))
        self.asleep -= set(tags)

    def generate(self, prompts: list[dict], sampling_params: SamplingParams | list[SamplingParams], use_tqdm: bool = True) -> list[RequestOutput]:
        assert not self.asleep, f"generate while asleep: {sorted(self.asleep)}"
        names = {n for n, _ in self.module.named_parameters()}
        assert self._model.loaded == names, f"sampling from dummy weights: never loaded {sorted(names - self._model.loaded)[:3]}"
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "one SamplingParams per prompt"
        assert not any(self.kwargs.get("skip_tokenizer_init") and p.detokenize for p in params), "no tokenizer to detokenize with"
        self.events.append("generate")
        self.weights_at_generate.append({n: p.detach().clone() for n, p in self.module.named_parameters()})
        self.prompts_at_generate.append([list(x["prompt_token_ids"]) for x in prompts])
        self.params_at_generate.append(params)
        return [self._one(x["prompt_token_ids"], p) for x, p in zip(prompts, params)]

    def _one(self, row: list[int], p: SamplingParams) -> RequestOutput:
        ids, mask = left_pad([row], 0)
        s = Sampling(k=p.n, temperature=p.temperature, top_p=p.top_p, top_k=max(p.top_k, 0), max_new_tokens=p.max_tokens)
        tokens, alive = sample(self.module, ids, mask, s, list(p.stop_token_ids or []), 0, [p.seed])
        seqs = [tokens[j][alive[j].bool()].tolist() for j in range(p.n)]
        return RequestOutput(row, [CompletionOutput(j, "", tuple(t)) for j, t in enumerate(seqs)])
