"""Where the plain-PyTorch loops run: one process, or several under an engine such as DeepSpeed.

The stage loops in `torch_backend.py` are written once against this small interface. A runtime
wraps the model being trained (`Trainer`: forward, step, hand the weights back), prepares a
frozen teacher, gives full weights for sampling, and says how one rank's share of a batch is
weighted so that the mean over ranks of the gradients equals the single-process gradient.
`LocalRuntime` is the one-process case; `deepspeed_backend.DeepSpeedRuntime` the distributed one.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

class Trainer(Protocol):
    model: torch.nn.Module  # the module being trained: forward passes, sampling, its head

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        """Add this micro-batch's gradient to the step's (they accumulate until `step`); `last`: the step's final micro-batch."""
        ...

    def step(self) -> float:
        """Clip the accumulated gradient, take the optimizer step, clear it; returns the norm before clipping."""
        ...

    def finish(self) -> None:
        """Leave the trained weights in the model the stage was handed (it is saved next)."""
        ...

    def save_state(self, folder: Path) -> None:
        """Write what the next step depends on (weights, optimizer states) into `folder`; every rank calls it (resume.py)."""
        ...

    def load_state(self, folder: Path) -> None:
        """Take the state `save_state` wrote, exactly."""
        ...


class Runtime(Protocol):
    rank: int
    world: int

    def trainer(self, model: torch.nn.Module, lr: float, max_norm: float) -> Trainer: ...

    def frozen(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def reference(self, model: torch.nn.Module) -> torch.nn.Module: ...  # a frozen copy of a policy (GRPO's KL anchor)

    def full_weights(self, model: torch.nn.Module) -> contextlib.AbstractContextManager: ...

    def token_weight(self, mask: torch.Tensor) -> float: ...

    def mean(self, metrics: dict[str, float]) -> dict[str, float]: ...

    def most(self, n: int) -> int:
        """The largest n over ranks (ZeRO-3 needs equal numbers of module calls on every rank)."""
        ...


def cast_copy(model: torch.nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A copy of `model` with its floating-point parameters and buffers in `dtype` on `device` (None: as they are),
    made one tensor at a time: `copy.deepcopy` finds every tensor already in its memo, so the model never exists a
    second time at its own precision (an 8B fp32 policy copied to a bf16 reference holds 15 GiB more, not 45)."""

    def moved(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else None, copy=True)

    memo: dict[int, Any] = {id(p): torch.nn.Parameter(moved(p), requires_grad=p.requires_grad) for p in model.parameters()}
    memo.update({id(b): moved(b) for b in model.buffers()})
    return copy.deepcopy(model, memo)


class AdamWTrainer:
    """torch.optim.AdamW at a constant learning rate, no weight decay, gradient clipping."""

    def __init__(self, model: torch.nn.Module, lr: float, max_norm: float) -> None:
        self.model = model
        self.max_norm = max_norm
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()

    def step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm)

    def finish(self) -> None:
        return None

    def save_state(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}, folder / "state.pt")

    def load_state(self, folder: Path) -> None:
        state = torch.load(folder / "state.pt", map_location=next(self.model.parameters()).device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


class LocalRuntime:
    """One process, one device: the model trains in place, nothing is sharded."""

    rank, world = 0, 1

    def trainer(self, model: torch.nn.Module, lr: float, max_norm: float) -> AdamWTrainer:
        return AdamWTrainer(model, lr, max_norm)

    def frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.eval()

    def reference(self, model: torch.nn.Module) -> torch.nn.Module:
        return cast_copy(model).eval()

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        yield

    def token_weight(self, mask: torch.Tensor) -> float:
        return 1.0

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def most(self, n: int) -> int:
        return n
