"""TFLite models as PyTorch modules: a ``.tflite`` file's graph read into typed records, then run op by op with the
file's own weights, so that a model that ships only as TFLite (MediaPipe's) compiles to ``.pt2`` like every other.

Reading uses the ``tflite`` package's flatbuffer bindings. What is constant is folded once, at conversion: fp16
weights are dequantised (DEQUANTIZE), sparse ones densified (DENSIFY). TFLite is channels-last; the module takes and
returns the file's NHWC tensors but keeps every 4-D activation NCHW inside (the layout of torch's convolutions),
converting once at its edges; the ops that see the layout (convolutions, pooling, PAD, MEAN, CONCATENATION, RESHAPE,
DEPTH_TO_SPACE, constant operands of ADD and MUL) translate their axes. Dimension 0 is the batch everywhere: the
file's is 1, the module takes any, and an op that would mix the batch is refused at conversion.

Exactness: tests/test_tflite.py holds every op, alone and inside the MediaPipe graphs, to the TFLite interpreter
(ai-edge-litert) within 1e-4 relative in fp32, MediaPipe's custom transposed convolution also to a reference of its
own, and states the whole models' figures.
"""

import inspect
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from typing import Any

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.DimensionType import DimensionType
from tflite.Padding import Padding
from tflite.SparseIndexVector import SparseIndexVector
from tflite.TensorType import TensorType
from torch import Tensor, nn

CHANNELS_LAST_TO_FIRST = (0, 3, 1, 2)  # NHWC -> NCHW, also NHWC's axis of each NCHW axis
CHANNELS_FIRST_TO_LAST = (0, 2, 3, 1)  # NCHW -> NHWC, also NCHW's axis of each NHWC axis
# MediaPipe's transposed convolution with bias (mediapipe/util/tflite/operations/transpose_conv_bias.cc).
TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"


class TfLitePadding(IntEnum):
    """The C API's padding enum, which custom ops' options hold; not the schema's ``Padding`` (SAME 0, VALID 1)."""

    SAME = 1
    VALID = 2


_NUMPY_TYPES = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
    TensorType.INT64: np.int64,
}
_BUILTIN_NAMES = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
_OPTIONS_NAMES = {code: name for name, code in vars(BuiltinOptions).items() if not name.startswith("_")}
_INDEX_VECTORS = {
    SparseIndexVector.Int32Vector: tflite.Int32Vector,
    SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
    SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph as the file declares it (NHWC for 4-D), with its value when it is a constant."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None  # dense, fp16 weights already float32 once folded


@dataclass(frozen=True)
class Operator:
    """One operator: a builtin's name (``CONV_2D``) or a custom op's code, its tensors by index into
    ``Graph.tensors`` (-1 for an omitted optional input), its builtin options by snake_case schema name and a custom
    op's raw option bytes."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any]
    custom_options: bytes = b""


@dataclass(frozen=True)
class Graph:
    """A TFLite model's one subgraph, operators in execution order."""

    tensors: tuple[TensorInfo, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def constant(self, index: int) -> np.ndarray:
        """The value of constant tensor ``index``; ``ValueError`` when it is computed."""
        data = self.tensors[index].data
        if data is None:
            raise ValueError(f"tensor {self.tensors[index].name!r} must be a constant here, and it is computed")
        return data


@dataclass(frozen=True)
class SparseDimension:
    """One level of a sparse tensor's traversal: dense of ``size``, or compressed (CSR) by ``segments``/``indices``."""

    size: int
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None


def read_graph(model: bytes) -> Graph:
    """The graph of a ``.tflite`` file's bytes, with its constant DEQUANTIZE and DENSIFY operators folded away."""
    root = tflite.Model.GetRootAs(model, 0)
    if root.SubgraphsLength() != 1:
        raise ValueError(f"the model has {root.SubgraphsLength()} subgraphs; only single-graph models are supported")
    subgraph = root.Subgraphs(0)
    kinds = [_operator_kind(root.OperatorCodes(index)) for index in range(root.OperatorCodesLength())]
    tensors = [_read_tensor(root, subgraph.Tensors(index)) for index in range(subgraph.TensorsLength())]
    operators = []
    for index in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(index)
        operators.append(
            Operator(
                kind=kinds[operator.OpcodeIndex()],
                inputs=tuple(int(tensor) for tensor in operator.InputsAsNumpy()),
                outputs=tuple(int(tensor) for tensor in operator.OutputsAsNumpy()),
                options=_builtin_options(operator),
                custom_options=operator.CustomOptionsAsNumpy().tobytes() if operator.CustomOptionsLength() else b"",
            )
        )
    inputs = tuple(int(tensor) for tensor in subgraph.InputsAsNumpy())
    outputs = tuple(int(tensor) for tensor in subgraph.OutputsAsNumpy())
    return _fold_constants(Graph(tuple(tensors), tuple(operators), inputs, outputs))


def logits_graph(graph: Graph) -> Graph:
    """The graph with each output that a final LOGISTIC computes replaced by that LOGISTIC's input: log-odds, which
    a threshold compares as well as probabilities and which resize without saturating."""
    producers = {operator.outputs[0]: operator for operator in graph.operators}
    final = {index: producers[index] for index in graph.outputs if producers[index].kind == "LOGISTIC"}
    if not final:
        raise ValueError("no output of the graph is computed by a LOGISTIC operator")
    outputs = tuple(final[index].inputs[0] if index in final else index for index in graph.outputs)
    operators = tuple(operator for operator in graph.operators if operator not in final.values())
    return Graph(graph.tensors, operators, graph.inputs, outputs)


def densify(
    values: np.ndarray,
    shape: Sequence[int],
    traversal_order: Sequence[int],
    block_map: Sequence[int],
    levels: Sequence[SparseDimension],
) -> np.ndarray:
    """The dense tensor of ``shape`` that TFLite's sparse encoding describes (its FormatConverter's semantics).

    ``levels`` are the traversal's dimensions in order: ``traversal_order[level]`` names the dimension each one walks,
    ``0 .. rank - 1`` the tensor's own (counted in blocks when blocked) and ``rank + b`` the inside of the blocks of
    dimension ``block_map[b]``. A dense level of size s turns each position p into p * s + 0 .. s - 1; a compressed
    level turns p into segments[p] .. segments[p + 1] - 1, its coordinates read from ``indices``. The last level's
    positions index ``values``.
    """
    traversal_order = [int(dimension) for dimension in traversal_order]
    positions = np.zeros(1, dtype=np.int64)
    coordinates: list[np.ndarray] = []
    for level in levels:
        if level.segments is None:
            children = np.arange(level.size)
            coordinates = [np.repeat(coordinate, level.size) for coordinate in coordinates]
            coordinates.append(np.tile(children, len(positions)))
            positions = (positions[:, None] * level.size + children).ravel()
        else:
            starts = level.segments[positions].astype(np.int64)
            counts = level.segments[positions + 1].astype(np.int64) - starts
            offsets_in_segment = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            positions = np.repeat(starts, counts) + offsets_in_segment
            coordinates = [np.repeat(coordinate, counts) for coordinate in coordinates]
            coordinates.append(level.indices[positions].astype(np.int64))
    by_dimension = dict(zip(traversal_order, coordinates))
    rank = len(shape)
    index = [by_dimension[dimension] for dimension in range(rank)]
    for block, dimension in enumerate(block_map):
        block_size = levels[traversal_order.index(rank + block)].size
        index[dimension] = index[dimension] * block_size + by_dimension[rank + block]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index)] = values[positions]
    return dense


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) of one spatial axis: the output has ceil(size / stride) positions
    and the odd pixel of padding goes after."""
    extent = (kernel - 1) * dilation + 1
    output = -(-size // stride)
    total = max((output - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int, int, int],
    groups: int,
    activation: Callable[[Tensor], Tensor],
) -> Tensor:
    """CONV_2D and DEPTHWISE_CONV_2D: x ``[N, C, H, W]``, weight ``[O, C / groups, kh, kw]``, padding
    ``(left, right, top, bottom)``; the fused activation applied."""
    left, right, top, bottom = padding
    if left == right and top == bottom:  # torch pads symmetrically itself, without a padded copy
        return activation(F.conv2d(x, weight, bias, stride, (top, left), dilation, groups))
    return activation(F.conv2d(F.pad(x, padding), weight, bias, stride, 0, dilation, groups))


def transpose_conv2d_bias(
    x: Tensor, weight: Tensor, bias: Tensor, *, stride: tuple[int, int], crop: tuple[int, int, int, int]
) -> Tensor:
    """MediaPipe's Convolution2DTransposeBias: each input pixel scatters ``weight`` (``[C, O, kh, kw]``) from
    ``stride`` times its position, bias added everywhere, then the window ``crop`` = (top, left, height, width) of
    that full output kept (SAME padding crops ``padding // 2`` before, the rest after)."""
    top, left, height, width = crop
    full = F.conv_transpose2d(x, weight, bias, stride)
    return full[:, :, top : top + height, left : left + width]


def pool2d(
    x: Tensor,
    *,
    maximum: bool,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    activation: Callable[[Tensor], Tensor],
) -> Tensor:
    """MAX_POOL_2D (``maximum``) and AVERAGE_POOL_2D on ``[N, C, H, W]``, padding ``(left, right, top, bottom)``:
    padded pixels never win a maximum and never count in an average, as in TFLite."""
    if maximum:
        return activation(F.max_pool2d(F.pad(x, padding, value=-torch.inf), kernel, stride))
    if not any(padding) and kernel == tuple(x.shape[-2:]):
        # A global average: torch's mean sums pairwise, where avg_pool2d's running sum over, say, 128 x 128 pixels
        # loses 1e-5 relative, which the selfie segmenter's squeeze-and-excitation gates amplify ten-fold.
        return activation(x.mean((2, 3), keepdim=True))
    if not any(padding):
        return activation(F.avg_pool2d(x, kernel, stride))
    window_sums = F.avg_pool2d(F.pad(x, padding), kernel, stride, divisor_override=1)
    window_counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), padding), kernel, stride, divisor_override=1)
    return activation(window_sums / window_counts)


def depth_to_space(x: Tensor, block: int) -> Tensor:
    """DEPTH_TO_SPACE on ``[N, C, H, W]`` -> ``[N, C / block², H * block, W * block]`` in TensorFlow's channel order
    (row offset, column offset, channel), which is not ``pixel_shuffle``'s (channel, row offset, column offset)."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, block, block, channels // block**2, height, width)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(batch, channels // block**2, height * block, width * block)


def resize_bilinear(x: Tensor, *, size: tuple[int, int], align_corners: bool) -> Tensor:
    """RESIZE_BILINEAR on ``[N, C, H, W]``: torch's bilinear without aligned corners samples at half-pixel centres,
    as TFLite's ``half_pixel_centers`` does (both clamp below at pixel 0)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def reshape(x: Tensor, *, shape: tuple[int, ...], channels_last_in: bool, channels_first_out: bool) -> Tensor:
    """RESHAPE in the file's NHWC element order, ``shape`` after the batch: a channels-first 4-D input is read
    channels-last, a 4-D result stored channels-first."""
    if channels_last_in:
        x = x.permute(CHANNELS_FIRST_TO_LAST)
    x = x.reshape(x.shape[0], *shape)
    return x.permute(CHANNELS_LAST_TO_FIRST) if channels_first_out else x


def concatenate(*xs: Tensor, dim: int, activation: Callable[[Tensor], Tensor]) -> Tensor:
    """CONCATENATION along ``dim`` (already in the module's layout); the fused activation applied."""
    return activation(torch.cat(xs, dim))


def binary(
    a: Tensor, b: Tensor, *, operation: Callable[[Tensor, Tensor], Tensor], activation: Callable[[Tensor], Tensor]
) -> Tensor:
    """ADD and MUL, broadcast; the fused activation applied."""
    return activation(operation(a, b))


def mean(x: Tensor, *, dims: tuple[int, ...], keepdim: bool, channels_last_in: bool) -> Tensor:
    """MEAN over ``dims``: kept dimensions stay in the module's layout; a channels-first 4-D input that loses its
    dimensions is read channels-last first, so the remaining ones come in the file's order."""
    if channels_last_in:
        x = x.permute(CHANNELS_FIRST_TO_LAST)
    return torch.mean(x, dims, keepdim)


def _unchanged(x: Tensor) -> Tensor:
    return x


FUSED_ACTIVATIONS: dict[int, Callable[[Tensor], Tensor]] = {
    ActivationFunctionType.NONE: _unchanged,
    ActivationFunctionType.RELU: F.relu,
    ActivationFunctionType.RELU_N1_TO_1: partial(torch.clamp, min=-1.0, max=1.0),
    ActivationFunctionType.RELU6: F.relu6,
}  # TFLite's float kernels leave TANH and SIGN_BIT unapplied, and converters never fuse them: refused
ELEMENTWISE: dict[str, Callable[[Tensor], Tensor]] = {
    "RELU": F.relu,
    "LOGISTIC": torch.sigmoid,
    "HARD_SWISH": F.hardswish,  # x * relu6(x + 3) / 6, TFLite's formula
}
BINARY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ADD": torch.add, "MUL": torch.mul}


def channels_first_activations(graph: Graph) -> frozenset[int]:
    """The tensors the module keeps NCHW: every computed 4-D one."""
    return frozenset(
        index for index, tensor in enumerate(graph.tensors) if tensor.data is None and len(tensor.shape) == 4
    )


class Step(nn.Module):
    """One operator: ``function`` of its operands, each an activation (a tensor index of the graph) or a constant,
    which the step holds as a buffer (``operand<position>``) in the layout ``function`` wants."""

    def __init__(self, kind: str, function: Callable[..., Tensor], operands: Sequence[int | Tensor], output: int):
        super().__init__()
        self.kind = kind
        self.function = function
        self.operands: list[int | str] = []
        for position, operand in enumerate(operands):
            if isinstance(operand, Tensor):
                self.register_buffer(f"operand{position}", operand)
                self.operands.append(f"operand{position}")
            else:
                self.operands.append(operand)
        self.output = output

    def forward(self, values: dict[int, Tensor]) -> Tensor:
        return self.function(
            *(values[operand] if isinstance(operand, int) else getattr(self, operand) for operand in self.operands)
        )

    def extra_repr(self) -> str:
        return f"{self.kind} -> tensor {self.output}"


class TFLiteModule(nn.Module):
    """A TFLite graph run by torch: ``forward`` takes the graph's inputs and returns a tuple of its outputs, in the
    file's order and layout (NHWC for 4-D), for any batch size; weights are buffers in torch's layout."""

    def __init__(self, graph: Graph):
        super().__init__()
        for index in graph.inputs:
            if graph.tensors[index].dtype != np.float32:
                raise NotImplementedError(
                    f"input {graph.tensors[index].name!r} is {graph.tensors[index].dtype}: only float32 models are "
                    "supported"
                )
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self.channels_first = channels_first_activations(graph)
        self.steps = nn.ModuleList(_step(graph, operator) for operator in graph.operators)

    @classmethod
    def from_bytes(cls, model: bytes) -> "TFLiteModule":
        return cls(read_graph(model))

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        values = self.tensors(*inputs)
        return tuple(self.file_layout(index, values[index]) for index in self.outputs)

    def tensors(self, *inputs: Tensor) -> dict[int, Tensor]:
        """Every tensor of the graph that the inputs (file layout) compute, by index, in the module's layout."""
        values = {index: self.module_layout(index, x) for index, x in zip(self.inputs, inputs, strict=True)}
        for step in self.steps:
            values[step.output] = step(values)
        return values

    def module_layout(self, index: int, value: Tensor) -> Tensor:
        """Tensor ``index`` in the file's layout -> the module's (NHWC -> NCHW for computed 4-D ones)."""
        return value.permute(CHANNELS_LAST_TO_FIRST) if index in self.channels_first else value

    def file_layout(self, index: int, value: Tensor) -> Tensor:
        """Tensor ``index`` in the module's layout -> the file's."""
        return value.permute(CHANNELS_FIRST_TO_LAST) if index in self.channels_first else value


def _step(graph: Graph, operator: Operator) -> Step:
    build = _STEP_BUILDERS.get(operator.kind)
    if build is None:
        supported = sorted(_STEP_BUILDERS)
        raise NotImplementedError(
            f"TFLite op {operator.kind} (output {graph.tensors[operator.outputs[0]].name!r}) is not supported; "
            f"supported: {', '.join(supported)} (DEQUANTIZE and DENSIFY of constants are folded)"
        )
    return build(graph, operator)


def _activation(operator: Operator) -> Callable[[Tensor], Tensor]:
    code = operator.options.get("fused_activation_function", ActivationFunctionType.NONE)
    if code not in FUSED_ACTIVATIONS:
        raise NotImplementedError(f"{operator.kind}'s fused activation {code} is not supported")
    return FUSED_ACTIVATIONS[code]


def _spatial_padding(
    graph: Graph, operator: Operator, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a windowed op on its file-declared NHWC input."""
    if operator.options["padding"] == Padding.VALID:
        return 0, 0, 0, 0
    _, height, width, _ = graph.tensors[operator.inputs[0]].shape
    top, bottom = tf_same_padding(height, kernel[0], stride[0], dilation[0])
    left, right = tf_same_padding(width, kernel[1], stride[1], dilation[1])
    return left, right, top, bottom


def _elementwise(graph: Graph, operator: Operator) -> Step:
    return Step(operator.kind, ELEMENTWISE[operator.kind], operator.inputs[:1], operator.outputs[0])


def _convolution(graph: Graph, operator: Operator) -> Step:
    options = operator.options
    weight = graph.constant(operator.inputs[1])  # CONV_2D: [O, kh, kw, C]; DEPTHWISE_CONV_2D: [1, kh, kw, C * m]
    if operator.kind == "CONV_2D":
        torch_weight = weight.transpose(0, 3, 1, 2)
        groups = graph.tensors[operator.inputs[0]].shape[3] // weight.shape[3]
    else:  # channel c's m outputs are c * m .. c * m + m - 1 in both layouts
        torch_weight = weight.transpose(3, 0, 1, 2)
        groups = graph.tensors[operator.inputs[0]].shape[3]
    stride = (options["stride_h"], options["stride_w"])
    dilation = (options["dilation_h_factor"], options["dilation_w_factor"])
    function = partial(
        conv2d,
        stride=stride,
        dilation=dilation,
        padding=_spatial_padding(graph, operator, weight.shape[1:3], stride, dilation),
        groups=groups,
        activation=_activation(operator),
    )
    # TFLite's float kernels require the bias
    bias = graph.constant(operator.inputs[2])
    operands = [operator.inputs[0], torch.from_numpy(np.ascontiguousarray(torch_weight)), torch.from_numpy(bias)]
    return Step(operator.kind, function, operands, operator.outputs[0])


def _transpose_conv_bias(graph: Graph, operator: Operator) -> Step:
    # custom_initial_data is TfLiteTransposeConvParams: int32 padding, stride_width, stride_height, little-endian.
    padding, stride_width, stride_height = struct.unpack("<3i", operator.custom_options[:12])
    weight = graph.constant(operator.inputs[1])  # [O, kh, kw, C]
    _, height, width, _ = graph.tensors[operator.inputs[0]].shape
    _, kernel_height, kernel_width, _ = weight.shape
    crop_height, crop_width = 0, 0
    if padding == TfLitePadding.SAME:
        crop_height = max(0, kernel_height - (height - 1) % stride_height - 1)
        crop_width = max(0, kernel_width - (width - 1) % stride_width - 1)
    crop = (
        crop_height // 2,
        crop_width // 2,
        stride_height * (height - 1) + kernel_height - crop_height,
        stride_width * (width - 1) + kernel_width - crop_width,
    )
    function = partial(transpose_conv2d_bias, stride=(stride_height, stride_width), crop=crop)
    operands = [
        operator.inputs[0],
        torch.from_numpy(np.ascontiguousarray(weight.transpose(3, 0, 1, 2))),
        torch.from_numpy(graph.constant(operator.inputs[2])),
    ]
    return Step(operator.kind, function, operands, operator.outputs[0])


def _pool(graph: Graph, operator: Operator) -> Step:
    options = operator.options
    kernel = (options["filter_height"], options["filter_width"])
    stride = (options["stride_h"], options["stride_w"])
    function = partial(
        pool2d,
        maximum=operator.kind == "MAX_POOL_2D",
        kernel=kernel,
        stride=stride,
        padding=_spatial_padding(graph, operator, kernel, stride, (1, 1)),
        activation=_activation(operator),
    )
    return Step(operator.kind, function, operator.inputs[:1], operator.outputs[0])


def _binary(graph: Graph, operator: Operator) -> Step:
    output_rank = len(graph.tensors[operator.outputs[0]].shape)
    operands: list[int | Tensor] = []
    for index in operator.inputs:
        tensor = graph.tensors[index]
        if tensor.data is not None and output_rank == 4:
            # NHWC broadcasting aligns trailing axes: made 4-D, then channels-first, it broadcasts alike
            data = tensor.data.reshape((1,) * (4 - tensor.data.ndim) + tensor.data.shape)
            operands.append(torch.from_numpy(np.ascontiguousarray(data.transpose(CHANNELS_LAST_TO_FIRST))))
        elif tensor.data is not None:
            operands.append(torch.from_numpy(tensor.data))
        elif len(tensor.shape) != output_rank and output_rank == 4:
            raise NotImplementedError(f"{operator.kind} broadcasting a computed {tensor.shape} to 4-D is not supported")
        else:
            operands.append(index)
    function = partial(binary, operation=BINARY[operator.kind], activation=_activation(operator))
    return Step(operator.kind, function, operands, operator.outputs[0])


def _file_axis(graph: Graph, operator: Operator, axis: int) -> int:
    """``axis`` of the operator's first input, made non-negative; the batch may not be one."""
    axis %= len(graph.tensors[operator.inputs[0]].shape)
    if axis == 0:
        raise NotImplementedError(f"{operator.kind} over the batch dimension cannot be batched")
    return axis


def _concatenation(graph: Graph, operator: Operator) -> Step:
    dim = _file_axis(graph, operator, operator.options["axis"])
    if operator.inputs[0] in channels_first_activations(graph):
        dim = CHANNELS_FIRST_TO_LAST[dim]
    function = partial(concatenate, dim=dim, activation=_activation(operator))
    return Step(operator.kind, function, operator.inputs, operator.outputs[0])


def _mean(graph: Graph, operator: Operator) -> Step:
    axes = tuple(_file_axis(graph, operator, int(axis)) for axis in np.atleast_1d(graph.constant(operator.inputs[1])))
    keepdim = bool(operator.options["keep_dims"])
    channels_first = operator.inputs[0] in channels_first_activations(graph)
    dims = tuple(CHANNELS_FIRST_TO_LAST[axis] for axis in axes) if channels_first and keepdim else axes
    function = partial(mean, dims=dims, keepdim=keepdim, channels_last_in=channels_first and not keepdim)
    return Step(operator.kind, function, operator.inputs[:1], operator.outputs[0])


def _pad(graph: Graph, operator: Operator) -> Step:
    pads = graph.constant(operator.inputs[1]).reshape(-1, 2)  # (before, after) per NHWC axis
    if pads[0].any():
        raise NotImplementedError("PAD of the batch dimension cannot be batched")
    if len(pads) == 4:
        pads = pads[list(CHANNELS_LAST_TO_FIRST)]
    torch_pads = tuple(int(amount) for axis in reversed(pads[1:]) for amount in axis)  # F.pad starts at the last
    return Step(operator.kind, partial(F.pad, pad=torch_pads), operator.inputs[:1], operator.outputs[0])


def _reshape(graph: Graph, operator: Operator) -> Step:
    source, target = graph.tensors[operator.inputs[0]].shape, graph.tensors[operator.outputs[0]].shape
    if source[0] != target[0]:
        raise NotImplementedError(f"RESHAPE {source} -> {target} mixes the batch dimension and cannot be batched")
    function = partial(
        reshape,
        shape=target[1:],
        channels_last_in=operator.inputs[0] in channels_first_activations(graph),
        channels_first_out=len(target) == 4,
    )
    return Step(operator.kind, function, operator.inputs[:1], operator.outputs[0])


def _depth_to_space(graph: Graph, operator: Operator) -> Step:
    function = partial(depth_to_space, block=operator.options["block_size"])
    return Step(operator.kind, function, operator.inputs[:1], operator.outputs[0])


def _resize_bilinear(graph: Graph, operator: Operator) -> Step:
    align_corners, half_pixel = operator.options["align_corners"], operator.options["half_pixel_centers"]
    if align_corners == half_pixel:
        raise NotImplementedError(
            f"RESIZE_BILINEAR with align_corners={align_corners}, half_pixel_centers={half_pixel} is not supported "
            "(torch samples either at aligned corners or at half-pixel centres)"
        )
    height, width = (int(size) for size in graph.constant(operator.inputs[1]))
    function = partial(resize_bilinear, size=(height, width), align_corners=align_corners)
    return Step(operator.kind, function, operator.inputs[:1], operator.outputs[0])


_STEP_BUILDERS: dict[str, Callable[[Graph, Operator], Step]] = {
    **dict.fromkeys(ELEMENTWISE, _elementwise),
    "CONV_2D": _convolution,
    "DEPTHWISE_CONV_2D": _convolution,
    TRANSPOSE_CONV_BIAS: _transpose_conv_bias,
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "ADD": _binary,
    "MUL": _binary,
    "CONCATENATION": _concatenation,
    "MEAN": _mean,
    "PAD": _pad,
    "RESHAPE": _reshape,
    "DEPTH_TO_SPACE": _depth_to_space,
    "RESIZE_BILINEAR": _resize_bilinear,
}


def _operator_kind(code: tflite.OperatorCode) -> str:
    # Builtin codes past 127 live in builtin_code alone; older files fill deprecated_builtin_code alone.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == BuiltinOperator.CUSTOM:
        return code.CustomCode().decode()
    return _BUILTIN_NAMES.get(builtin, f"builtin {builtin}")


def _read_tensor(root: tflite.Model, tensor: tflite.Tensor) -> TensorInfo:
    name = tensor.Name().decode()
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength():
        raise NotImplementedError(f"tensor {name!r} is quantised (scales, zero points): only fp16 weights are folded")
    if tensor.Type() not in _NUMPY_TYPES:
        raise NotImplementedError(f"tensor {name!r} has TFLite type {tensor.Type()}, which is not supported")
    dtype = np.dtype(_NUMPY_TYPES[tensor.Type()])
    shape = tuple(int(size) for size in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    buffer = root.Buffers(tensor.Buffer())
    if buffer.Offset() > 1:
        raise NotImplementedError(f"tensor {name!r} keeps its data outside the flatbuffer, which is not supported")
    if not buffer.DataLength():
        return TensorInfo(name, shape, dtype)
    values = buffer.DataAsNumpy().view(dtype)
    sparsity = tensor.Sparsity()
    if sparsity is None:
        return TensorInfo(name, shape, dtype, values.reshape(shape).copy())
    levels = [_sparse_dimension(sparsity.DimMetadata(level)) for level in range(sparsity.DimMetadataLength())]
    block_map = sparsity.BlockMapAsNumpy() if sparsity.BlockMapLength() else ()
    return TensorInfo(name, shape, dtype, densify(values, shape, sparsity.TraversalOrderAsNumpy(), block_map, levels))


def _sparse_dimension(metadata: tflite.DimensionMetadata) -> SparseDimension:
    if metadata.Format() == DimensionType.DENSE:
        return SparseDimension(metadata.DenseSize())
    return SparseDimension(
        0,
        _index_vector(metadata.ArraySegmentsType(), metadata.ArraySegments()),
        _index_vector(metadata.ArrayIndicesType(), metadata.ArrayIndices()),
    )


def _index_vector(kind: int, table: Any) -> np.ndarray:
    vector = _INDEX_VECTORS[kind]()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy()


def _builtin_options(operator: tflite.Operator) -> dict[str, Any]:
    """An operator's builtin options table as {snake_case field: value}, read through the binding's accessors
    (scalars, and vectors as arrays)."""
    kind = operator.BuiltinOptionsType()
    if kind == BuiltinOptions.NONE:
        return {}
    name = _OPTIONS_NAMES[kind]
    options = getattr(tflite, name)()
    table = operator.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    accessors = [attribute for attribute, member in vars(type(options)).items() if inspect.isfunction(member)]
    fields = {}
    for accessor in accessors:
        if accessor == "Init" or accessor.endswith(("IsNone", "Length", "AsNumpy")):
            continue
        if hasattr(options, f"{accessor}AsNumpy"):
            fields[_snake_case(accessor)] = getattr(options, f"{accessor}AsNumpy")()
        else:
            fields[_snake_case(accessor)] = getattr(options, accessor)()
    return fields


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _fold_constants(graph: Graph) -> Graph:
    """DEQUANTIZE of fp16 constants and DENSIFY (of constants densified when read) become constants themselves."""
    tensors = list(graph.tensors)
    operators = []
    for operator in graph.operators:
        source = tensors[operator.inputs[0]] if operator.inputs else None
        if operator.kind in ("DEQUANTIZE", "DENSIFY") and source is not None and source.data is not None:
            output = tensors[operator.outputs[0]]
            tensors[operator.outputs[0]] = TensorInfo(
                output.name, output.shape, output.dtype, source.data.astype(output.dtype)
            )
        elif operator.kind in ("DEQUANTIZE", "DENSIFY"):
            raise NotImplementedError(f"{operator.kind} of the computed tensor {source.name!r} is not supported")
        else:
            operators.append(operator)
    return Graph(tuple(tensors), tuple(operators), graph.inputs, graph.outputs)
