"""Keras HDF5 weights (the format Keras 2 saved whole models in) as a PyTorch module's state dict.

The file lists its layers in the model's order; each layer with weights fills the module's next
leaf module with parameters, which must be of the matching kind (``Conv2D`` an ``nn.Conv2d``,
``SeparableConv2D`` a ``SeparableConv2d``, ``BatchNormalization`` an ``nn.BatchNorm2d``), so an
architecture written in the file's layer order takes its weights without a table of names.
Kernels are transposed from Keras's ``[kh, kw, in, out]`` to PyTorch's ``[out, in, kh, kw]``.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor, nn


class SeparableConv2d(nn.Module):
    """Keras's ``SeparableConv2D`` (depth multiplier 1, no bias): a depthwise ``kernel x kernel`` convolution, then a
    pointwise one; ``padding`` as ``nn.Conv2d`` takes it."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, padding: int | str = "same"):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, kernel, padding=padding, groups=channels_in, bias=False)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def _conv_kernel(kernel: np.ndarray) -> Tensor:
    """``[kh, kw, in, out]`` to ``[out, in, kh, kw]``."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def _layer_tensors(kind: str, weights: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """One Keras layer's weights (by their short names: ``kernel``, ``gamma`` ...) as its PyTorch module's state."""
    if kind == "Conv2D":
        state = {"weight": _conv_kernel(weights["kernel"])}
        if "bias" in weights:
            state["bias"] = torch.from_numpy(weights["bias"])
        return state
    if kind == "SeparableConv2D":
        depthwise = weights["depthwise_kernel"]  # [kh, kw, in, multiplier]
        return {
            "depthwise.weight": torch.from_numpy(np.ascontiguousarray(depthwise.transpose(2, 3, 0, 1))),
            "pointwise.weight": _conv_kernel(weights["pointwise_kernel"]),
        }
    if kind == "BatchNormalization":
        return {
            "weight": torch.from_numpy(weights["gamma"]),
            "bias": torch.from_numpy(weights["beta"]),
            "running_mean": torch.from_numpy(weights["moving_mean"]),
            "running_var": torch.from_numpy(weights["moving_variance"]),
        }
    raise ValueError(f"Keras layers of kind {kind} are not read (only Conv2D, SeparableConv2D, BatchNormalization)")


MODULE_KINDS = {"Conv2D": nn.Conv2d, "SeparableConv2D": SeparableConv2d, "BatchNormalization": nn.BatchNorm2d}


def keras_layers(path: Path) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """The file's layers that have weights, in the model's order: ``(name, kind, {short weight name: array})``."""
    with h5py.File(path, "r") as file:
        kinds = {
            layer["config"]["name"]: layer["class_name"]
            for layer in json.loads(file.attrs["model_config"])["config"]["layers"]
        }
        group = file["model_weights"]
        layers = []
        for name in (n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]):
            names = [n.decode() if isinstance(n, bytes) else n for n in group[name].attrs["weight_names"]]
            if names:
                # "conv2d_1_1/kernel:0" -> "kernel"
                layers.append(
                    (name, kinds[name], {n.rsplit("/", 1)[1].split(":")[0]: group[name][n][()] for n in names})
                )
    return layers


def keras_state_dict(path: Path, module: nn.Module) -> dict[str, Tensor]:
    """The Keras file's weights as ``module``'s state dict: its layers with weights, in order, onto ``module``'s leaf
    modules with parameters, in registration order; a kind or count that differs raises ``ValueError``."""
    separable = [name for name, child in module.named_modules() if isinstance(child, SeparableConv2d)]
    targets = [
        (name, child)
        for name, child in module.named_modules()
        if isinstance(child, tuple(MODULE_KINDS.values())) and not any(name.startswith(f"{s}.") for s in separable)
    ]
    layers = keras_layers(path)
    if len(layers) != len(targets):
        raise ValueError(f"{path.name} has {len(layers)} layers with weights, {type(module).__name__} {len(targets)}")
    state = {}
    for (layer, kind, weights), (name, child) in zip(layers, targets):
        if not isinstance(child, MODULE_KINDS.get(kind, ())):
            raise ValueError(f"{path.name}'s {layer} ({kind}) does not fit {name} ({type(child).__name__})")
        state.update({f"{name}.{key}": value for key, value in _layer_tensors(kind, weights).items()})
    return state
