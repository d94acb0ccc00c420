"""DeepSpeed backend: the plain-PyTorch stage loops on a DeepSpeed engine (ZeRO 0-3, offload).

The stage loops and losses are `torch_backend`'s, unchanged; only the `Runtime` differs. Each
rank samples its share of every step's prompts and weights its token-mean loss by its share of
the step's tokens, so the gradient DeepSpeed averages over ranks is the single-process gradient
of the whole batch. The frozen teacher is an inference-only engine, ZeRO-3 sharded when
`deepspeed.teacher_zero3` is set. Under ZeRO-3 the trained copy is sharded and its gathered
weights are copied back into the model the stage was handed, which the pipeline then saves.

Launch: `deepspeed --num_gpus 8 $(which s2d-bench) run --config paper-qwen3` (or
`accelerate launch`); a plain `s2d-bench run backend=deepspeed` is one rank on its own.
"""

from __future__ import annotations

import contextlib
import copy
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.base_optimizer import ZeROOptimizer
from deepspeed.runtime.zero.utils import is_zero_param

from s2d_bench import budget, distributed
from s2d_bench.backends.base import DistillJob, RLJob, StageReport
from s2d_bench.backends.runtime import cast_copy
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.config import DeepSpeedConfig, RunConfig
from s2d_bench.models.builders import load_pretrained


def init_distributed(timeout_minutes: int) -> None:
    """Join (or, without a launcher, create) the process group; one rank needs no launcher.

    The world-of-one environment is described even when a group already exists: DeepSpeed's engine reads LOCAL_RANK
    from the environment at every start, and a process that made its group earlier may have lost it since."""
    distributed.launcher_env()  # plain `s2d-bench run`: a world of one (a launcher's RANK leaves everything as it set it)
    if dist.is_initialized():
        return
    deepspeed.init_distributed(timeout=timedelta(minutes=timeout_minutes))
    if get_accelerator().device_name() == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _is_zero3(model: torch.nn.Module) -> bool:
    """Whether the model was loaded ZeRO-3 partitioned (DeepSpeed's own test of a parameter)."""
    return any(is_zero_param(p) for p in model.parameters())


class DeepSpeedTrainer:
    """A DeepSpeed engine around the trained model. A model loaded partitioned (`DeepSpeedBackend.load`) is
    trained as it is; a whole model handed to ZeRO-3 is trained as a sharded copy whose gathered weights are
    copied back at the end, so the caller's model holds the result either way."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], client_lr: float | None) -> None:
        self.target = model
        self.zero3 = config["zero_optimization"]["stage"] == 3
        trained = copy.deepcopy(model) if self.zero3 and not _is_zero3(model) else model
        opt = None if client_lr is None else torch.optim.AdamW(trained.parameters(), lr=client_lr, weight_decay=0.0)
        self.engine, *_ = deepspeed.initialize(model=trained, optimizer=opt, config=config)
        self.model = self.engine.module

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        # Our forwards call the module, not the engine, so what DeepSpeed's forward does first is done here:
        # a ZeRO optimizer counts the micro-step (else at stage 3 each backward overwrites the accumulated gradient
        # partition). The test is the engine's own (DeepSpeedEngine.forward).
        if isinstance(self.engine.optimizer, ZeROOptimizer):
            self.engine.optimizer.clear_backward_seen_flag()
        # ZeRO reduces (and, at stage 3, partitions) gradients at the accumulation boundary only, so it is told
        # which micro-batch ends the step; our micro-batch weights already sum to the step's token mean.
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save_state(self, folder: Path) -> None:
        """DeepSpeed's own checkpoint: each rank writes its partition of the weights and optimizer states."""
        self.engine.save_checkpoint(str(folder), tag="state", save_latest=False)

    def load_state(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder), tag="state", load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{folder}: no DeepSpeed state to continue from")

    def finish(self) -> None:
        if self.model is not self.target:
            params = list(self.model.parameters())
            with deepspeed.zero.GatheredParameters(params):
                for src, dst in zip(params, self.target.parameters()):
                    dst.data.copy_(src.data.to(dst.device))
        self.engine.destroy()


class DeepSpeedRuntime:
    """Data-parallel ranks over DeepSpeed engines; see `runtime.Runtime`."""

    def __init__(self, cfg: DeepSpeedConfig) -> None:
        init_distributed(cfg.timeout_minutes)
        self.cfg = cfg
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(get_accelerator().current_device_name())

    def engine_config(self, lr: float, max_norm: float, stage: int) -> dict[str, Any]:
        zero: dict[str, Any] = {"stage": stage}
        if self.cfg.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if self.cfg.offload_params and stage == 3:
            zero["offload_param"] = {"device": "cpu"}
        config: dict[str, Any] = {
            # we accumulate micro-batches and step once per batch ourselves, marking the boundary (DeepSpeedTrainer.backward)
            "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
            "gradient_clipping": max_norm, "zero_optimization": zero, "bf16": {"enabled": self.cfg.bf16},
            "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
        }
        if self.cfg.bf16 and stage >= 2:  # DeepSpeed 0.19.8 accumulates in the model's dtype unless told (refusals: ZeRO-2/3 only)
            config["data_types"] = {"grad_accum_dtype": "fp32"}
        if self.cfg.offload_optimizer:  # offloaded states need DeepSpeed's CPU Adam, built from this section
            config["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0}}
        return {**config, **self.cfg.extra}

    def trainer(self, model: torch.nn.Module, lr: float, max_norm: float) -> DeepSpeedTrainer:
        config = self.engine_config(lr, max_norm, self.cfg.zero_stage)
        return DeepSpeedTrainer(model, config, None if "optimizer" in config else lr)

    def zero3_config(self) -> dict[str, Any]:
        """The engine config of a ZeRO-3 model without an optimizer: frozen teachers, partitioned loading."""
        config = self.engine_config(0.0, 0.0, 3)
        config.pop("optimizer", None)
        return config

    @contextlib.contextmanager
    def partitioned_loading(self):  # noqa: ANN201 - a context manager
        """Models built inside are built in `zero.Init` and loaded partition by partition (transformers'
        HfDeepSpeedConfig path): a rank never holds the whole model, on the host or the device."""
        from transformers.integrations import HfDeepSpeedConfig

        keep = HfDeepSpeedConfig(self.zero3_config())  # transformers holds it by weak reference: alive while loading
        try:
            yield
        finally:
            del keep

    def frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.cfg.teacher_zero3 and not _is_zero3(model):
            return model.to(self.device, torch.bfloat16 if self.cfg.bf16 else None).eval()
        engine, *_ = deepspeed.initialize(model=model, config=self.zero3_config())  # partitions a whole model; hooks a loaded one
        return engine.module.eval()

    def reference(self, model: torch.nn.Module) -> torch.nn.Module:
        """A partitioned policy's copy is built partitioned and filled partition by partition: nothing is gathered.
        A whole policy's copy is made in the weights' dtype a tensor at a time (`cast_copy`): no fp32 transient."""
        if not _is_zero3(model):
            return self.frozen(cast_copy(model, self.device, torch.bfloat16 if self.cfg.bf16 else None))
        with self.partitioned_loading():
            ref = type(model)._from_config(model.config, dtype=next(model.parameters()).dtype)
        for src, dst in zip(model.parameters(), ref.parameters()):
            dst.ds_tensor.data.copy_(src.ds_tensor.data)  # same shapes on the same ranks: the same partitions
        return self.frozen(ref)

    def full_weights(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Sampling runs many forwards of different lengths per rank: gather ZeRO-3 shards once."""
        if _is_zero3(model):
            return deepspeed.zero.GatheredParameters(list(model.parameters()))
        return contextlib.nullcontext()

    def token_weight(self, mask: torch.Tensor) -> float:
        counts = torch.tensor([float(mask.sum())], device=self.device)
        local = float(counts)
        dist.all_reduce(counts)
        return local * self.world / float(counts) if float(counts) > 0 else 0.0

    def most(self, n: int) -> int:
        value = torch.tensor([n], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value)

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        keys = sorted(metrics)
        values = torch.tensor([float(metrics[k]) for k in keys], device=self.device, dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.world).tolist()))


class DeepSpeedBackend:
    """`TorchBackend`'s loops on a `DeepSpeedRuntime`; building it joins the process group."""

    name = "deepspeed"

    def __init__(self, cfg: RunConfig) -> None:
        self.loops = TorchBackend(cfg, DeepSpeedRuntime(cfg.deepspeed))

    def load(self, ref: str, trained: bool) -> tuple[Any, Any]:
        """A ZeRO-3 model (the trained one at zero_stage 3, the teacher with teacher_zero3) is loaded partitioned;
        another, whole onto this rank's device."""
        rt = self.loops.runtime
        if not (rt.cfg.zero_stage == 3 if trained else rt.cfg.teacher_zero3):
            return load_pretrained(ref, str(rt.device))
        with rt.partitioned_loading():
            return load_pretrained(ref, None)

    def saving(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Every rank enters: a partitioned model is gathered whole for rank 0 to save."""
        return self.loops.runtime.full_weights(model)

    def memory_layout(self) -> dict[str, Any]:
        return budget.deepspeed_layout(self.loops.runtime.cfg, self.loops.runtime.world)

    def teacher_rl(self, job: RLJob) -> StageReport:
        return self.loops.teacher_rl(job)

    def warmup(self, job: DistillJob) -> StageReport:
        return self.loops.warmup(job)

    def opd(self, job: DistillJob) -> StageReport:
        return self.loops.opd(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self.loops.student_rl(job)
