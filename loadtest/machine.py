"""One line naming the machine a figure was measured on."""

import os
import platform
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
