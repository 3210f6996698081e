"""The archiving step every recipe shares: compile (``.pt2`` or TorchScript), numeric check, model-config, ``.mar``."""

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

logger = logging.getLogger("export")

REPO = Path(__file__).resolve().parent.parent
HANDLERS = REPO / "handlers"
# The module TorchServe loads: one line that hands each batch to the handler class model-config.yaml names.
ENTRY = HANDLERS / "entry.py"


@dataclass(frozen=True)
class Sequences:
    """TorchServe's sequence batching (stateful models): each sequence's requests go in order to one worker."""

    max_idle_ms: int  # the frontend closes a sequence idle this long
    timeout_ms: int  # ... or this long after it started (0: never)
    max_sequences: int  # open sequences the model takes; more are refused
    queue_size: int  # requests one sequence may have waiting
    # TorchServe 0.12 never restarts a dead worker of a sequence-batching model (its retry
    # starts the aggregator's running dispatcher thread again, which throws), and the model
    # answers nothing more. /ping turns Unhealthy once a worker has been down this long,
    # so that a liveness probe restarts the server.
    unhealthy_after_s: int = 30

    def config(self) -> dict[str, Any]:
        """The model-config.yaml keys TorchServe reads."""
        return {
            "maxRetryTimeoutInSec": self.unhealthy_after_s,
            "sequenceBatching": True,
            # Continuous sequence batching: the handler can close a sequence with an answer header
            # (plain sequence batching keeps every ended sequence polled until it idles out).
            "continuousBatching": True,
            "sequenceMaxIdleMSec": self.max_idle_ms,
            "sequenceTimeoutMSec": self.timeout_ms,
            "maxNumSequence": self.max_sequences,
            "maxSequenceJobQueueSize": self.queue_size,
        }


@dataclass(frozen=True)
class Serving:
    """TorchServe's per-model settings (model-config.yaml top level)."""

    batch_size: int
    max_batch_delay_ms: int
    workers: int = 1
    response_timeout_s: int = 120
    threads: int = 0  # torch threads per CPU worker (the handler sets them); 0: torch's default, one per core
    sequences: Sequences | None = None  # stateful models only

    def config(self) -> dict[str, Any]:
        """The model-config.yaml keys TorchServe reads."""
        return {
            "minWorkers": self.workers,
            "maxWorkers": self.workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            **(self.sequences.config() if self.sequences else {}),
        }


# The settings `python -m export` (and `make bench`, which passes them on) may override: field, flag, what it is.
SERVING_FLAGS = (
    ("batch_size", "--batch-size", "TorchServe batch size"),
    ("max_batch_delay_ms", "--max-batch-delay", "batch delay (ms)"),
    ("workers", "--workers", "workers per model"),
    ("threads", "--threads", "torch threads per CPU worker (0: one per core)"),
)


def add_serving_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--batch-size``, ``--max-batch-delay``, ``--workers``, ``--threads``: overrides of a recipe's ``Serving``."""
    for field_name, flag, what in SERVING_FLAGS:
        parser.add_argument(flag, type=int, dest=field_name, metavar="N", help=f"override the recipe's {what}")


def serving_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The ``Serving`` fields the command line gave (``add_serving_arguments``)."""
    return {name: getattr(args, name) for name, _, _ in SERVING_FLAGS if getattr(args, name) is not None}


@dataclass(frozen=True)
class Pt2Shapes:
    """The inputs an exported program accepts: a batch of 1 to ``batch`` and, for whole-image models, sides within
    ``sides``.

    ``batch`` None: the archive's batch size. The handler keeps its model inputs within these bounds.
    """

    batch: int | None = None
    sides: tuple[int, int] | None = None  # (least, most) pixels of height and width
    multiple: int = 1  # sides are multiples of this


@dataclass(frozen=True)
class Part:
    """One model file of an archive and where its weights came from."""

    name: str
    module: nn.Module
    example_inputs: Callable[[int], tuple[Any, ...]]
    weights: dict[str, Any]
    torchscript: str = "trace"
    check_batch: int = 3  # batch size of the compiled-vs-eager check (traces use 2)
    pt2: Pt2Shapes | None = None  # None: torch.export cannot take the module; TorchScript it is


@dataclass(frozen=True)
class Build:
    """How an archive's models are compiled: format, target device and precision."""

    format: str = "pt2"  # pt2 where the part allows it, else TorchScript; or torchscript for every part
    device: str = "cpu"  # a .pt2 package runs only on the device type it is compiled for
    precision: str = "fp32"  # fp32 | fp16 | bf16: .pt2 packages compute under autocast to that type


@dataclass(frozen=True)
class Package:
    """Everything one archive holds besides the serving tree (handlers/), which every archive carries whole."""

    name: str
    parts: tuple[Part, ...]  # the first is the archive's serialized file, model.pt2 or .pt; others NAME.pt2 or .pt
    handler: str  # the module of the handler class, e.g. handlers.pose.handler (a test fixture may live elsewhere)
    handler_config: dict[str, Any]
    serving: Serving
    version: str = "1.0"


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
# Freezing folds the weights into the graph as constants (batch norms into convolutions):
# measured 1.5x on pose_resnet50 on CPU, no gain without it (issue 12).
INDUCTOR_CONFIGS = {"freezing": True}
COMPILE_CACHE = Path(os.environ.get("HUMANSERVE_COMPILE_CACHE", Path.home() / ".cache" / "humanserve" / "pt2"))


def to_torchscript(part: Part) -> torch.jit.ScriptModule:
    """Script or trace ``part.module`` (eval mode) and check it against eager on a new batch size."""
    module = part.module.eval()
    # TorchScript is deprecated upstream but is the format TorchServe 0.12 loads.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        if part.torchscript == "script":
            scripted = torch.jit.script(module)
        else:
            scripted = torch.jit.trace(module, part.example_inputs(2), check_trace=False)
        check_inputs = part.example_inputs(part.check_batch)
        assert_same_outputs(module(*check_inputs), scripted(*check_inputs), part.name)
    return scripted


def to_pt2(part: Part, build: Build, batch_size: int, target: Path) -> dict[str, Any]:
    """torch.export ``part.module`` with dynamic shapes, compile it with AOTInductor into ``target``; its record.

    The package is checked against eager at batch 1 and ``part.check_batch`` (and a second
    picture size for whole-image models). Packages are cached by the content of the exported
    program and the build settings (``HUMANSERVE_COMPILE_CACHE``): the compile takes ~50 s per
    ResNet-50 on 2 cores.
    """
    shapes = part.pt2
    assert shapes is not None, f"{part.name} has no torch.export shapes"
    most = shapes.batch or batch_size
    device = torch.device(build.device)
    module = autocast_to(part.module.eval(), build).to(device)
    inputs = _to(part.example_inputs(max(2, min(part.check_batch, most))), device)
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=most)}
    if shapes.sides is not None:
        least, largest, step = *shapes.sides, shapes.multiple
        dims.update(
            {
                axis: step * torch.export.Dim(name, min=-(-least // step), max=largest // step)
                for axis, name in ((2, "height"), (3, "width"))
            }
        )
    started = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(module, inputs, dynamic_shapes=(dims,))
    settings = {
        "device": build.device,
        "precision": build.precision,
        "torch": str(torch.__version__),
        "inductor": INDUCTOR_CONFIGS,
    }
    cached = COMPILE_CACHE / f"{_program_digest(program, settings)}.pt2"
    hit = cached.exists()
    if not hit:
        COMPILE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.partial.pt2")
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(partial), inductor_configs=dict(INDUCTOR_CONFIGS)
        )
        partial.replace(cached)
    shutil.copy(cached, target)
    seconds = time.perf_counter() - started
    compiled = torch._inductor.aoti_load_package(str(target))
    tolerance = 1e-3 if build.precision == "fp32" else 3e-2  # freezing and fusion reorder float sums
    for check in _check_inputs(part, most):
        check = _to(check, device)
        with torch.no_grad():
            assert_same_outputs(module(*check), compiled(*check), part.name, tolerance, "the .pt2 package")
    return {
        "format": "pt2",
        "file": target.name,
        "torch": str(torch.__version__),
        "device": build.device,
        "precision": build.precision,
        "compile": {
            "inductor": INDUCTOR_CONFIGS,
            "batch": [1, most],
            **({"sides": [*shapes.sides], "multiple": shapes.multiple} if shapes.sides else {}),
        },
        "compile_seconds": round(seconds, 1),
        "cached": hit,
    }


class Autocast(nn.Module):
    """``module`` run under autocast to ``dtype``; its floating outputs back in float32, so handlers see no
    difference."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, inputs: Tensor) -> Tensor:  # the .pt2 models take one batched tensor
        with torch.autocast(self.device_type, dtype=self.dtype):
            outputs = self.module(inputs)
        return outputs.float() if outputs.is_floating_point() else outputs


def autocast_to(module: nn.Module, build: Build) -> nn.Module:
    """``module`` computing in ``build.precision`` (itself for fp32)."""
    dtype = PRECISIONS[build.precision]
    return module if dtype is None else Autocast(module, build.device, dtype)


def _check_inputs(part: Part, most: int) -> list[tuple[Any, ...]]:
    """Batch 1 and the check batch; for whole-image models also a second picture size within bounds."""
    batches = sorted({1, min(part.check_batch, most)})
    checks = [part.example_inputs(batch) for batch in batches]
    if part.pt2 is not None and part.pt2.sides is not None:
        least, largest, step = *part.pt2.sides, part.pt2.multiple
        (photos,) = checks[-1]
        height = max(least, photos.shape[-2] // 2 + 3 * step) // step * step
        width = min(largest, photos.shape[-1] + 5 * step) // step * step
        checks.append((torch.nn.functional.interpolate(photos.float(), size=(height, width)).to(photos.dtype),))
    return checks


def _program_digest(program: torch.export.ExportedProgram, settings: dict[str, Any]) -> str:
    """What decides the compiled package: the graph, its weights and constants, the input bounds and the build
    settings."""
    digest = hashlib.sha256()
    digest.update(program.graph_module.code.encode())
    digest.update(repr(sorted(program.range_constraints.items(), key=str)).encode())
    digest.update(repr(sorted(settings.items())).encode())
    for name, value in sorted({**program.state_dict, **program.constants}.items()):
        digest.update(name.encode())
        if isinstance(value, Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _to(inputs: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    return tuple(value.to(device) if isinstance(value, Tensor) else value for value in inputs)


def assert_same_outputs(
    eager: Any, compiled: Any, name: str, tolerance: float = 1e-5, what: str = "TorchScript"
) -> None:
    """Relative L2 difference of every output tensor must stay under ``tolerance``."""
    eager_tensors, compiled_tensors = _tensors(eager), _tensors(compiled)
    if len(eager_tensors) != len(compiled_tensors):
        raise AssertionError(f"{name}: {what} returns {len(compiled_tensors)} tensors, eager {len(eager_tensors)}")
    for index, (a, b) in enumerate(zip(eager_tensors, compiled_tensors)):
        if a.shape != b.shape:
            raise AssertionError(f"{name}: {what} output {index} shape {tuple(b.shape)} != eager {tuple(a.shape)}")
        error = (a.double() - b.double()).norm() / a.double().norm().clamp(min=1e-12)
        if error > tolerance:
            raise AssertionError(f"{name}: {what} output {index} differs from eager by {error:.2e} (relative)")


def compile_part(part: Part, build: Build, batch_size: int, path: Path) -> dict[str, Any]:
    """Write ``part`` to ``path.pt2`` where the build and the part allow it, else TorchScript ``path.pt``; its
    record."""
    if build.format == "pt2" and part.pt2 is not None:
        return {"part": part.name, **to_pt2(part, build, batch_size, path.with_suffix(".pt2"))}
    if build.device != "cpu" or build.precision != "fp32":
        logger.info("%s: TorchScript, in fp32; it runs on any device", part.name)
    started = time.perf_counter()
    to_torchscript(part).save(str(path.with_suffix(".pt")))
    reason = "asked for" if build.format == "torchscript" else "torch.export cannot take this model"
    return {
        "part": part.name,
        "format": "torchscript",
        "file": f"{path.stem}.pt",
        "torch": str(torch.__version__),
        "how": part.torchscript,
        "why": reason,
        "compile_seconds": round(time.perf_counter() - started, 1),
    }


def copy_serving_tree(handler: str, target: Path) -> None:
    """``handlers/`` whole into ``target``, and the handler's own module with its packages when it lies outside it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(HANDLERS, target / HANDLERS.name, ignore=ignore)
    parts = handler.split(".")
    if parts[0] == HANDLERS.name:
        return
    module = REPO.joinpath(*parts).with_suffix(".py")
    if not module.is_file():
        raise FileNotFoundError(f"handler module {handler} is not a file of this repository ({module})")
    for depth in range(1, len(parts)):
        package = REPO.joinpath(*parts[:depth])
        (target / package.relative_to(REPO)).mkdir(parents=True, exist_ok=True)
        if (package / "__init__.py").is_file():
            shutil.copy(package / "__init__.py", target / package.relative_to(REPO) / "__init__.py")
    shutil.copy(module, target / module.relative_to(REPO))


def write_archive(package: Package, store: Path, build: Build = Build()) -> Path:
    """Export ``package`` into ``store/NAME.mar`` carrying the serving tree, its handler and model-config.yaml."""
    store.mkdir(parents=True, exist_ok=True)
    weights = {part.name: part.weights for part in package.parts}
    with tempfile.TemporaryDirectory(prefix=f"export-{package.name}-") as stage_dir:
        stage = Path(stage_dir)
        extra = stage / "extra"
        copy_serving_tree(package.handler, extra)
        # Keyed by file: the first part is the archive's serialized file (model.pt2 or model.pt),
        # the others ride in extra/ under their own names.
        compiled = {
            name: compile_part(part, build, package.serving.batch_size, (stage if index == 0 else extra) / name)
            for index, (name, part) in enumerate(zip(["model", *(p.name for p in package.parts[1:])], package.parts))
        }
        handler = {
            "module": package.handler,
            **package.handler_config,
            "torch_threads": package.serving.threads,
            "weights": weights,
            "compiled": compiled,
        }
        config = {**package.serving.config(), "handler": handler}
        (stage / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name",
            package.name,
            "--version",
            package.version,
            "--serialized-file",
            str(stage / compiled["model"]["file"]),
            "--handler",
            str(ENTRY),
            "--extra-files",
            str(extra),
            "--config-file",
            str(stage / "model-config.yaml"),
            "--export-path",
            str(store),
            "--force",
        ]
        # The archiver stages in $TMPDIR/NAME and deletes it: keep that inside our stage.
        env = {**os.environ, "TMPDIR": str(stage)}
        subprocess.run(command, check=True, env=env)
    archive = store / f"{package.name}.mar"
    logger.info(
        "wrote %s (weights: %s; compiled: %s)",
        archive,
        {name: w["source"] for name, w in weights.items()},
        {
            name: f"{c['format']} {c.get('device', '')} {c['compile_seconds']} s{' (cached)' if c.get('cached') else ''}"
            for name, c in compiled.items()
        },
    )
    return archive


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
