"""Several processes, one training: PyTorch's own ``torch.distributed``, as ``torchrun`` starts it.

    torchrun --standalone --nproc-per-node 2 -m metricad train --out RUN ...

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``init`` then joins the process group (gloo on a CPU,
NCCL on GPUs, one GPU per process). Each rank trains on its share of every global batch (``local_batch``: dealt
class by class, so that each rank's batch holds the normal class and reference classes), DistributedDataParallel
averages the gradients, and only rank 0 writes checkpoints and the run. Without ``torchrun`` everything here is a
no-op and training is the plain one-process loop.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def launch_rank() -> int:
    """The rank ``torchrun`` gave this process (0 without it): known before the process group is joined and after
    it is left, e.g. to print one line for the whole job."""
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init(device=None) -> torch.device | None:
    """Join the process group ``torchrun`` describes (if any) and return this rank's device (None: the caller's
    choice stands). Idempotent."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not is_distributed():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown(clean: bool = True) -> None:
    """Leave the process group, on every path out of a distributed job.

    Without it, a rank exits with the group still alive: DistributedDataParallel's reducer (kept in reference
    cycles until the collector runs) and gloo's worker threads are then torn down during interpreter
    finalisation, and a rank can die with SIGABRT ("terminate called without an active exception") after the run
    was written. So: free what holds the group while Python is fully alive, wait until every rank is done with its
    collectives (``clean``: the normal exit; after an error the other ranks may never arrive), then destroy it.
    """
    if not is_distributed():
        return
    gc.collect()
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank. DDP sends them at the start of each
    forward, but each rank then updates its own with its share of the batch: after training they differ, and the
    model rank 0 saves is the one every rank must embed with."""
    if world() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, 0)


def local_batch(indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch: its indices sorted by label (stably), then dealt round-robin, so that
    every rank gets its share of each class in the batch. One process keeps the batch as it is."""
    if world() == 1:
        return indices
    order = torch.sort(labels[indices], stable=True).indices
    return indices[order][rank()::world()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order, this rank's own slot keeping its gradient (the others are
    constants), as pytorch-metric-learning's DistributedLossWrapper gathers: a loss on the result times the world
    size, averaged by DDP, has the gradient of the loss on the global batch."""
    if world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = x
    return torch.cat(parts)


def _collective_device(x: torch.Tensor) -> torch.device:
    return x.device if dist.get_backend() == "nccl" else torch.device("cpu")  # NCCL gathers on the GPU only


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank (in rank order; the shards may differ in length by one), on every rank."""
    if world() == 1:
        return x
    device = _collective_device(x)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world())]
    dist.all_gather(sizes, torch.tensor([len(x)], device=device))
    longest = int(max(size.item() for size in sizes))
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=device)
    padded[:len(x)] = x.to(device)
    parts = [torch.empty_like(padded) for _ in range(world())]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(size.item())] for part, size in zip(parts, sizes)]).to(x.device)


def shard(n: int) -> slice:
    """This rank's contiguous share of ``n`` items (the first ``n % world`` ranks take one more)."""
    size, extra = divmod(n, world())
    start = rank() * size + min(rank(), extra)
    return slice(start, start + size + (rank() < extra))
