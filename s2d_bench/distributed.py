"""Who does what when several processes run one config (`deepspeed` or `accelerate launch`).

Every rank trains each stage together and samples its share of each evaluation; rank 0 alone
gathers and grades the samples, writes files and talks to the results store, and the others wait
for it at a barrier. With one process (or before any process group exists) every helper here is a
no-op, so single-process code never needs to ask.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world() -> int:
    return dist.get_world_size() if _active() else 1


def launched_world() -> int:
    """Ranks of this launch, also before the process group exists: the launcher's WORLD_SIZE, else the group's."""
    return int(os.environ.get("WORLD_SIZE", world()))


def is_main() -> bool:
    return rank() == 0


def launcher_env() -> None:
    """Without a launcher, describe a world of one in the environment, as `torchrun` would.

    DeepSpeed (else it tries MPI) and vLLM's in-process `external_launcher` executor read
    RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; a launcher sets them itself.
    """
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def agree(value: T) -> T:
    """Rank 0's value on every rank: decisions (is this stage done?) must not diverge."""
    if world() == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T] | None:
    """Every rank's value, in rank order, on rank 0; None on the others."""
    if world() == 1:
        return [value]
    box: list[Any] | None = [None] * world() if is_main() else None
    dist.gather_object(value, box, dst=0)
    return box


def shutdown() -> None:
    """Leave the process group before the interpreter exits: gloo's threads, torn down at exit
    instead, can abort the process ("terminate called without an active exception")."""
    if _active():
        dist.barrier()
        dist.destroy_process_group()
    groups = sys.modules.get("deepspeed.utils.groups")
    if groups is not None:  # DeepSpeed caches the world group: a later engine in this process would use the destroyed one
        groups._WORLD_GROUP = None
