"""vLLM as the training loops' rollout engine (extra `vllm`), colocated with the trainer.

Decoding with the HF-style sampler is what bounds a stage at real sizes (about 40 ms a decode
step for a 1.7B model on an H100, against a 0.5 s training step for 9k tokens; see the README's
Scale section), so the torch and deepspeed backends can sample with vLLM instead.

This follows TRL's colocate mode (trl/generation/vllm_generation.py, for the vLLM releases TRL
1.16 supports: 0.22 to 0.31). Each rank holds one vLLM copy of the sampling model beside its
trainer. The engine runs in this process (`distributed_executor_backend="external_launcher"`,
tensor parallel 1), so its model object is reachable for weight loading.

The engine starts from dummy weights (`load_format="dummy"`): only the model's config is written
to disk. The trainer's weights then go in through the vLLM model's own `load_weights`, which maps
Hugging Face parameter names onto vLLM's fused layers. A live model is pushed before every
rollout, a frozen teacher once. After each push the prefix cache is reset, because KV entries
computed with the old weights would be reused otherwise.

With `rollout.sleep`, vLLM releases its memory between rollouts so that the optimizer step gets
it back. For a live model, level 2 frees the KV cache and drops the weights, which the next push
replaces anyway. For a frozen teacher, level 1 frees the KV cache and moves the weights to host
memory, from which `wake_up` restores them.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from vllm import LLM

from s2d_bench import distributed
from s2d_bench.backends.base import Rollouts
from s2d_bench.backends.rollouts import rollouts_from_tokens
from s2d_bench.config import RolloutConfig
from s2d_bench.errors import UserError
from s2d_bench.harness.sampling import Sampling
from s2d_bench.harness.vllm_engine import sampling_params
from s2d_bench.models.sequences import encode_prompts


def engine_args(model: PreTrainedModel, cfg: RolloutConfig, model_dir: str) -> dict:
    """`vllm.LLM` keyword arguments for a colocated copy of `model` (cfg.extra wins)."""
    args = dict(
        model=model_dir, load_format="dummy", skip_tokenizer_init=True, dtype=model.dtype,
        tensor_parallel_size=1, distributed_executor_backend="external_launcher",
        seed=distributed.rank(),  # each rank's engine draws differently; sampling seeds are per request anyway
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


class VLLMRollouts:
    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: RolloutConfig, live: bool) -> None:
        check_fits(model, cfg)
        self.model, self.tok, self.cfg, self.live = model, tok, cfg, live
        self._dir = tempfile.TemporaryDirectory(prefix="s2d-vllm-")
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # models built from a config carry none; vLLM picks its class by it
        config.save_pretrained(self._dir.name)
        distributed.launcher_env()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: its model is reachable
        self.llm = LLM(**engine_args(model, cfg, self._dir.name))
        self.pushes = 0
        self._asleep = False

    def _push(self) -> None:
        """The model's weights into vLLM's copy (call inside the runtime's `full_weights`: ZeRO-3 gathered)."""
        target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        target.load_weights((name, p.data) for name, p in self.model.named_parameters())  # tied weights come once
        self.llm.reset_prefix_cache()
        self.pushes += 1

    def generate(self, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        if self.live or self.pushes == 0:
            self._push()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        rows = encode_prompts(self.tok, prompts)
        params = sampling_params(sampling, seed, stop_token_ids=[self.tok.eos_token_id], detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": r} for r in rows], params, use_tqdm=False)
        completions = [list(o.token_ids) for out in outputs for o in out.outputs]
        if self.cfg.sleep:
            self.llm.sleep(level=2 if self.live else 1)
            self._asleep = True
        return rollouts_from_tokens(self.tok, rows, sampling.k, completions)

    def close(self) -> None:
        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._dir.cleanup()
