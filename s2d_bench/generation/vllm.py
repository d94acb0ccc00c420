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
the prompt, stop set and text are the hf engine's. vLLM gives sample j of a request seeded s the
stream s + j; prompt seeds are 63-bit hashes (`protocol.prompt_seeds`), so no two prompts, samples
or ranks share a stream. The API used here is checked against the real 0.31 package's source
(tools/vllm_manifest.py, tests/generation/test_vllm_manifest.py).
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
from s2d_bench.generation.protocol import check_context, completion_texts, context_of, render, stop_ids, stop_ids_of
from s2d_bench.generation.rollouts import Rollouts, rollouts_from_tokens
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.builders import load_tokenizer
from s2d_bench.models.refs import resolve_model


def sampling_params(sampling: Sampling, seed: int, **extra) -> SamplingParams:
    """Our `Sampling` in vLLM's terms for one request.

    vLLM refuses n > 1 when greedy; greedy samples are identical, so one is drawn (see `_expand`).
    """
    return SamplingParams(
        n=1 if sampling.temperature == 0 else sampling.k,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,  # 0 is off in vLLM 0.31 too
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


def check_fits(weights: int, kv_per_token: int, length: int, free: int, total: int, cfg: RolloutConfig) -> None:
    """Refuse, with the setting to change, what vLLM's start would refuse after minutes of loading: less free
    memory than its share (utilisation x total), weights over that share (tensor parallel 1: a whole copy per
    GPU), or a KV cache, after the weights, too small for one `max_model_len` sequence."""
    util = cfg.gpu_memory_utilization
    share = util * total
    gib = 2**30
    if free < share:
        raise UserError(f"rollout.engine=vllm: {free / gib:.1f} GiB of the GPU's {total / gib:.1f} GiB are free, less than vLLM's share "
                        f"({share / gib:.1f} GiB at rollout.gpu_memory_utilization={util}); lower it to at most {free / total:.2f}")
    if weights > share:
        raise UserError(f"rollout.engine=vllm: this model's weights ({weights / gib:.1f} GiB) exceed vLLM's share of one GPU "
                        f"({share / gib:.1f} GiB at rollout.gpu_memory_utilization={util}); raise it, "
                        "or use rollout.engine=hf (each rank keeps a whole vLLM copy: no tensor parallel rollouts)")
    if share - weights < kv_per_token * length:
        room = int((share - weights) // kv_per_token)
        raise UserError(f"rollout.engine=vllm: vLLM's KV cache must hold one whole sequence of max_model_len {length:,} tokens "
                        f"({kv_per_token * length / gib:.1f} GiB), but {(share - weights) / gib:.1f} GiB are left after the weights; "
                        f"set rollout.max_model_len <= {room:,} (a prompt plus max_new_tokens) or raise rollout.gpu_memory_utilization")


def _check_device(model: PreTrainedModel, cfg: RolloutConfig) -> None:
    """`check_fits` for a colocated copy of `model` on this rank's GPU (nothing to check without one)."""
    if not torch.cuda.is_available():
        return
    from s2d_bench import budget

    free, total = torch.cuda.mem_get_info()
    weights = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()) * model.dtype.itemsize  # ZeRO-3: full size
    kv = budget.Shape.of(model.config).kv_bytes(model.dtype.itemsize)
    check_fits(weights, kv, cfg.max_model_len or context_of(model.config), free, total, cfg)


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


def _load_on_worker(worker, weights) -> list[str]:  # noqa: ANN001 - a vLLM worker; (name, tensor) pairs
    """Runs on each vLLM worker (`collective_rpc`): the model's own `load_weights`, and what it left unwritten. Its
    loader maps checkpoint names onto fused layers and never checks that it wrote every parameter; one it skipped
    keeps its dummy values silently. It reports a fused layer (qkv_proj) written when any shard was, so every
    shard its `packed_modules_mapping` names must also have been sent."""
    model = worker.model_runner.model
    weights = list(weights)
    sent = {name for name, _ in weights}
    loaded = set(model.load_weights(weights) or ())
    missing = {name for name, _ in model.named_parameters()} - loaded
    for name in loaded:
        for fused, parts in getattr(model, "packed_modules_mapping", {}).items():
            if f".{fused}." in name:
                missing |= {f"{name} ({part} shard)" for part in parts if name.replace(f".{fused}.", f".{part}.") not in sent}
    return sorted(missing)


def push_weights(llm: LLM, weights) -> None:  # noqa: ANN001 - an iterable of (name, tensor)
    """The trainer's weights into the engine through vLLM's public route, `collective_rpc` with a function run
    on each worker (in this process under the external launcher, so the tensors are not copied), and a failure
    naming any parameter left unwritten."""
    for missing in llm.collective_rpc(_load_on_worker, args=(weights,)):
        if missing:
            raise RuntimeError(f"vLLM weight push left {len(missing)} parameter(s) unwritten, still dummy values: "
                               f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the trainer's names do not map onto this model")
    llm.reset_prefix_cache()  # its entries were computed with the old weights


def shutdown(llm: LLM) -> None:
    """Stop the engine core (its executor, scheduler and process group) and undo its start's gc.freeze(), so a later
    engine can start in this process: dropping the last reference is not enough while the collector is frozen.
    The caller then drops its references and collects (`release_memory`)."""
    llm.llm_engine.engine_core.shutdown()


def release_memory() -> None:
    """Collect what a shut-down engine left (its references already dropped) and hand cached GPU memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
        _check_device(model, cfg)
        folder = tempfile.TemporaryDirectory(prefix="s2d-vllm-")
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # models built from a config carry none; vLLM picks its class by it
        config.save_pretrained(folder.name)
        stops = stop_ids(model, tok)
        GenerationConfig(eos_token_id=stops).save_pretrained(folder.name)  # vLLM adds these EOS ids to every request
        distributed.launcher_env()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: its model is reachable
        return cls(start(**engine_args(model, cfg, folder.name)), tok, stops, thinking, model, trained, cfg.sleep, folder,
                   cfg.max_model_len or context_of(model.config))

    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        tokens = self._sample(render(self.tok, prompts, self.thinking), sampling, seeds)
        if progress is not None:
            progress(len(tokens))
        texts = completion_texts(self.tok, tokens)
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
        push_weights(self.llm, [(name, p.data) for name, p in self.model.named_parameters()])  # tied weights come once
        self.pushes += 1

    def check_prompts(self, prompts: list[str], names: list[str], max_new_tokens: int) -> None:
        check_context(self.tok, prompts, names, self.thinking, self.context, max_new_tokens)

    def close(self) -> None:
        shutdown(self.llm)
        del self.llm
        release_memory()
        if self._dir is not None:
            self._dir.cleanup()


def _expand(samples: list[list[int]], k: int) -> list[list[int]]:
    """k samples of one request: a greedy request drew one, which all k repeat."""
    if len(samples) == k:
        return samples
    if len(samples) == 1:
        return samples * k
    raise RuntimeError(f"vLLM returned {len(samples)} samples for a request of {k}")
