"""Training on several processes with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --standalone --nproc_per_node N -m pixelwise train ...`` (or multi-node with ``--nnodes`` and a
rendezvous, or from SLURM / Kubernetes) starts N copies of the same command; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them a run is
the usual single process and nothing here is used.

The rules the loop follows (train/loop.py):

- ``--batch-size`` is the global batch: each of the N processes takes its ``batch / N`` slice of every
  global batch of one seeded permutation that all ranks draw alike; the last incomplete global batch is
  dropped so that every rank takes the same number of steps;
- rank 0 alone checks the data, fills the cache, writes the split, the run folder, metrics and checkpoints;
  the others wait at a barrier (with ``PIXELWISE_DIST_TIMEOUT`` seconds, default 600, then a clear error);
- validation is sharded over ranks and reduced exactly (float64 sums of per-image Dice and of losses);
- the time budget, early stopping and the threshold are decided on rank 0 and broadcast, so ranks whose
  clocks differ still run the same number of epochs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pixelwise.errors import PixelwiseError


@dataclass
class Distributed:
    """This process's place in the group; ``world == 1`` is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self, what: str) -> None:
        """Wait for every rank; a rank that never arrives is an error after the group's timeout, not a hang."""
        if not self.active:
            return
        try:
            dist.barrier()
        except RuntimeError as error:
            raise PixelwiseError(
                f"rank {self.rank} waited for the other processes at '{what}' until the timeout "
                f"({error.__class__.__name__}): one of them failed or is stuck; read its log, "
                f"or raise PIXELWISE_DIST_TIMEOUT"
            ) from None

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object made by pixelwise itself) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks, in float64."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.reduce_device)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, before validation and saving."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    @property
    def reduce_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Leave the group. On success call it after :meth:`barrier`: gloo can abort a rank whose peer has
        already closed the connection it still reads."""
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> Distributed:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Distributed(rank, world, local_rank)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    seconds = float(os.environ.get("PIXELWISE_DIST_TIMEOUT", "600"))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=seconds))
    return Distributed(rank, world, local_rank, started_here=True)


def device_for(ddp: Distributed) -> torch.device:
    """One GPU per process (``LOCAL_RANK``) on CUDA, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", ddp.local_rank)
    return torch.device("cpu")


def rank_slices(order: torch.Tensor, batch_size: int, ddp: Distributed) -> torch.Tensor:
    """This rank's indices from a permutation that every rank drew alike, in step order.

    Global batch ``b`` is ``order[b*B:(b+1)*B]``; rank ``r`` takes its ``r``-th ``B/N`` slice of each. The last
    incomplete global batch is dropped, so every rank takes ``len(order) // B`` steps of ``B/N`` images.
    """
    per_rank = batch_size // ddp.world
    batches = len(order) // batch_size
    return order[: batches * batch_size].view(batches, ddp.world, per_rank)[:, ddp.rank].reshape(-1)


def check_batch(batch_size: int, world: int) -> None:
    if world > 1 and (batch_size % world or batch_size // world < 2):
        raise PixelwiseError(
            f"--batch-size {batch_size} is the global batch and must split into {world} equal "
            f"parts of at least 2 images (one per process): use e.g. --batch-size "
            f"{max(2, -(-batch_size // world)) * world}"
        )
