"""The `vllm` engine (extra `vllm`): evaluation from a path, and rollouts from a colocated copy.

Evaluation (`VLLMEngine.load`) starts vLLM on the checkpoint, tensor parallel across GPUs.

Rollouts (`VLLMEngine.live`) follow TRL's colocate mode (trl/generation/vllm_generation.py, for
the vLLM releases TRL 1.16 supports: 0.22 to 0.31). Each rank holds one vLLM copy of the sampling
model beside its trainer, in this process (`distributed_executor_backend="external_launcher"`,
tensor parallel 1), so its model object is reachable for weight loading. The copy starts from
dummy weights (`load_format="dummy"`: only the model's config is written to disk); the trainer's
weights go in through the vLLM model's own `load_weights`, before every rollout of a trained
model and once for a frozen teacher, and the prefix cache is reset after each push (its entries
were computed with the old weights). With `rollout.sleep`, vLLM frees its memory between rollouts
so the optimizer step gets it back: level 2 for a trained model (its weights are replaced by the
next push anyway), level 1 for a frozen teacher (weights to host memory, back on `wake_up`).

Both kinds take prompts as token ids from `protocol.render`, stop at `protocol.stop_ids`, give
every prompt its own seed (one SamplingParams per request) and decode with our tokenizer, so
the prompt, stop set and text are the hf engine's.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import tempfile
from typing import Iterator

import torch
from transformers import AutoConfig, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from vllm import LLM, SamplingParams

from s2d_bench import distributed
from s2d_bench.config import RolloutConfig
from s2d_bench.errors import UserError
from s2d_bench.generation.engine import Completion, EngineConfig, Progress
from s2d_bench.generation.protocol import check_context, context_of, render, stop_ids, stop_ids_of
from s2d_bench.generation.rollouts import Rollouts, rollouts_from_tokens
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.builders import load_tokenizer
from s2d_bench.models.refs import resolve_model


def sampling_params(sampling: Sampling, seed: int, **extra) -> SamplingParams:
    """Our `Sampling` in vLLM's terms for one request (top_k 0, ours for off, is vLLM's -1).

    vLLM refuses n > 1 when greedy; greedy samples are identical, so one is drawn (see `_expand`).
    """
    return SamplingParams(
        n=1 if sampling.temperature == 0 else sampling.k,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        max_tokens=sampling.max_new_tokens,
        seed=seed,
        **extra,
    )


def engine_args(model: PreTrainedModel, cfg: RolloutConfig, model_dir: str) -> dict:
    """`vllm.LLM` keyword arguments for a colocated copy of `model` (cfg.extra wins)."""
    args = dict(
        model=model_dir, load_format="dummy", skip_tokenizer_init=True, dtype=model.dtype,
        tensor_parallel_size=1, distributed_executor_backend="external_launcher",
        seed=distributed.rank(),  # sampling seeds are per request; this seeds the engine's own state
        gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len or None,
        enable_sleep_mode=cfg.sleep, enforce_eager=cfg.enforce_eager,
    )
    return {**args, **cfg.extra}


def check_fits(model: PreTrainedModel, cfg: RolloutConfig) -> None:
    """A whole copy per GPU (tensor parallel 1): refuse a model vLLM's share of the GPU cannot hold,
    with the fix, rather than let vLLM fail on its KV-cache check."""
    if not torch.cuda.is_available():
        return
    weights = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()) * model.dtype.itemsize  # ZeRO-3: full size
    budget = cfg.gpu_memory_utilization * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    if weights > budget:
        raise UserError(f"rollout.engine=vllm: this model's weights ({weights / 2**30:.1f} GiB) exceed vLLM's share of one GPU "
                        f"({budget / 2**30:.1f} GiB at rollout.gpu_memory_utilization={cfg.gpu_memory_utilization}); raise it, "
                        "or use rollout.engine=hf (each rank keeps a whole vLLM copy: no tensor parallel rollouts)")


@contextlib.contextmanager
def kept_rng_state() -> Iterator[None]:
    """vLLM reseeds Python's, NumPy's and torch's global generators when an engine starts; a trainer's
    draws after it must not depend on whether one started."""
    import random

    import numpy as np

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def start(**engine_args) -> LLM:
    """A new `vllm.LLM`, the process made ready for it: sleep mode's allocator allows one engine per
    process, and vLLM's start freezes the garbage collector, so an engine only dropped by collection
    (TRL's, from an earlier stage) is collected first; the global generators are kept as they were."""
    gc.unfreeze()
    gc.collect()
    with kept_rng_state():
        return LLM(**engine_args)


def check_landed(target, loaded) -> None:  # noqa: ANN001 - vLLM's model and what its load_weights returned
    """Every parameter of vLLM's model was written by a push: its loader maps names onto fused layers and
    never reports one it skipped, which would keep its dummy values silently."""
    if loaded is None:  # a loader that reports nothing cannot be checked
        return
    missing = sorted({name for name, _ in target.named_parameters()} - set(loaded))
    if missing:
        raise RuntimeError(f"vLLM weight push left {len(missing)} parameter(s) unwritten, still dummy values: "
                           f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the trainer's names do not map onto this model")


class VLLMEngine:
    def __init__(self, llm: LLM, tok: PreTrainedTokenizerBase, stops: list[int], thinking: bool, model: PreTrainedModel | None = None,
                 trained: bool = False, sleep: bool = False, folder: tempfile.TemporaryDirectory | None = None,
                 context: int | None = None) -> None:
        self.llm, self.tok, self.stops, self.thinking, self.context = llm, tok, stops, thinking, context
        self.model, self.trained = model, trained  # the module a colocated copy follows (None: loaded from a path)
        self.pushes = 0
        self._asleep = False
        self._sleep, self._dir = sleep, folder

    @classmethod
    def load(cls, ref: str, cfg: EngineConfig = EngineConfig()) -> "VLLMEngine":
        """Evaluation: the checkpoint at `ref`, tensor parallel over cfg.tensor_parallel_size GPUs."""
        dtype = "auto" if cfg.dtype == "auto" else cfg.dtype
        ref = resolve_model(ref)
        tok = load_tokenizer(ref)
        try:
            generation = GenerationConfig.from_pretrained(ref)
        except OSError:  # a folder without generation_config.json: the tokenizer's EOS alone
            generation = None
        llm = start(model=ref, tensor_parallel_size=cfg.tensor_parallel_size, dtype=dtype)
        return cls(llm, tok, stop_ids_of(generation, tok), cfg.thinking, context=context_of(AutoConfig.from_pretrained(ref)))

    @classmethod
    def live(cls, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: RolloutConfig, thinking: bool, trained: bool) -> "VLLMEngine":
        """Rollouts: a dummy-weight copy of `model` in this process, weights pushed from the trainer."""
        check_fits(model, cfg)
        folder = tempfile.TemporaryDirectory(prefix="s2d-vllm-")
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # models built from a config carry none; vLLM picks its class by it
        config.save_pretrained(folder.name)
        distributed.launcher_env()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: its model is reachable
        return cls(start(**engine_args(model, cfg, folder.name)), tok, stop_ids(model, tok), thinking, model, trained, cfg.sleep, folder,
                   cfg.max_model_len or context_of(model.config))

    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        tokens = self._sample(render(self.tok, prompts, self.thinking), sampling, seeds)
        if progress is not None:
            progress(len(tokens))
        texts = self.tok.batch_decode(tokens, skip_special_tokens=True)
        return [Completion(text, len(ids), ids) for text, ids in zip(texts, tokens)]

    def rollouts(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> Rollouts:
        rows = render(self.tok, prompts, self.thinking)
        return rollouts_from_tokens(self.tok, rows, sampling.k, self._sample(rows, sampling, seeds))

    def _sample(self, rows: list[list[int]], sampling: Sampling, seeds: list[int]) -> list[list[int]]:
        if len(seeds) != len(rows):
            raise ValueError(f"{len(seeds)} seeds for {len(rows)} prompts: one seed per prompt")
        if self.model is not None:
            self._wake_and_push()
        params = [sampling_params(sampling, s, stop_token_ids=self.stops, detokenize=False) for s in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": r} for r in rows], params, use_tqdm=False)
        if self._sleep:
            self.llm.sleep(level=2 if self.trained else 1)
            self._asleep = True
        return [ids for out in outputs for ids in _expand([list(o.token_ids) for o in out.outputs], sampling.k)]

    def _wake_and_push(self) -> None:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        if self.trained or self.pushes == 0:
            self._push()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False

    def _push(self) -> None:
        """The model's weights into vLLM's copy (call inside the runtime's `full_weights`: ZeRO-3 gathered)."""
        target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        loaded = target.load_weights((name, p.data) for name, p in self.model.named_parameters())  # tied weights come once
        check_landed(target, loaded)
        self.llm.reset_prefix_cache()
        self.pushes += 1

    def check_prompts(self, prompts: list[str], names: list[str], max_new_tokens: int) -> None:
        check_context(self.tok, prompts, names, self.thinking, self.context, max_new_tokens)

    def close(self) -> None:
        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self._dir is not None:
            self._dir.cleanup()


def _expand(samples: list[list[int]], k: int) -> list[list[int]]:
    """k samples of one request: a greedy request drew one, which all k repeat."""
    if len(samples) == k:
        return samples
    if len(samples) == 1:
        return samples * k
    raise RuntimeError(f"vLLM returned {len(samples)} samples for a request of {k}")
