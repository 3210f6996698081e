"""Loading an archive's compiled models: TorchScript (``.pt``) or AOTInductor packages (``.pt2``), through one function.

The export records, per model file, how it was compiled (``compiled`` in the handler
config); a package runs only on the device type and torch version it was compiled for, so
those are checked before loading and a mismatch stops the worker's start with a message
that says what to do, rather than failing at the first request.
"""

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


class ModelLoadError(RuntimeError):
    """A compiled model that cannot run in this worker; the message says why and what to do."""


def compiled_record(records: Mapping[str, Mapping[str, Any]], part: str) -> Mapping[str, Any]:
    """How ``part`` was compiled; archives from before the record hold TorchScript ``PART.pt``."""
    return records.get(part, {"format": "torchscript", "file": f"{part}.pt"})


def load_model(model_dir: str, record: Mapping[str, Any], device: torch.device) -> Callable[..., Any]:
    """The model file ``record`` describes, ready to call on ``device`` (raises ``ModelLoadError``)."""
    path = os.path.join(model_dir, record["file"])
    if record["format"] == "torchscript":
        return torch.jit.load(path, map_location=device).eval()
    if record["format"] != "pt2":
        raise ModelLoadError(f"{record['file']}: unknown model format {record['format']!r} (known: pt2, torchscript)")
    check_package_fits(record, device)
    try:
        runner = torch._inductor.aoti_load_package(path, device_index=device.index if device.index is not None else -1)
    except Exception as error:
        raise ModelLoadError(
            f"{record['file']} (compiled for {record['device']} with torch {record['torch']}) failed to load on {device}: {error}"
        ) from error
    return CompiledPackage(runner)


def check_package_fits(record: Mapping[str, Any], device: torch.device) -> None:
    """Refuse a package compiled for another device type or another torch (its kernels and ABI are tied to both)."""
    name, built_for, built_with = record["file"], record["device"], record["torch"]
    if built_for != device.type:
        raise ModelLoadError(
            f"{name} is compiled for {built_for} but this worker runs on {device}: an AOTInductor package runs only on "
            f"the device type it was compiled for. Export the archive on a {device.type} machine "
            f"(python -m export MODEL --device {device.type}), or export it with --format torchscript."
        )
    if built_with != torch.__version__:
        raise ModelLoadError(
            f"{name} was compiled with torch {built_with} but this worker has torch {torch.__version__}: "
            f"re-export the archive with this torch (python -m export MODEL), or export it with --format torchscript."
        )


class CompiledPackage:
    """An AOTInductor package called like the module it was exported from."""

    def __init__(self, runner: Callable[..., Any]):
        self.runner = runner

    def __call__(self, *inputs: Any) -> Any:
        # The compiled kernels index their inputs as dense tensors: give them dense ones.
        return self.runner(*(value.contiguous() if isinstance(value, Tensor) else value for value in inputs))
