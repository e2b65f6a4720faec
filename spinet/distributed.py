"""Where a training process runs: its place in a distributed run, its device, deterministic algorithms.

Several processes (``torchrun --standalone --nproc_per_node N -m cli train ...`` or any launcher setting
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) join one process group (NCCL on GPUs, gloo on CPUs); rank 0 validates,
logs and writes checkpoints (:mod:`spinet.train`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from spisim.backend import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a distributed run (world 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device, bool]:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (torchrun), join the process group, pick the device.

    Args:
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`spisim.backend.resolve_device`; ``cuda``
            is this process's local rank's GPU in a distributed run).

    Returns:
        (this process's place, its device, whether this call created the process group).

    Raises:
        ConfigError: an unknown device, or CUDA asked for where torch sees none.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank, world, local)
    name = resolve_device(device_name, library="torch", option="train.device")
    want_cuda = name != "cpu"
    if want_cuda:
        device = torch.device(name if ":" in name else f"cuda:{local if info.active else 0}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    created = False
    if info.active and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if want_cuda else "gloo")
        created = True
    return info, device, created


class Determinism:
    """Context manager switching deterministic algorithms on for the run (``on``) and back afterwards."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.prev = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        self.prev_bench = torch.backends.cudnn.benchmark
        if self.on:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.prev, warn_only=self.prev_warn)
        torch.backends.cudnn.benchmark = self.prev_bench


def check_in_sync(net: torch.nn.Module, device: torch.device) -> None:
    """Raise when the ranks' weights differ (DDP keeps them equal; anything else is a bug)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in net.parameters()])
        probe = torch.stack(
            [flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64, device=flat.device)).sum()]
        )
        probe = probe.to(device if device.type == "cuda" else "cpu")
        gathered = [torch.zeros_like(probe) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, probe)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("distributed ranks ended with different weights")
