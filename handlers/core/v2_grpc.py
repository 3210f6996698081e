"""The Open Inference Protocol over gRPC: ``ModelInfer`` and ``ModelMetadata`` as the frontend agent hands them over.

The frontend agent serves ``inference.GRPCInferenceService`` on the gRPC inference port and passes a ``ModelInfer``
or ``ModelMetadata`` call to a worker of the model as its request message's bytes, the method named by the
``humanserve-v2-grpc`` header (runtime/frontend_agent/OpenInferenceFix.java). A ``ModelInferRequest`` is read
into the REST form, its JSON object and binary data, so that one reader (``v2.read_v2_request``) checks both; the
photos may come in ``raw_input_contents`` (tritonclient's way) or ``contents.bytes_contents``. The answer is the
``ModelInferResponse``'s bytes, every output in ``raw_output_contents`` as Triton answers. A failure answers its
status with its message alone, which the agent makes the call's gRPC status and description.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import DecodeError

from handlers.core.answers import Answer
from handlers.core.errors import RequestError
from handlers.core.open_inference_pb2 import (
    InferParameter,
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataResponse,
)
from handlers.core.v2 import (
    IMAGE_INPUT,
    OUTPUT_TENSORS,
    PLATFORM,
    Failed,
    V2Request,
    binary_data,
    error_message,
    header_value,
    length_prefixed,
    v2_outputs,
)

METHOD_HEADER = "humanserve-v2-grpc"  # the agent's METHOD_HEADER
INFER, METADATA = "ModelInfer", "ModelMetadata"
PROTOBUF = "application/x-protobuf"


def grpc_method(headers: Mapping[str, Any]) -> str | None:
    """Which of the service's calls a request is (``INFER`` or ``METADATA``); None for any other request."""
    method = header_value(headers, METHOD_HEADER)
    return method.decode() if isinstance(method, (bytes, bytearray)) else method


def read_grpc_request(body: Any) -> tuple[dict[str, Any], bytes]:
    """A ``ModelInferRequest``'s bytes in the REST form: its JSON object (the binary extension's, every input's data
    after it) and the binary data."""
    try:
        message = ModelInferRequest.FromString(bytes(body or b""))
    except DecodeError as error:
        raise RequestError(f"not a ModelInferRequest message: {error}", "InvalidRequest") from None
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise RequestError(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs: send one per input", "InvalidRequest"
        )
    inputs, blobs = [], []
    for n, tensor in enumerate(message.inputs):
        described = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        inputs.append(described)
        if raw:
            blobs.append(raw[n])
        elif tensor.datatype == "BYTES":
            blobs.append(length_prefixed(tensor.contents.bytes_contents))
        else:  # numbers are no photo: the reader refuses the datatype, or the input's name
            continue
        described["parameters"] = {**parameter_values(tensor.parameters), "binary_data_size": len(blobs[-1])}
    request: dict[str, Any] = {"inputs": inputs, "parameters": parameter_values(message.parameters)}
    if message.id:
        request["id"] = message.id
    if message.outputs:
        request["outputs"] = [{"name": output.name} for output in message.outputs]
    return request, b"".join(blobs)


def grpc_answer(request: V2Request, model: str, version: str, answers: Sequence[Answer]) -> Answer:
    """The ``ModelInferResponse`` of the request's outputs (``v2_outputs``, each raw), or its failed photo's status and
    message."""
    outputs = v2_outputs(request, answers)
    if isinstance(outputs, Failed):
        return grpc_error(outputs.answer, outputs.photo, outputs.photos)
    response = ModelInferResponse(model_name=model, model_version=version, id=request.id or "")
    for output in outputs:
        tensor = response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        for name, value in output.parameters.items():
            tensor.parameters[name].CopyFrom(parameter(value))
        response.raw_output_contents.append(binary_data(output))
    return Answer(response.SerializeToString(), PROTOBUF)


def grpc_error(answer: Answer, photo: int = 0, photos: int = 1) -> Answer:
    """A failed photo's status with its message as the body: the agent's gRPC status and description."""
    message, _ = error_message(answer, photo, photos)
    return Answer(message.encode(), "text/plain; charset=utf-8", answer.status)


def model_metadata(model: str, version: str, outputs: Sequence[str]) -> Answer:
    """The ``ModelMetadataResponse``: the ``image`` input and the outputs the model can answer (``v2.v2_metadata``'s,
    without the options: the message has no place for them)."""
    response = ModelMetadataResponse(name=model, versions=[version] if version else [], platform=PLATFORM)
    response.inputs.add(name=IMAGE_INPUT, datatype="BYTES", shape=[-1])
    for name in outputs:
        datatype, shape = OUTPUT_TENSORS[name]
        response.outputs.add(name=name, datatype=datatype, shape=shape)
    return Answer(response.SerializeToString(), PROTOBUF)


def parameter_values(parameters: Mapping[str, InferParameter]) -> dict[str, Any]:
    """A message's parameters as plain values (a parameter with no value set is None)."""
    values = {}
    for name, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        values[name] = getattr(value, kind) if kind else None
    return values


def parameter(value: Any) -> InferParameter:
    if isinstance(value, bool):
        return InferParameter(bool_param=value)
    if isinstance(value, int):
        return InferParameter(int64_param=value)
    if isinstance(value, float):
        return InferParameter(double_param=value)
    return InferParameter(string_param=str(value))
