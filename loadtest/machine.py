"""What every benchmark needs: one line naming the machine, a steady timing of a piece of work, and its row in
docs/benchmarks.md."""

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


def append_table_row(benchmarks: Path, section: str, header: str, row: str) -> None:
    """Add ``row`` at the end of the table that ``header`` opens under ``section`` of ``benchmarks``; the section and
    its table are made if missing."""
    text = benchmarks.read_text() if benchmarks.exists() else "# Benchmarks\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n"
    start = text.index(section)
    lines = text[start:].split("\n")
    section_end = next((i for i, line in enumerate(lines) if i and line.startswith("## ")), len(lines))
    opening = header.split("\n")[0]
    if opening not in lines[:section_end]:  # a new table at the section's end (other tables may share the section)
        while section_end > 1 and not lines[section_end - 1].strip():
            section_end -= 1
        lines[section_end:section_end] = ["", *header.split("\n")]  # the blank lines it stepped back over follow it
    table_end = lines.index(opening)
    while table_end + 1 < len(lines) and lines[table_end + 1].startswith("|"):
        table_end += 1
    lines.insert(table_end + 1, row)
    benchmarks.write_text(text[:start] + "\n".join(lines))
