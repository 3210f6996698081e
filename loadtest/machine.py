"""What every benchmark needs: one line naming the machine, and a steady timing of a piece of work (loadtest/results.py
writes what they measured)."""

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def describe_machine(device: torch.device) -> str:
    """CPU model and cores, torch threads, and the GPU when one is used."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs after one warm-up, waiting for the GPU if one is used."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
