"""Data-parallel training under ``torchrun`` (DDP), on several GPUs or CPU processes.

``torchrun --nproc_per_node N -m geoseg train ...`` starts N copies of the same command; each
trains on its own random crops (the per-step generators get the rank as an extra seed word)
and DDP averages the gradients, so one step sees N× the batch. Rank 0 alone writes the run
folder; the others only compute. Without ``WORLD_SIZE`` in the environment nothing here is
active and training is the plain single-process loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes outputs (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the ``torchrun`` process group when there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    cuda = device.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Dist(dist.get_rank(), dist.get_world_size()), device


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP around ``model`` in a job, ``model`` itself otherwise.

    Heads alternate between steps, so a step leaves the other head without gradients:
    ``find_unused_parameters`` lets DDP skip it instead of waiting for it.
    """
    if dist.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
