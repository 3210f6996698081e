"""The Open Inference Protocol (KServe v2) over REST: one infer request's photos and options in, its answers out.

TorchServe 0.12 hands a ``POST /v2/models/{name}/infer`` to the handler as the client sent it: the
JSON object (parsed when it came as ``application/json``, else its bytes), followed by the tensors'
bytes when the client used the binary data extension (the ``Inference-Header-Content-Length``
header then gives the JSON's length; tritonclient sends BYTES inputs so by default). Its answer
goes back as the handler writes it.

A request carries its photos as one ``BYTES`` input named ``image`` (or its only input): base64
strings in JSON, the photos' bytes themselves with the binary extension; ``shape [N]`` is N
photos, answered together in one batch (at most the model's batch size). Options are request or
input ``parameters``. The answer has a ``BYTES`` output of ``shape [N]``: ``answer``, each
element the photo's JSON answer, or ``picture``, each element the encoded picture (base64 in JSON,
with the output's ``content_type``; bytes with the binary extension, asked for by
``binary_data_output`` or an output's ``binary_data``); JSON answers add typed tensors
(``typed_outputs``: people's boxes, scores and keypoints, faces' landmarks, masks as RLE). A
request that names ``outputs`` gets those. A photo that cannot be answered fails its
request with that photo's status and the v2 error body, ``{"error": "..."}``; other requests of
the batch are answered.
"""

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from handlers.core.answers import Answer, error_answer
from handlers.core.errors import RequestError
from handlers.core.inputs import decode_base64, starts_like_json

JSON_LENGTH_HEADER = "Inference-Header-Content-Length"  # the binary data extension's header
IMAGE_INPUT = "image"
# Parameters of the protocol or its extensions (tritonclient sends them), not model options.
PROTOCOL_PARAMETERS = frozenset(
    {
        "binary_data",
        "binary_data_output",
        "binary_data_size",
        "content_type",
        "priority",
        "timeout",
        "classification",
        "shared_memory_region",
        "shared_memory_byte_size",
        "shared_memory_offset",
    }
)
# What every output can be, as model metadata describes it (-1: any size); each family names those it answers.
OUTPUT_TENSORS = {
    "answer": ("BYTES", [-1]),
    "picture": ("BYTES", [-1]),
    "people": ("INT32", [-1]),
    "faces": ("INT32", [-1]),
    "boxes": ("FP32", [-1, 4]),
    "scores": ("FP32", [-1]),
    "keypoints": ("FP32", [-1, -1, 3]),
    "landmarks": ("FP32", [-1, 5, 2]),
    "views": ("BYTES", [-1]),
    "masks": ("BYTES", [-1]),
    "mask_sizes": ("INT32", [-1, 2]),
}
PLATFORM = "pytorch_torchserve"
# The header by which the frontend agent marks a REST model metadata request (GET /v2/models/{name}).
REST_METHOD_HEADER = "humanserve-v2-rest"
SEQUENCE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})
ELEMENT_LENGTH = struct.Struct("<I")  # a BYTES element's length, before it, in the binary extension


@dataclass(frozen=True)
class V2Request:
    """One infer request: its ``id``, its photos' bytes, the options for all of them, and how outputs go back."""

    id: str | None
    images: list[bytes]
    options: dict[str, Any]
    binary_output: bool
    outputs: tuple[str, ...] | None = None  # the outputs asked for by name (None: all)
    sequence: bool = False  # it names a sequence (sequence_id, sequence_start or sequence_end): a video's frame
    sequence_end: bool = False  # the sequence's last frame


def split_body(row: Mapping[str, Any], headers: Mapping[str, Any]) -> tuple[Any, bytes]:
    """The request's body, a JSON object parsed here where TorchServe left it as bytes (sent without a content type,
    or with the binary extension), and the binary data after it."""
    body = row.get("body")
    if isinstance(body, (bytes, bytearray)):
        if header_value(headers, JSON_LENGTH_HEADER) is not None:
            return _split_binary(bytes(body), headers)
        if starts_like_json(body):
            try:
                return json.loads(bytes(body).decode("utf-8")), b""
            except (UnicodeDecodeError, ValueError, RecursionError):
                pass  # not JSON after all: read_request says what is wrong with it
    return body, b""


def is_v2_request(body: Any, headers: Mapping[str, Any]) -> bool:
    """Whether a request (its body as ``split_body`` gives it) is a v2 infer request: a JSON object with ``inputs``,
    or one sent with the binary extension."""
    return (isinstance(body, dict) and "inputs" in body) or header_value(headers, JSON_LENGTH_HEADER) is not None


def read_v2_request(body: Any, binary: bytes, most_images: int) -> V2Request:
    """Read a v2 infer request (its JSON object and the binary data after it): its photos, options and output form;
    ``RequestError`` saying what is wrong otherwise."""
    if not isinstance(body, dict):
        raise RequestError("a v2 infer request is a JSON object with 'inputs'", "InvalidRequest")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise RequestError("'inputs' must be a list of tensors, with one BYTES input named 'image'", "NoImage")
    named = [i for i in inputs if i.get("name") == IMAGE_INPUT] or (inputs if len(inputs) == 1 else [])
    if len(named) != 1:
        names = ", ".join(repr(i.get("name")) for i in inputs)
        raise RequestError(
            f"send the photos as one BYTES input named 'image' (inputs given: {names}); options go in 'parameters'",
            "NoImage",
        )
    (tensor,) = named
    others = [i.get("name") for i in inputs if i is not tensor]
    if others:
        raise RequestError(f"unknown input {others[0]!r}: options go in the request's 'parameters'", "InvalidRequest")
    images = _image_elements(tensor, _input_blobs(inputs, binary))
    if len(images) > most_images:
        raise RequestError(
            f"{len(images)} photos in one request; this model answers at most {most_images} together (its batch size)",
            "TooManyImages",
        )
    parameters = body.get("parameters")
    options = {**_options(parameters, "the request"), **_options(tensor.get("parameters"), "input 'image'")}
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string", "InvalidRequest")
    named = SEQUENCE_PARAMETERS & parameters.keys() if isinstance(parameters, dict) else set()
    sequence_end = parameters.get("sequence_end", False) if named else False
    if not isinstance(sequence_end, bool):
        raise RequestError(f"'sequence_end' must be true or false, not {sequence_end!r}", "InvalidOption")
    return V2Request(
        request_id, images, options, _binary_output(body), _requested_outputs(body), bool(named), sequence_end
    )


def in_sequence(request: V2Request, sequence_id: str | None) -> V2Request:
    """The request as its model takes it: a sequence model's frame (``sequence_id``: the frontend put it in one) ends
    its sequence with ``sequence_end``, or at once when the request named no sequence (one photo, one answer, no
    sequence left open); ``RequestError`` for a sequence sent to another model, or several frames in one request."""
    if sequence_id is None:
        if request.sequence:
            raise RequestError(
                "this model answers photos one by one: sequence_id, sequence_start and sequence_end are for sequence"
                " models (pose_tracker)",
                "InvalidOption",
            )
        return request
    if len(request.images) != 1:
        raise RequestError(
            f"{len(request.images)} photos in one request to a sequence model: send a video's frames one per request,"
            " in order, with the same sequence_id",
            "TooManyImages",
        )
    end = (request.sequence_end or bool(request.options.get("end"))) if request.sequence else True
    return replace(request, options={**request.options, "end": end})


@dataclass(frozen=True)
class Output:
    """One output tensor: numbers (``values`` an array of ``shape``) or ``BYTES`` elements."""

    name: str
    datatype: str  # BYTES, FP32 or INT32
    values: np.ndarray | list[bytes]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return [len(self.values)] if isinstance(self.values, list) else list(self.values.shape)


def v2_answer(request: V2Request, model: str, version: str, answers: Sequence[Answer]) -> Answer:
    """The request's answer over REST: its photos' answers as ``v2_outputs`` gives them, in JSON or with the binary
    extension, or the first failed photo's error."""
    outputs = v2_outputs(request, answers)
    if isinstance(outputs, Failed):
        return v2_error(outputs.answer, outputs.photo, outputs.photos)
    header: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        header["id"] = request.id
    described, blobs = [], []
    for output in outputs:
        tensor = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        parameters = dict(output.parameters)
        if request.binary_output:
            blobs.append(binary_data(output))
            parameters["binary_data_size"] = len(blobs[-1])
        else:
            tensor["data"] = _json_data(output, parameters)
        described.append({**tensor, "parameters": parameters} if parameters else tensor)
    header["outputs"] = described
    text = json.dumps(header, separators=(",", ":")).encode()
    if request.binary_output:
        return Answer(text + b"".join(blobs), "application/octet-stream", headers={JSON_LENGTH_HEADER: str(len(text))})
    return Answer(text, "application/json")


@dataclass(frozen=True)
class Failed:
    """Why a request has no outputs: the answer of its photo ``photo`` (of ``photos``), an error."""

    answer: Answer
    photo: int = 0
    photos: int = 1


def v2_outputs(request: V2Request, answers: Sequence[Answer]) -> list[Output] | Failed:
    """The request's outputs: its photos' answers as one ``BYTES`` output (and, for JSON answers, their typed tensors;
    those the request names, where it names outputs), or its first failed photo."""
    failed = next((n for n, answer in enumerate(answers) if answer.status != 200), None)
    if failed is not None:
        return Failed(answers[failed], failed, len(answers))
    content_type = answers[0].content_type
    bodies = [answer.body for answer in answers]
    if content_type.startswith("application/json"):
        outputs = [Output("answer", "BYTES", bodies, {"content_type": content_type})]
        outputs += typed_outputs([json.loads(body) for body in bodies])
    else:
        outputs = [Output("picture", "BYTES", bodies, {"content_type": content_type})]
    if request.outputs is None:
        return outputs
    known = {output.name: output for output in outputs}
    unknown = [name for name in request.outputs if name not in known]
    if unknown:
        refused = RequestError(f"no output {unknown[0]!r} in this model's answers; they have: {', '.join(known)}")
        return Failed(error_answer(refused))
    return [known[name] for name in request.outputs]


def is_metadata_request(headers: Mapping[str, Any]) -> bool:
    """Whether a request is the frontend agent's REST model metadata request."""
    return header_value(headers, REST_METHOD_HEADER) is not None


def v2_metadata(
    model: str,
    version: str,
    outputs: Sequence[str],
    options: Mapping[str, Any],
    description: str,
    weights: Mapping[str, Any],
) -> Answer:
    """``GET /v2/models/{name}``'s answer: the ``image`` input, the outputs the model can answer, and (beside the
    protocol's fields) the options a request may send as parameters, what the model does and where each part's
    weights came from (``pretrained`` false: random, its answers meaningless)."""
    metadata = {
        "name": model,
        "versions": [version] if version else [],
        "platform": PLATFORM,
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": name, "datatype": OUTPUT_TENSORS[name][0], "shape": OUTPUT_TENSORS[name][1]} for name in outputs
        ],
        "parameters": dict(options),
        "description": description,
        "weights": dict(weights),
    }
    return Answer(json.dumps(metadata).encode(), "application/json")


def typed_outputs(records: Sequence[Any]) -> list[Output]:
    """The tensors natural to the photos' JSON answers, in photo order: per person (``people`` per photo, ``boxes
    [P, 4]``, ``scores [P]``, ``keypoints [P, K, 3]``, ``views [P]``), per face (``faces``, ``boxes``, ``scores``,
    ``landmarks [F, 5, 2]``), or a segmenter's masks (``masks [N]``, COCO RLE counts, of ``mask_sizes [N, 2]``)."""
    if not all(isinstance(record, dict) for record in records):
        return []  # format=coco answers are lists
    for group in ("people", "faces"):
        if all(isinstance(record.get(group), list) for record in records):
            found = [one for record in records for one in record[group]]
            outputs = [Output(group, "INT32", np.array([len(record[group]) for record in records], np.int32))]
            outputs += [Output("boxes", "FP32", _floats([one["box"] for one in found], (0, 4)))]
            outputs += [Output("scores", "FP32", _floats([one["score"] for one in found], (0,)))]
            joints = len(records[0].get("keypoint_names", ()))
            if joints and all("keypoints" in one for one in found):
                outputs.append(
                    Output("keypoints", "FP32", _floats([one["keypoints"] for one in found], (0, joints, 3)))
                )
            if group == "faces":
                outputs.append(Output("landmarks", "FP32", _floats([one["landmarks"] for one in found], (0, 5, 2))))
            if found and all("view" in one for one in found):
                outputs.append(Output("views", "BYTES", [str(one["view"]).encode() for one in found]))
            return outputs
    if all(isinstance(record.get("mask"), dict) for record in records):
        return [
            Output("masks", "BYTES", [record["mask"]["counts"].encode("ascii") for record in records]),
            Output("mask_sizes", "INT32", np.array([record["mask"]["size"] for record in records], np.int32)),
        ]
    return []


def _floats(values: list, empty: tuple[int, ...]) -> np.ndarray:
    return np.array(values, np.float32) if values else np.zeros(empty, np.float32)


def binary_data(output: Output) -> bytes:
    """An output's data in the binary extension (and gRPC's raw contents): BYTES elements each after its length, numbers little-endian."""
    if isinstance(output.values, list):
        return length_prefixed(output.values)
    return output.values.astype(output.values.dtype.newbyteorder("<"), copy=False).tobytes()


def length_prefixed(elements: Sequence[bytes]) -> bytes:
    """BYTES elements as the binary extension and gRPC's raw contents carry them: each after its 4-byte length."""
    return b"".join(ELEMENT_LENGTH.pack(len(element)) + element for element in elements)


def _json_data(output: Output, parameters: dict[str, Any]) -> list:
    """An output's data in JSON: numbers flat, in row-major order; BYTES as text, pictures as base64."""
    if not isinstance(output.values, list):
        return output.values.ravel().tolist()
    if output.name == "picture":
        parameters["content_encoding"] = "base64"
        return [base64.b64encode(element).decode("ascii") for element in output.values]
    return [element.decode("utf-8") for element in output.values]


def v2_error(answer: Answer, photo: int, photos: int) -> Answer:
    """A failed photo's answer as the v2 error body ``{"error": ...}``, with its status (our error's ``type`` and
    ``code`` kept beside it)."""
    message, kind = error_message(answer, photo, photos)
    body = {"error": message, "type": kind, "code": answer.status}
    return Answer(json.dumps(body).encode(), "application/json", answer.status)


def error_message(answer: Answer, photo: int, photos: int) -> tuple[str, str | None]:
    """A failed photo's error message, saying which photo where the request had several, and our error's type."""
    try:
        ours = json.loads(answer.body)
    except ValueError:
        ours = {}
    message = ours.get("message") or answer.body.decode("utf-8", "replace")
    where = f"photo {photo} of {photos}: " if photos > 1 else ""
    return f"{where}{message}", ours.get("type")


def header_value(headers: Mapping[str, Any], name: str) -> Any:
    """A request header's value, its name in any case (None when absent)."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def _split_binary(body: bytes, headers: Mapping[str, Any]) -> tuple[Any, bytes]:
    """The binary extension's JSON object (its length in the header) and the data after it."""
    length = header_value(headers, JSON_LENGTH_HEADER)
    try:
        length = int(length)
    except ValueError:
        raise RequestError(f"{JSON_LENGTH_HEADER} must be a whole number of bytes, not {length!r}", "InvalidRequest")
    if not 0 < length <= len(body):
        raise RequestError(
            f"{JSON_LENGTH_HEADER} says {length} bytes of JSON, but the body has {len(body)}", "InvalidRequest"
        )
    try:
        return json.loads(body[:length].decode("utf-8")), body[length:]
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RequestError(f"the request's JSON is not valid: {error}", "InvalidJSON") from None


def _input_blobs(inputs: list[dict[str, Any]], binary: bytes) -> dict[int, bytes]:
    """Each input's binary data (by its place in ``inputs``), cut from ``binary`` in order by ``binary_data_size``."""
    blobs, start = {}, 0
    for n, tensor in enumerate(inputs):
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or start + size > len(binary):
            raise RequestError(
                f"input {tensor.get('name')!r} says binary_data_size {size!r}, but {len(binary) - start} bytes are left",
                "InvalidRequest",
            )
        blobs[n], start = binary[start : start + size], start + size
    if start != len(binary):
        raise RequestError(f"{len(binary) - start} bytes of binary data follow that no input claims", "InvalidRequest")
    return blobs


def _image_elements(tensor: dict[str, Any], blobs: dict[int, bytes]) -> list[bytes]:
    """The photos of the ``image`` input: ``BYTES`` of shape ``[N]`` (or ``[N, 1]``), base64 in JSON or binary."""
    if tensor.get("datatype") != "BYTES":
        raise RequestError(
            f"input 'image' must be BYTES (the encoded photos), not {tensor.get('datatype')!r}", "InvalidRequest"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape) or not shape:
        raise RequestError(f"input 'image' needs a shape such as [1] or [N], not {shape!r}", "InvalidRequest")
    count = int(np.prod(shape))
    if count == 0:
        raise RequestError("input 'image' holds no photo; send at least one", "EmptyRequest")
    if blobs:
        (blob,) = blobs.values()
        images = _binary_elements(blob)
    else:
        data = tensor.get("data")
        images = [decode_base64(text, "image") for text in _flat_strings(data)]
    if len(images) != count:
        raise RequestError(f"input 'image' has shape {shape} but holds {len(images)} photos", "InvalidRequest")
    return images


def _flat_strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise RequestError("input 'image' needs 'data': the photos as base64 strings", "NoImage")
    flat = []
    for element in data:
        flat.extend(_flat_strings(element) if isinstance(element, list) else [element])
    if not all(isinstance(element, str) for element in flat):
        raise RequestError("the photos of input 'image' must be base64 strings", "InvalidBase64")
    return flat


def _binary_elements(blob: bytes) -> list[bytes]:
    """BYTES elements of the binary extension: each a 4-byte little-endian length, then its bytes."""
    elements, start = [], 0
    while start < len(blob):
        if start + ELEMENT_LENGTH.size > len(blob):
            raise RequestError("input 'image''s binary data ends inside an element's length", "InvalidRequest")
        (length,) = ELEMENT_LENGTH.unpack_from(blob, start)
        start += ELEMENT_LENGTH.size
        if start + length > len(blob):
            raise RequestError("input 'image''s binary data ends inside a photo", "InvalidRequest")
        if not length:
            raise RequestError("a photo of input 'image' is empty; send an image", "EmptyRequest")
        elements.append(blob[start : start + length])
        start += length
    return elements


def _options(parameters: Any, where: str) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError(f"the 'parameters' of {where} must be an object of options", "InvalidOption")
    sequence = sorted(SEQUENCE_PARAMETERS & parameters.keys())
    if sequence and where != "the request":
        raise RequestError(f"{sequence[0]!r} goes in the request's parameters, not in {where}'s", "InvalidOption")
    return {
        name: value
        for name, value in parameters.items()
        if name not in PROTOCOL_PARAMETERS and name not in SEQUENCE_PARAMETERS
    }


def _binary_output(body: dict[str, Any]) -> bool:
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    outputs = body.get("outputs") if isinstance(body.get("outputs"), list) else []
    return bool(parameters.get("binary_data_output")) or any(
        isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") for o in outputs
    )


def _requested_outputs(body: dict[str, Any]) -> tuple[str, ...] | None:
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise RequestError("'outputs' must be a list of objects with a 'name'", "InvalidRequest")
    return tuple(o["name"] for o in outputs)
