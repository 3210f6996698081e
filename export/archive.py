"""The archiving step every recipe shares: TorchScript, numeric check, model-config, ``.mar``."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import Tensor, nn

logger = logging.getLogger("export")

REPO = Path(__file__).resolve().parent.parent
HANDLERS = REPO / "handlers"
CORE_PACKAGE = "humanserve_core"


@dataclass(frozen=True)
class Serving:
    """TorchServe's per-model settings (model-config.yaml top level)."""

    batch_size: int
    max_batch_delay_ms: int
    workers: int = 1
    response_timeout_s: int = 120
    threads: int = 0  # torch threads per CPU worker (the handler sets them); 0: torch's default, one per core

    def config(self) -> dict[str, Any]:
        """The model-config.yaml keys TorchServe reads."""
        return {
            "minWorkers": self.workers,
            "maxWorkers": self.workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
        }


@dataclass(frozen=True)
class Part:
    """One TorchScript file of an archive and where its weights came from."""

    name: str
    module: nn.Module
    example_inputs: Callable[[int], tuple[Any, ...]]
    weights: dict[str, Any]
    torchscript: str = "trace"
    check_batch: int = 3  # batch size of the TorchScript-vs-eager check (traces use 2)


@dataclass(frozen=True)
class Package:
    """Everything one archive holds besides the shared handler core."""

    name: str
    parts: tuple[Part, ...]  # the first is the archive's serialized file, model.pt; others NAME.pt
    handler: str
    handler_modules: tuple[str, ...]  # model files the handler imports, besides the core
    handler_config: dict[str, Any]
    serving: Serving
    version: str = "1.0"


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


def assert_same_outputs(eager: Any, scripted: Any, name: str, tolerance: float = 1e-5) -> None:
    """Relative L2 difference of every output tensor must stay under ``tolerance``."""
    eager_tensors, scripted_tensors = _tensors(eager), _tensors(scripted)
    if len(eager_tensors) != len(scripted_tensors):
        raise AssertionError(f"{name}: TorchScript returns {len(scripted_tensors)} tensors, eager {len(eager_tensors)}")
    for index, (a, b) in enumerate(zip(eager_tensors, scripted_tensors)):
        if a.shape != b.shape:
            raise AssertionError(f"{name}: output {index} shape {tuple(b.shape)} != eager {tuple(a.shape)}")
        error = (a.double() - b.double()).norm() / a.double().norm().clamp(min=1e-12)
        if error > tolerance:
            raise AssertionError(f"{name}: TorchScript output {index} differs from eager by {error:.2e} (relative)")


def write_archive(package: Package, store: Path) -> Path:
    """Export ``package`` into ``store/NAME.mar`` carrying its handler, the handler core and model-config.yaml."""
    store.mkdir(parents=True, exist_ok=True)
    weights = {part.name: part.weights for part in package.parts}
    with tempfile.TemporaryDirectory(prefix=f"export-{package.name}-") as stage_dir:
        stage = Path(stage_dir)
        extra = stage / "extra"
        shutil.copytree(HANDLERS / CORE_PACKAGE, extra / CORE_PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
        for name in package.handler_modules:
            shutil.copy(HANDLERS / name, extra / name)
        for index, part in enumerate(package.parts):
            to_torchscript(part).save(str(stage / "model.pt" if index == 0 else extra / f"{part.name}.pt"))
        config = {**package.serving.config(), "handler": {**package.handler_config, "torch_threads": package.serving.threads, "weights": weights}}
        (stage / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            str(Path(sys.executable).parent / "torch-model-archiver"),
            "--model-name", package.name,
            "--version", package.version,
            "--serialized-file", str(stage / "model.pt"),
            "--handler", str(HANDLERS / package.handler),
            "--extra-files", str(extra),
            "--config-file", str(stage / "model-config.yaml"),
            "--export-path", str(store),
            "--force",
        ]  # fmt: skip
        # The archiver stages in $TMPDIR/NAME and deletes it: keep that inside our stage.
        env = {**os.environ, "TMPDIR": str(stage)}
        subprocess.run(command, check=True, env=env)
    archive = store / f"{package.name}.mar"
    logger.info("wrote %s (weights: %s)", archive, {name: w["source"] for name, w in weights.items()})
    return archive


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
