"""A stand-in for vLLM 0.31 (which needs a GPU build), made from the real package's API manifest.

`api-<version>.json` is written by tools/vllm_manifest.py from the real wheel's source; this module
reads it, and tests/generation/test_vllm_manifest.py fails when the two drift apart. From it:
- `LLM` accepts exactly `LLM.__init__`'s arguments and the `EngineArgs` fields its **kwargs
  reach, and its methods have the real parameter names;
- `SamplingParams` has the real fields and defaults, normalises as `__post_init__` does, and
  refuses what the real `_verify_args` and greedy check refuse, with their messages (the rules are
  the manifest's conditions, evaluated on the object);
- sample j of a request seeded s draws from its own stream seeded as the real engine seeds it
  (`child_seed`: s + j), so requests whose seeds are close share streams as they would on vLLM;
- outputs carry the real fields (`finish_reason`, `stop_reason`);
- the model's parameters have vLLM's names (q/k/v fused into qkv_proj, gate/up into
  gate_up_proj, per the architecture's loader renames) and `load_weights` maps checkpoint names
  onto them and returns the vLLM names it wrote, as the real loaders do;
- an engine start reseeds the global generators and calls gc.freeze(); one sleep-mode engine may
  live in a process (the allocator is a singleton) until `engine_core.shutdown()`; with
  `DEVICE_MEMORY` set (free, total bytes: a GPU to pretend), the start refuses as the real one does
  when free memory is below utilisation x total, or when the KV cache left after the weights cannot
  hold one `max_model_len` sequence.

It is strict where a real engine would go wrong silently: it samples from dummy weights until every
parameter was pushed, and level-2 sleep discards them (NaN). Sampling is the s2d-bench sampler per
stream, so a test can compute what a request must return (`seeded_as_vllm` below).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import random
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from s2d_bench.generation.sampling import Sampling, sample
from s2d_bench.models.sequences import left_pad

__version__ = "0.31.0"
MANIFEST = json.loads(Path(__file__).with_name(f"api-{__version__}.json").read_text())
SP = MANIFEST["sampling_params"]
ENGINE_ARGS = set(MANIFEST["llm_init"]["params"]) | set(MANIFEST["engine_args"])
INSTANCES: list["LLM"] = []
DEVICE_MEMORY: tuple[int, int] | None = None  # (free, total) bytes of a pretended GPU; None: no startup memory check
_SLEEPERS: "weakref.WeakSet[LLM]" = weakref.WeakSet()  # live engines holding the sleep-mode allocator


class SamplingParams:
    """vLLM's SamplingParams: its public fields and defaults, its normalisation and its validation rules."""

    FIELDS = {k: v for k, v in SP["fields"].items() if not k.startswith("_")}

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"Unexpected keyword argument(s) {sorted(unknown)}")
        for name, default in self.FIELDS.items():
            setattr(self, name, copy.copy(kwargs.get(name, default)))
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)
        self.stop_token_ids = [] if self.stop_token_ids is None else list(dict.fromkeys(self.stop_token_ids))
        self.bad_words = [] if self.bad_words is None else list(dict.fromkeys(self.bad_words))
        scope = {"self": self, "math": math, **SP["constants"]}
        for rule in SP["rules"]:
            if (rule["when"] is None or eval(rule["when"], scope)) and eval(rule["condition"], scope):  # noqa: S307 - the manifest's rules
                raise ValueError(eval(rule["message"], scope))  # noqa: S307
        if self.temperature < SP["constants"]["_SAMPLING_EPS"]:  # greedy, as __post_init__ sets it
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0

    def child_seeds(self) -> list[int | None]:
        """The seed of each of the n samples (v1/engine/parallel_sampling.py); one sample keeps the request's."""
        if self.n == 1 or self.seed is None:
            return [self.seed] * self.n
        return [eval(SP["child_seed"], {"seed": self.seed, "index": j}) for j in range(self.n)]  # noqa: S307


class CompletionOutput:
    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - set(MANIFEST["completion_output"])
        assert not unknown, f"CompletionOutput has no {sorted(unknown)}"
        for name in MANIFEST["completion_output"]:
            setattr(self, name, fields.get(name))


class RequestOutput:
    def __init__(self, **fields: Any) -> None:
        unknown = set(fields) - set(MANIFEST["request_output"])
        assert not unknown, f"RequestOutput has no {sorted(unknown)}"
        for name in MANIFEST["request_output"]:
            setattr(self, name, fields.get(name))


class _Model:
    """What a worker's `model_runner.model` is: parameters under vLLM's names (fused layers), and `load_weights`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        arch = (module.config.architectures or [type(module).__name__])[0]
        if arch not in MANIFEST["loaders"]:
            raise ValueError(f"Model architectures ['{arch}'] are not supported by this stand-in (known: {sorted(MANIFEST['loaders'])})")
        self.stacked = MANIFEST["loaders"][arch]["stacked"]
        self.packed_modules_mapping = MANIFEST["loaders"][arch]["packed_modules"]  # a class attribute of the real model
        self.written: set[str] = set()  # the module's own (checkpoint) names written since the last discard

    def vllm_name(self, name: str) -> str:
        for part, (fused, _) in self.stacked.items():
            if part in name:
                return name.replace(part, fused)
        return name

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        seen = set()
        for name, p in self.module.named_parameters():
            fused = self.vllm_name(name)
            if fused not in seen:
                seen.add(fused)
                yield fused, p

    def load_weights(self, weights) -> set[str]:  # noqa: ANN001 - Iterable[tuple[str, Tensor]], as in vLLM
        params = dict(self.module.named_parameters())
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)  # KeyError on a name the model does not have, as vLLM's params_dict[name]
                self.written.add(name)
                loaded.add(self.vllm_name(name))  # a shard of a fused layer reports the fused name, as the real loader
        return loaded


def _reseed(seed: int) -> None:
    """vLLM's set_random_seed, which an engine start calls."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    torch.manual_seed(seed)


def _eos_ids(model: str) -> list[int]:
    """The EOS ids vLLM adds to every request's stops: generation_config.json's, else config.json's."""
    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:
        eos = AutoConfig.from_pretrained(model).eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _check_memory(module: torch.nn.Module, kwargs: dict) -> None:
    """The real start's two refusals, on the pretended device."""
    if DEVICE_MEMORY is None:
        return
    free, total = DEVICE_MEMORY
    util = kwargs.get("gpu_memory_utilization", 0.92)
    requested = math.ceil(total * util)
    if free < requested:
        raise ValueError(f"Free memory on device cuda:0 ({free / 2**30:.2f}/{total / 2**30:.2f} GiB) on startup is less than desired "
                         f"GPU memory utilization ({util}, {requested / 2**30:.2f} GiB). Decrease GPU memory utilization or reduce GPU "
                         "memory used by other processes.")
    cfg = module.config
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads) \
        * next(module.parameters()).element_size()
    length = kwargs.get("max_model_len") or cfg.max_position_embeddings
    if (requested - weights) < per_token * length:
        raise ValueError(f"To serve at least one request with the models's max seq len ({length}), "
                         f"({per_token * length / 2**30:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
                         f"({max(requested - weights, 0) / 2**30:.2f} GiB). Try increasing `gpu_memory_utilization` or decreasing `max_model_len`")


class _EngineCore:
    def __init__(self, llm: "LLM") -> None:
        self._llm = weakref.ref(llm)
        self.alive = True

    def shutdown(self, timeout: float | None = None) -> None:
        self.alive = False
        llm = self._llm()
        if llm is not None:
            _SLEEPERS.discard(llm)
        gc.unfreeze()  # as EngineCore.shutdown undoes its start's freeze


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword argument(s) {sorted(unknown)}")
        if kwargs.get("distributed_executor_backend") == "external_launcher":
            missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
            assert not missing, f"external_launcher needs {missing} in the environment"
        if kwargs.get("enable_sleep_mode") and any(e.llm_engine.engine_core.alive for e in _SLEEPERS):
            raise RuntimeError("a sleep-mode engine is still alive in this process (CuMemAllocator is a singleton): shut it down "
                               "(llm.llm_engine.engine_core.shutdown()) and collect it before starting another")
        self.kwargs = kwargs
        _reseed(kwargs.get("seed", 0))
        dtype = kwargs.get("dtype", "auto")
        if kwargs.get("load_format") == "dummy":  # a colocated copy: weights arrive by push
            config = AutoConfig.from_pretrained(model)
            module = AutoModelForCausalLM.from_config(config, dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32).eval()
        else:  # evaluation: the checkpoint's own weights, read from the folder
            module = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32 if dtype == "auto" else dtype).eval()
        _check_memory(module, kwargs)
        self._model = _Model(module)
        if kwargs.get("load_format") != "dummy":
            self._model.written = {n for n, _ in module.named_parameters()}
        self.tokenizer = None if kwargs.get("skip_tokenizer_init") else AutoTokenizer.from_pretrained(model)
        self.eos_ids = _eos_ids(model)
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=self._model))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker), engine_core=_EngineCore(self))
        self.asleep: set[str] = set()
        self.events: list[str] = []
        self.weights_at_generate: list[dict[str, torch.Tensor]] = []
        self.prompts_at_generate: list[list[list[int]]] = []
        self.params_at_generate: list[list[SamplingParams]] = []
        if kwargs.get("enable_sleep_mode"):
            _SLEEPERS.add(self)
        INSTANCES.append(self)
        gc.freeze()  # EngineCore's start, as in vLLM: what exists now is never collected until unfreeze

    @property
    def module(self) -> torch.nn.Module:
        return self._model.module

    def collective_rpc(self, method, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None) -> list:  # noqa: ANN001
        """On each worker (one here): a method name, or a callable given the worker first."""
        worker = self.llm_engine.model_executor.driver_worker
        fn = getattr(worker, method) if isinstance(method, str) else (lambda *a, **kw: method(worker, *a, **kw))
        self.events.append("collective_rpc")
        return [fn(*args, **(kwargs or {}))]

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.events.append("reset_prefix_cache")
        return True

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        assert self.kwargs.get("enable_sleep_mode"), "sleep needs enable_sleep_mode=True"
        assert not self.asleep, "sleep while asleep"
        self.events.append(f"sleep{level}")
        self.asleep = {"weights", "kv_cache"}
        if level == 2:  # weights discarded: a push must follow
            with torch.no_grad():
                for p in self.module.parameters():
                    p.fill_(float("nan"))
            self._model.written.clear()

    def wake_up(self, tags: list[str] | None = None) -> None:
        tags = ["weights", "kv_cache"] if tags is None else tags
        self.events.append("wake_" + "+".join(tags))
        self.asleep -= set(tags)

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None, *,  # noqa: ANN001
                 use_tqdm: bool = True, lora_request=None, priority=None, tokenization_kwargs=None,  # noqa: ANN001
                 mm_processor_kwargs=None) -> list[RequestOutput]:  # noqa: ANN001
        assert self.llm_engine.engine_core.alive, "generate after shutdown"
        assert not self.asleep, f"generate while asleep: {sorted(self.asleep)}"
        names = {n for n, _ in self.module.named_parameters()}
        assert self._model.written == names, f"sampling from dummy weights: never loaded {sorted(names - self._model.written)[:3]}"
        prompts = prompts if isinstance(prompts, list) else [prompts]
        sampling_params = SamplingParams() if sampling_params is None else sampling_params
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "one SamplingParams per prompt"
        assert not any(self.tokenizer is None and p.detokenize for p in params), "no tokenizer to detokenize with"
        self.events.append("generate")
        self.weights_at_generate.append({n: p.detach().clone() for n, p in self.module.named_parameters()})
        rows = [list(x["prompt_token_ids"]) for x in prompts]
        self.prompts_at_generate.append(rows)
        self.params_at_generate.append(params)
        return [self._one(i, row, p) for i, (row, p) in enumerate(zip(rows, params))]

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, chat_template=None,  # noqa: ANN001
             chat_template_content_format="auto", add_generation_prompt=True, continue_final_message=False, tools=None,  # noqa: ANN001
             chat_template_kwargs=None, tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:  # noqa: ANN001
        """Each conversation through the tokenizer's chat template (vLLM's renderer), then `generate`."""
        assert self.tokenizer is not None, "chat needs the tokenizer (skip_tokenizer_init=False)"
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        rows = [self.tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=add_generation_prompt, chat_template=chat_template,
                                                   **(chat_template_kwargs or {})) for c in conversations]
        rows = [list(r["input_ids"]) if isinstance(r, dict) or hasattr(r, "keys") else list(r) for r in rows]
        return self.generate([{"prompt_token_ids": r} for r in rows], sampling_params, use_tqdm=use_tqdm)

    def _one(self, i: int, row: list[int], p: SamplingParams) -> RequestOutput:
        ids, mask = left_pad([row], 0)
        stops = list(p.stop_token_ids) + ([] if p.ignore_eos else self.eos_ids)
        outputs = []
        for j, seed in enumerate(p.child_seeds()):
            s = Sampling(k=1, temperature=p.temperature, top_p=p.top_p, top_k=max(p.top_k, 0), max_new_tokens=p.max_tokens)
            seed = random.getrandbits(63) if seed is None else seed
            tokens, alive = sample(self.module, ids, mask, s, stops or [-1], 0, [seed])
            seq = tokens[0][alive[0].bool()].tolist()
            stopped = bool(seq) and seq[-1] in stops
            text = self.tokenizer.decode(seq, skip_special_tokens=p.skip_special_tokens) if p.detokenize else ""
            outputs.append(CompletionOutput(index=j, text=text, token_ids=tuple(seq), cumulative_logprob=None, logprobs=None,
                                            finish_reason="stop" if stopped else "length",
                                            stop_reason=seq[-1] if stopped and seq[-1] in p.stop_token_ids else None))
        return RequestOutput(request_id=str(i), prompt=None, prompt_token_ids=row, prompt_logprobs=None, outputs=outputs, finished=True)


@contextlib.contextmanager
def seeded_as_vllm() -> Iterator[None]:
    """The hf engine sampling as this stand-in does: sample j of a prompt seeded s from its own stream `child_seed`
    (one sample per stream), so a test can compare the vllm engine's tokens with the built-in sampler's."""
    from dataclasses import replace

    from s2d_bench.generation.hf import HFEngine

    real = HFEngine._sample

    def per_stream(self, rows, sampling, seeds, progress):  # noqa: ANN001, ANN202
        if sampling.k == 1 or sampling.temperature == 0:  # one sample keeps its seed; greedy samples are one, repeated
            return real(self, rows, sampling, seeds, progress)
        streams = [eval(SP["child_seed"], {"seed": s, "index": j}) for s in seeds for j in range(sampling.k)]  # noqa: S307
        return real(self, [r for r in rows for _ in range(sampling.k)], replace(sampling, k=1), streams, progress)

    HFEngine._sample = per_stream
    try:
        yield
    finally:
        HFEngine._sample = real
