"""torch.distributed helpers: one process per device under torchrun, a no-op otherwise.

Under `torchrun` (WORLD_SIZE > 1) the process group is initialised from the environment (NCCL on
CUDA, gloo on CPU); full-model training wraps the model in DistributedDataParallel; prompt tuning,
whose frozen trunk runs outside autograd, averages the few trainable gradients with all_reduce.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as td


def is_initialized() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return td.get_world_size() if is_initialized() else 1


def init_from_env() -> torch.device | None:
    """Initialise the process group when launched by torchrun; returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_initialized():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        td.init_process_group(backend="nccl")
        return torch.device("cuda", local_rank)
    td.init_process_group(backend="gloo")
    return torch.device("cpu")


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    if not is_initialized():
        return model
    device_ids = [model.device.index] if model.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def average_gradients(params) -> None:
    if not is_initialized():
        return
    for p in params:
        if p.grad is not None:
            td.all_reduce(p.grad)
            p.grad /= world_size()


def mean_num_masks(targets) -> float:
    """Target masks per process, averaged over processes (the official loss normaliser)."""
    n = torch.tensor([float(sum(int(t.labels.numel()) for t in targets))])
    if is_initialized():
        if td.get_backend() == "nccl":
            n = n.cuda()
        td.all_reduce(n)
    return max(float(n.item()) / world_size(), 1.0)


def barrier() -> None:
    if is_initialized():
        td.barrier()


def gather_objects(obj) -> list:
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def log(message: str) -> None:
    if rank() == 0:
        print(message, file=sys.stderr, flush=True)


def maybe_compile(module: torch.nn.Module, enabled: bool):
    """`torch.compile(module)` when enabled and available (config `solver.compile`), else the module.
    A compile failure at the first call (no C++ compiler, unsupported op) falls back to eager with
    a warning instead of killing the run."""
    if not enabled or not hasattr(torch, "compile"):
        return module
    compiled = torch.compile(module)
    state = {"fn": compiled}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except Exception as e:
            if state["fn"] is module:
                raise
            log(
                f"warning: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running eager"
            )
            state["fn"] = module
            return module(*args, **kwargs)

    return call
