"""Several processes, one run: torch.distributed as torchrun launches it.

``torchrun --nproc-per-node N -m edgeprune prune ...`` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK set. :func:`setup` joins them into one process group (NCCL for CUDA,
gloo for the CPU) and gives each rank its GPU; fine-tuning then runs under
DistributedDataParallel with a DistributedSampler, MI capture is split by rows across the ranks,
rank 0 makes every pruning decision and broadcasts it, and only rank 0 prints and writes files.

Outside torchrun (WORLD_SIZE unset or 1) every helper here is a no-op that returns its input, so
one process behaves exactly as before and nothing imports torch.distributed.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")
# per-rank seeds differ by this much (a prime, so rank seeds of nearby base seeds do not collide)
RANK_SEED_STRIDE = 1_000_003


def launched() -> bool:
    """Whether torchrun (or a launcher like it) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process is in an initialised group of more than one process."""
    if not launched():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; torchrun's RANK once the group is left (:func:`finish`), so the
    other ranks still know they are not rank 0; 0 outside torchrun."""
    import torch.distributed as dist

    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the one process that prints and writes files (True outside torchrun)."""
    return rank() == 0


def setup(device: str) -> str:
    """Join the process group torchrun describes (once per process) and return this rank's
    device: ``cuda`` (or any ``cuda:N``) becomes ``cuda:LOCAL_RANK``, one GPU per process.
    Outside torchrun: ``device`` unchanged and nothing started."""
    if not launched():
        return device
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)  # NCCL's object collectives use the current device
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(cleanup)
    return device


def cleanup() -> None:
    """Leave the process group (at exit; safe to call twice)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` holds it, on every rank (any picklable object)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def rank_seed(seed: int) -> int:
    """This rank's seed: ``seed`` itself on rank 0 (so one process seeds as before), distinct
    on the others (their augmentation draws must differ)."""
    return seed + RANK_SEED_STRIDE * rank() if active() else seed


# ---------------------------------------------------------------- sharded capture


def shard_bounds(n: int, ranks: int | None = None, r: int | None = None) -> tuple[int, int]:
    """Rows lo..hi−1 of ``n`` that rank ``r`` of ``ranks`` takes: contiguous, in order, sizes
    differing by at most one, so concatenating the shards by rank restores the order."""
    ranks = world_size() if ranks is None else ranks
    r = (rank() if active() else 0) if r is None else r
    return n * r // ranks, n * (r + 1) // ranks


def sharded_rows(fn: Callable[[torch.Tensor], dict[Any, torch.Tensor]],
                 x: torch.Tensor) -> dict[Any, torch.Tensor]:
    """``fn(x)`` (a dict of per-row outputs, rows first), computed by each rank on its shard
    of ``x`` and gathered on every rank in the original row order: the same tensors one
    process gets from ``fn(x)``, each rank doing 1/N of the forward passes."""
    if not active():
        return fn(x)
    import torch.distributed as dist

    lo, hi = shard_bounds(len(x))
    mine = fn(x[lo:hi]) if hi > lo else None
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, _to_cpu(mine))
    parts = [p for p in parts if p is not None]  # ranks with no rows (n < ranks)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _to_cpu(d: dict | None) -> dict | None:
    return None if d is None else {k: v.cpu() for k, v in d.items()}


# ---------------------------------------------------------------- data-parallel training


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged over the ranks at each
    step, rank 0's weights broadcast at the start), or ``model`` itself in one process."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def rank_batch_size(batch_size: int) -> int:
    """Each rank's mini-batch: the global ``batch_size`` split over the ranks, so a step sees
    as many samples (and the learning rate means the same) as in one process."""
    return max(1, batch_size // world_size())


def batches_per_epoch(n: int, batch_size: int) -> int:
    per_rank = math.ceil(n / world_size())  # DistributedSampler pads every rank to this
    return math.ceil(per_rank / rank_batch_size(batch_size))


def epoch_batches(data, batch_size: int, *, augment: bool, seed: int,
                  epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The train batches of ``epoch`` for this rank. One process: the data set's own seeded
    shuffle, as before. Several: a DistributedSampler (seeded, ``set_epoch`` each epoch) gives
    each rank a disjoint share, and each rank draws its own augmentation."""
    epoch_seed = seed * 100_003 + epoch
    if not active():
        return data.batches("train", batch_size, shuffle=True, augment=augment, seed=epoch_seed)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(data.train)), num_replicas=world_size(), rank=rank(),
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    return data.batches("train", rank_batch_size(batch_size), augment=augment,
                        seed=rank_seed(epoch_seed), order=order)


def mean_over_ranks(total: float, count: int, device: torch.device) -> float:
    """sum(total) / sum(count) over the ranks (e.g. an epoch's mean loss), on every rank."""
    if not active():
        return total / max(count, 1)
    import torch.distributed as dist

    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / max(t[1], 1.0))


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): DDP keeps the weights
    equal, but each rank's last forward pass updated its own statistics."""
    if not active():
        return
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b.data, src=0)


# ---------------------------------------------------------------- edgeprune build


def finish() -> None:
    """Every rank is past the distributed part: wait for all, then leave the group, so what
    rank 0 does next (export, quantize, profile) runs as one process."""
    if active():
        barrier()
        cleanup()


def follow_build(cfg, will_prune: bool) -> None:
    """What a rank other than 0 does in ``edgeprune build``: take part in the prune stage
    (the same model, data and options, so the same collectives in the same order) when rank 0
    runs it, write nothing, and leave the group with rank 0."""
    if will_prune:
        from edgeprune.checkpoint import data_for_model, load_model
        from edgeprune.data import load_dataset
        from edgeprune.prune import prune_model

        loaded = load_model(cfg.model, trust_model=cfg.trust_model)
        data = data_for_model(loaded, load_dataset(cfg.data))
        prune_model(loaded, data, cfg.prune_config(), cfg.out)
    finish()
