"""Data parallel over prompts on `torch.distributed`: thin helpers, identity in one process.

Launched by `torchrun --nproc-per-node N`, every rank runs the same program on its shard of
the batches; the library's reduction points (node effects, edges, evaluation sums) all-reduce
float64 sums, so every rank ends with the single-process result and takes the same decisions
(node selection). Backend: NCCL when the device is CUDA, gloo otherwise.

Failure: each reduction first all-reduces a status flag. A rank that raises reports failure
through the same flag (`guard`), so its peers stop at their next reduction with `PeerFailure`
instead of waiting for a collective that never comes; the group has a finite timeout.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import UserError

DEFAULT_TIMEOUT_S = 900


class PeerFailure(RuntimeError):
    """Another rank failed; this rank stops too."""


def launched() -> bool:
    """True inside a torchrun launch (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: str) -> str:
    """The device this rank runs on: 'cuda' becomes 'cuda:<LOCAL_RANK>' under torchrun."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def backend_for(device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(device="cpu", timeout_s: float | None = None) -> bool:
    """Join the torchrun process group (env:// rendezvous) once; False when not launched."""
    if not launched() or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    device = torch.device(local_device(str(device)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timeout_s or float(os.environ.get("SFC_RELP_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout))
    return True


def shutdown() -> None:
    """Destroy the process group (safe when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where collective tensors live: the current CUDA device under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _status(failed: bool) -> bool:
    """All-reduce a failure flag; True when any rank failed."""
    flag = torch.tensor([1 if failed else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def check_peers() -> None:
    """Raise PeerFailure when another rank has reported failure (a no-op in one process)."""
    if active() and _status(False):
        raise PeerFailure(f"rank {rank()}: stopping because another rank failed")


def shard(items: list, how: str = "strided") -> list:
    """This rank's share of `items`: every N-th from its rank ('strided', which spreads a short
    last batch) or one contiguous block ('contiguous'). Deterministic; all of them in one process."""
    n, r = world_size(), rank()
    if n == 1:
        return list(items)
    if how == "strided":
        return list(items[r::n])
    if how == "contiguous":
        size, extra = divmod(len(items), n)
        start = r * size + min(r, extra)
        return list(items[start:start + size + (r < extra)])
    raise ValueError(f"unknown sharding {how!r}")


def require_shards(count: int, what: str = "batches") -> None:
    """A UserError when there are fewer `what` than ranks (some rank would have no work)."""
    if count < world_size():
        raise UserError(f"{count} {what} for {world_size()} processes; use fewer processes "
                        "(--nproc-per-node), more examples or a smaller --batch-size")


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sums over ranks, each in float64 (returned in float64 on each input's device).

    One flattened all-reduce for the whole list; checks peers first. In one process the
    inputs come back as float64 unchanged in value.
    """
    out = [t.detach().to(torch.float64) for t in tensors]
    if not active():
        return out
    check_peers()
    device = _device()
    flat = torch.cat([t.reshape(-1).to(device) for t in out]) if out else \
        torch.zeros(0, dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    result, start = [], 0
    for t in out:
        result.append(flat[start:start + t.numel()].view(t.shape).to(t.device))
        start += t.numel()
    return result


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """The full (total, ...) tensor from each rank's strided row shard (`shard(rows)`), on every rank."""
    if not active():
        return local
    check_peers()
    n, device = world_size(), _device()
    per_rank = -(-total // n)
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded)
    stacked = torch.stack(parts, 1).flatten(0, 1)  # row k*n + r = rank r's k-th row
    return stacked[:total].to(local.device)


@contextlib.contextmanager
def guard():
    """Run a rank's work; on an exception report failure to the peers (so they stop at their
    next reduction instead of hanging), then re-raise. After success, wait for every rank
    and stop with PeerFailure if any failed."""
    try:
        yield
    except PeerFailure:
        raise
    except BaseException:
        if active():
            with contextlib.suppress(Exception):  # peers may be gone; the original error matters
                _status(True)
        raise
    else:
        check_peers()


def shard_batch(batch):
    """This rank's strided rows of a TaskBatch (padding kept from the full batch, so positions
    line up across ranks); the batch itself in one process."""
    if not active():
        return batch
    require_shards(len(batch), "prompts")
    index = torch.arange(rank(), len(batch), world_size())
    take = lambda t: t[index.to(t.device)]
    return type(batch)({k: take(v) for k, v in batch.clean.items()},
                       {k: take(v) for k, v in batch.patch.items()},
                       take(batch.clean_answer), take(batch.patch_answer))


def mean_over_ranks(local_mean: torch.Tensor, local_count: int, total: int) -> torch.Tensor:
    """The mean over all ranks' examples from each rank's mean over its own `local_count`."""
    if not active():
        return local_mean
    (summed,) = all_reduce_sum([local_mean * local_count])
    return (summed / total).to(local_mean.dtype)
