"""What a TorchServe under load costs: CPU seconds of its frontend and of everything else it runs (the workers and
the children they waited for), and the resident memory of each served process over time (and the frontend's Java heap).
One implementation for bench-stack, bench-answers, bench-tracking and the soak."""

import shutil
import subprocess
import threading
import time
from collections import defaultdict

import psutil

from loadtest.load import ClosedLoop, Turn
from runtime.torchserve import TorchServe


def cpu_seconds(server: TorchServe) -> tuple[float, float]:
    """CPU seconds (user + system, with waited-for children) of the frontend (the Java process) and of every other
    process TorchServe started."""
    root = psutil.Process(server.process.pid)
    frontend = others = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times, name = process.cpu_times(), process.name()
        except psutil.NoSuchProcess:
            continue
        seconds = times.user + times.system + times.children_user + times.children_system
        if name == "java":
            frontend += seconds
        else:
            others += seconds
    return frontend, others


def cost_per_answer(
    server: TorchServe, turns: list[Turn], warm_up_s: float, window_s: float
) -> tuple[float, float, float]:
    """Server CPU core-ms per right answer (the frontend's, the rest's) and answers/s, over ``window_s`` of ``turns`` in a
    closed loop after ``warm_up_s``; any failure raises."""
    with ClosedLoop(turns) as load:
        load.window(warm_up_s)
        before = cpu_seconds(server)
        window = load.window(window_s)
        after = cpu_seconds(server)
    load.check()
    if window.failures or not window.answered:
        raise RuntimeError(f"{len(window.failures)} failures, {len(window.answered)} answers: {window.failures[:5]}")
    frontend_ms, others_ms = ((a - b) * 1000 / len(window.answered) for a, b in zip(after, before))
    return frontend_ms, others_ms, window.per_s


def served_processes(server: TorchServe, models: list[str]) -> dict[int, str]:
    """pid -> name of TorchServe's frontend and of each model's workers."""
    names = {}
    for process in psutil.Process(server.process.pid).children(recursive=True):
        if process.name() == "java":
            names[process.pid] = "frontend"
    for model in models:
        for pid in server.worker_pids(model):
            names[pid] = f"{model} worker {pid}"
    return names


def java_heap_mb(pid: int) -> dict[str, float] | None:
    """A JVM's committed heap and its old generation's occupancy in MB (``jstat -gc``); None without a JDK's jstat."""
    jstat = shutil.which("jstat")
    if jstat is None:
        return None
    try:
        done = subprocess.run([jstat, "-gc", str(pid)], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:  # a stalled attach must not end the sampling of every process
        return None
    lines = done.stdout.split("\n")
    if done.returncode or len(lines) < 2:
        return None
    gc = dict(zip(lines[0].split(), map(float, lines[1].split())))
    return {"committed": (gc["S0C"] + gc["S1C"] + gc["EC"] + gc["OC"]) / 1024, "old generation used": gc["OU"] / 1024}


class MemorySampler(threading.Thread):
    """Resident memory of every served process, and the frontend's heap, every ``interval`` seconds from ``start`` until
    stopped."""

    def __init__(self, server: TorchServe, models: list[str], interval: float, start: float):
        super().__init__(daemon=True)
        self.server, self.models, self.interval, self.start_time = server, models, interval, start
        self.samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.heap: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            at = time.time() - self.start_time
            try:
                processes = served_processes(self.server, self.models)
            except Exception:  # the management API busy or a worker restarting: take the next sample
                processes = {}
            for pid, name in processes.items():
                try:
                    self.samples[name].append((at, psutil.Process(pid).memory_info().rss / 2**20))
                except psutil.Error:
                    pass
                if name == "frontend":
                    for part, mb in (java_heap_mb(pid) or {}).items():
                        self.heap[part].append((at, mb))
            self.stopped.wait(self.interval)
