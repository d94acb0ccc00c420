"""DeepSpeed backend: the plain-PyTorch stage loops on a DeepSpeed engine (ZeRO 0-3, offload).

The stage loops and losses are `torch_backend`'s, unchanged; only the `Runtime` differs. Each
rank samples its share of every step's prompts and weights its token-mean loss by its share of
the step's tokens, so the gradient DeepSpeed averages over ranks is the single-process gradient
of the whole batch. The frozen teacher is an inference-only engine, ZeRO-3 sharded when
`deepspeed.teacher_zero3` is set. Under ZeRO-3 the trained copy is sharded and its gathered
weights are copied back into the model the stage was handed, which the pipeline then saves.

Launch: `deepspeed --num_gpus 8 $(which s2d-bench) run --config configs/paper-qwen3.yaml` (or
`accelerate launch`); a plain `s2d-bench run backend=deepspeed` is one rank on its own.
"""

from __future__ import annotations

import contextlib
import copy
import os
from datetime import timedelta
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator

from s2d_bench import distributed
from s2d_bench.backends.base import DistillJob, RLJob, StageReport
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.config import DeepSpeedConfig, GRPOConfig, RunConfig
from s2d_bench.errors import UserError


def init_distributed(timeout_minutes: int) -> None:
    """Join (or, without a launcher, create) the process group; one rank needs no launcher."""
    if dist.is_initialized():
        return
    distributed.launcher_env()  # plain `s2d-bench run`: a world of one
    deepspeed.init_distributed(timeout=timedelta(minutes=timeout_minutes))
    if get_accelerator().device_name() == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _is_zero3(model: torch.nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


class DeepSpeedTrainer:
    """A DeepSpeed engine around the trained model; ZeRO-3 trains a sharded copy."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], client_lr: float | None) -> None:
        self.target = model
        self.zero3 = config["zero_optimization"]["stage"] == 3
        trained = copy.deepcopy(model) if self.zero3 else model
        opt = None if client_lr is None else torch.optim.AdamW(trained.parameters(), lr=client_lr, weight_decay=0.0)
        self.engine, *_ = deepspeed.initialize(model=trained, optimizer=opt, config=config)
        self.model = self.engine.module

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        # Our forwards call the module, not the engine, so what DeepSpeed's forward does first is done here:
        # ZeRO-3 counts the micro-step (else each backward overwrites the accumulated gradient partition).
        if hasattr(self.engine.optimizer, "clear_backward_seen_flag"):
            self.engine.optimizer.clear_backward_seen_flag()
        # ZeRO reduces (and, at stage 3, partitions) gradients at the accumulation boundary only, so it is told
        # which micro-batch ends the step; our micro-batch weights already sum to the step's token mean.
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def finish(self) -> None:
        if self.zero3:
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
        if self.cfg.offload_optimizer:  # offloaded states need DeepSpeed's CPU Adam, built from this section
            config["optimizer"] = {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0}}
        return {**config, **self.cfg.extra}

    def trainer(self, model: torch.nn.Module, lr: float, max_norm: float) -> DeepSpeedTrainer:
        config = self.engine_config(lr, max_norm, self.cfg.zero_stage)
        return DeepSpeedTrainer(model, config, None if "optimizer" in config else lr)

    def frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.cfg.teacher_zero3:
            return model.to(self.device, torch.bfloat16 if self.cfg.bf16 else None).eval()
        config = self.engine_config(0.0, 0.0, 3)
        config.pop("optimizer", None)
        engine, *_ = deepspeed.initialize(model=model, config=config)
        return engine.module.eval()

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
    """`TorchBackend`'s loops on a `DeepSpeedRuntime`, made when `validate(cfg)` is called."""

    name = "deepspeed"

    def __init__(self) -> None:
        self._loops: TorchBackend | None = None
        self.load_device: str | None = None  # where the pipeline loads models for this backend

    def validate(self, cfg: RunConfig) -> None:
        """Join the process group, check each stage's batch covers every rank, and set placement."""
        runtime = DeepSpeedRuntime(cfg.deepspeed)
        for arm in cfg.arms:
            for stage in cfg.arms[arm].stages:
                stage_cfg = cfg.stage_config(arm, stage)
                per_step = stage_cfg.prompts_per_step if isinstance(stage_cfg, GRPOConfig) else stage_cfg.batch_size
                if per_step < runtime.world:
                    raise UserError(f"backend=deepspeed: {arm}/{stage} draws {per_step} prompts a step for {runtime.world} ranks; "
                                    "raise its prompts_per_step/batch_size to at least the number of ranks")
        zero3 = cfg.deepspeed.zero_stage == 3 or cfg.deepspeed.teacher_zero3
        self.load_device = "cpu" if zero3 else str(runtime.device)  # ZeRO-3 shards from host memory
        self._loops = TorchBackend(runtime)
        self._loops.validate(cfg)

    def memory_layout(self) -> dict[str, Any]:
        """What the preflight memory estimate needs to know about this engine (budget.py)."""
        cfg = self.loops.runtime.cfg
        return {"precision": "bf16-mixed" if cfg.bf16 else "fp32", "zero_stage": cfg.zero_stage, "world": self.loops.runtime.world,
                "offload_optimizer": cfg.offload_optimizer, "offload_params": cfg.offload_params, "teacher_zero3": cfg.teacher_zero3}

    @property
    def loops(self) -> TorchBackend:
        if self._loops is None:
            raise RuntimeError("DeepSpeedBackend.validate(cfg) must run first: it joins the process group")
        return self._loops

    def teacher_rl(self, job: RLJob) -> StageReport:
        return self.loops.teacher_rl(job)

    def warmup(self, job: DistillJob) -> StageReport:
        return self.loops.warmup(job)

    def opd(self, job: DistillJob) -> StageReport:
        return self.loops.opd(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self.loops.student_rl(job)
