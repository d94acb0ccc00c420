"""Activation checkpointing around a training step: layers keep only their inputs and recompute the
rest in backward, so activation memory stops growing with the number of layers.

It is switched on for the forward/backward of an update only, never while sampling: transformers
turns the KV cache off in a training-mode model with checkpointing on, and the sampler needs it.
Non-reentrant checkpointing (PyTorch's recommended form) so ZeRO-3's parameter hooks still fire.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from transformers import PreTrainedModel


@contextlib.contextmanager
def checkpointing(model: PreTrainedModel, enabled: bool) -> Iterator[None]:
    """`model` with activation checkpointing (and in training mode, which it needs) while inside; as it was after."""
    if not enabled:
        yield
        return
    was_training = model.training
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    try:
        yield
    finally:
        model.gradient_checkpointing_disable()
        model.train(was_training)
