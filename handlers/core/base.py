"""The base handler: TorchServe's life cycle with per-request errors; the only code that touches the context.

A model handler subclasses ``VisionHandler``, declares ``options`` and fills its hooks:
``validate`` (per item, before decoding; may raise ``RequestError``), ``coarsest_scale``
(how small a JPEG may be decoded for the model), ``prepare`` (readable items to one model
input on the device), ``forward`` (the model call) and ``answer`` (outputs to one
``Answer`` per item).
"""

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import cv2
import torch
from torch import Tensor
from ts.torch_handler.base_handler import BaseHandler

from handlers.core.answers import Answer, error_answer
from handlers.core.errors import InternalError, RequestError
from handlers.core.images import ImageHeader, dct_scale, decode_jpegs_on, decode_pixels, read_header
from handlers.core.inputs import Item, Request, read_request
from handlers.core.metrics import report_batch
from handlers.core.models import compiled_record, load_model
from handlers.core.options import Option, describe, parse_options
from handlers.core.schema import HandlerConfig
from handlers.core.stages import CLOCK, server_timing
from handlers.core.v2 import (
    V2Request,
    in_sequence,
    is_metadata_request,
    is_v2_request,
    read_v2_request,
    split_body,
    v2_answer,
    v2_error,
    v2_metadata,
)
from handlers.core.v2_grpc import (
    INFER,
    METADATA,
    grpc_answer,
    grpc_error,
    grpc_method,
    model_metadata,
    read_grpc_request,
)

logger = logging.getLogger(__name__)

BATCH_SIZE_HEADER = "X-Batch-Size"
# The batch's stage times up to its answers' headers, shared by its requests.
SERVER_TIMING_HEADER = "Server-Timing"
# The sequence's ID in the answer, under a name proxies pass (the frontend agent takes requests' sequences from it too).
SEQUENCE_HEADER = "X-Sequence-Id"
SEQUENCE_END_HEADER = "ts_request_sequence_end"  # an answer with it closes its sequence (TorchServe's header)
# Nice increment a worker takes once it has answered its first batch (0: none). A worker that
# starts (in place of a dead one, or a scale-up) then runs before the busy ones: on 2 cores under
# mixed load its 3.5 s of start-up CPU otherwise got a third of them (make soak, docs/benchmarks.md).
SERVING_NICE_VARIABLE = "HUMANSERVE_SERVING_NICE"
DEFAULT_SERVING_NICE = 10


def lower_cpu_priority(increment: int) -> None:
    """Add ``increment`` to the nice value of every thread of this process (Linux keeps one per thread)."""
    tasks = Path("/proc/self/task")
    for tid in [int(task.name) for task in tasks.iterdir()] if tasks.is_dir() else [0]:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


@dataclass
class Upload:
    """An item waiting to be decoded: its bytes and header."""

    item: Item
    data: bytes
    header: ImageHeader


@dataclass
class Row:
    """One request of TorchServe's batch and the places of the items it became: one, or a v2 request's photos."""

    places: list[int]
    v2: bool = False  # an Open Inference Protocol request: answered in its form
    request: V2Request | None = None  # None: a v2 request that could not be read
    grpc: str | None = None  # the v2 gRPC call it is (v2_grpc.INFER or METADATA): answered as its response message
    metadata: bool = False  # a v2 model metadata request (over REST or gRPC): answered without items


@dataclass
class Batch:
    """A TorchServe batch on its way through the life cycle: ``size`` requests (``rows``), their items by place."""

    size: int
    items: list[Item]
    errors: dict[int, RequestError]
    rows: list[Row] = field(default_factory=list)
    inputs: Any = None
    outputs: Any = None
    answers: list[Answer] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)


class VisionHandler(BaseHandler):
    """Shared life cycle: read and validate each request, decode what the model needs, run the model once per batch,
    answer each."""

    options: Mapping[str, Option] = {}
    # The v2 outputs the family's answers can have (v2_grpc.OUTPUT_TENSORS), as its model metadata lists them.
    v2_output_names: tuple[str, ...] = ("answer",)
    schema: type[HandlerConfig] = HandlerConfig  # the family's archive config (handlers/<family>/schema.py)

    def initialize(self, context):
        """Read the archive's handler config and load its model on the worker's device (TorchScript or ``.pt2``).

        BaseHandler's loader knows TorchScript only; the device choice is its own.
        """
        properties = context.system_properties
        gpu = properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu")
        self.config = context.model_yaml_config.get("handler", {})
        self.settings = self.schema.from_config(self.config)  # the recipe's typed config, read back
        self.limits = self.settings.limits
        manifest = context.manifest["model"]
        self.model_name = manifest["modelName"]
        self.model_version = manifest.get("modelVersion", "")
        self.weights = self.config.get("weights", {})  # per model file: {"model": {...}, ...}
        self.compiled = self.config.get("compiled", {})  # per model file: format, torch, device, ...
        self.batch_limit = int(properties.get("batch_size", 1))
        self.model_dir = properties["model_dir"]
        # The archive's threads, else the server's setting (runtime/torchserve.py resolves
        # HUMANSERVE_TORCH_THREADS=share), else torch's.
        setting = os.environ.get("HUMANSERVE_TORCH_THREADS", "")
        threads = self.config.get("torch_threads", 0) or (int(setting) if setting.isdigit() else 0)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model = self.load_part("model")
        # The nice increment still to apply after the first answered batch (0: none, or applied).
        self.pending_nice = int(os.environ.get(SERVING_NICE_VARIABLE, DEFAULT_SERVING_NICE))
        self.initialized = True
        # Per-request image work is small: OpenCV's thread pool cost more CPU than it saved
        # (make bench-stack); workers and batches are where the parallelism is.
        cv2.setNumThreads(1)
        for part, record in self.weights.items():
            if not record.get("pretrained"):
                logger.warning(
                    "!!! %s serves UNTRAINED weights for its %s (%s): answers are well-formed but meaningless !!!",
                    self.model_name,
                    part,
                    record.get("source"),
                )
        logger.info(
            "%s %s on %s, weights: %s, compiled: %s",
            self.model_name,
            self.model_version,
            self.device,
            self.weights,
            self.compiled,
        )

    @property
    def description(self) -> str:
        """What the model does: its family's one-line docstring (handlers/<family>/__init__.py)."""
        family = type(self).__module__.rpartition(".")[0]
        return " ".join((sys.modules[family].__doc__ or "").split())

    def load_part(self, part: str) -> Callable[..., Any]:
        """One model file of the archive, as its export recorded it, on the worker's device."""
        record = compiled_record(self.compiled, part)
        return load_model(self.model_dir, record, self.device)

    @property
    def answer_header(self) -> dict[str, str]:
        """The fields every JSON answer starts with."""
        return {"model": self.model_name, "version": self.model_version}

    def handle(self, data, context):
        """TorchServe's entry point: the life cycle without autograd bookkeeping, timed per stage."""
        CLOCK.take()
        with torch.inference_mode():
            answers = super().handle(data, context)
        if self.pending_nice:
            lower_cpu_priority(self.pending_nice)  # once: threads started later inherit it
            self.pending_nice = 0
        return answers

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        """Read and validate each request, decode the readable ones and gather them into one model input.

        A v2 request's photos become items of their own, in the same batch. A request that breaks our
        code is answered 500 alone; its batch mates go on.
        """
        uploads, errors, rows, place = [], {}, [], 0
        for index, row in enumerate(data):
            with CLOCK.stage("read"):
                rows.append(self._read_row(index, row, place, uploads, errors))
            place += len(rows[-1].places)
        with CLOCK.stage("decode"):
            items = self.decode(uploads, errors)
        batch = Batch(len(data), items, errors, rows)
        if items:
            with CLOCK.stage("preprocess"):
                batch.inputs = self._guarded(batch, "preparing the model input", lambda: self.prepare(items))
        return batch

    def _read_row(
        self, index: int, row: dict[str, Any], place: int, uploads: list[Upload], errors: dict[int, RequestError]
    ) -> Row:
        """Read TorchServe's request ``index`` into uploads (or errors) from ``place`` on: its ``Row``."""
        headers = self.context.get_all_request_header(index)
        grpc = grpc_method(headers)
        if grpc == METADATA or is_metadata_request(headers):
            return Row([], True, None, grpc, metadata=True)
        v2, request = grpc == INFER or is_v2_request(row.get("body"), headers), None
        try:
            if grpc == INFER:
                body, binary = read_grpc_request(row.get("body"))
            else:
                body, binary = split_body(row, headers)
                v2 = is_v2_request(body, headers)
            if v2:
                request = in_sequence(
                    read_v2_request(body, binary, self.batch_limit), self.context.get_sequence_id(index)
                )
                sent = [Request(image, request.options) for image in request.images]
            else:
                sent = [read_request({**row, "body": body} if "body" in row else row, headers)]
        except RequestError as error:
            errors[place] = error
            return Row([place], v2, grpc=grpc)
        except Exception as error:
            errors[place] = _internal("reading the request", error)
            return Row([place], v2, grpc=grpc)
        places = list(range(place, place + len(sent)))
        for at, one in zip(places, sent):
            try:
                options = parse_options(one.options, self.options)
                header = read_header(one.image, self.limits)
                item = Item(at, options, header.size, sequence_id=self.context.get_sequence_id(index))
                self.validate(item)
                uploads.append(Upload(item, one.image, header))
            except RequestError as error:
                errors[at] = error
            except Exception as error:
                errors[at] = _internal("reading the request", error)
        return Row(places, v2, request, grpc)

    def decode(self, uploads: list[Upload], errors: dict[int, RequestError]) -> list[Item]:
        """Decode each upload at its coarsest allowed scale: JPEGs in one call on a CUDA model's device, the rest on the
        CPU.

        A JPEG the device decoder refuses is decoded on the CPU, which names the problem.
        """
        on_device: list[Tensor | None] = [None] * len(uploads)
        jpegs = [n for n, upload in enumerate(uploads) if upload.header.format == "JPEG"]
        if self.device.type == "cuda" and jpegs:
            decoded = decode_jpegs_on(self.device, [uploads[n].data for n in jpegs], [uploads[n].header for n in jpegs])
            for n, pixels in zip(jpegs, decoded):
                on_device[n] = pixels
        items = []
        for upload, pixels in zip(uploads, on_device):
            item = upload.item
            try:
                if pixels is None:
                    item.scale = dct_scale(upload.header, self.coarsest_scale(item))
                    pixels = decode_pixels(upload.data, upload.header, item.scale)
                item.image = pixels.to(self.device)  # CUDA models crop and resize on their device
                items.append(item)
            except RequestError as error:
                errors[item.index] = error
            except Exception as error:
                errors[item.index] = _internal("decoding the image", error)
        return items

    def inference(self, batch: Batch, *args, **kwargs) -> Batch:
        """Run the model once over every readable item of the batch."""
        if batch.items:
            with CLOCK.stage("model"):
                batch.outputs = self._guarded(
                    batch, "running the model", lambda: self._forward_synchronized(batch.inputs)
                )
        return batch

    def _forward_synchronized(self, inputs: Any) -> Any:
        outputs = self.forward(inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # charge the model's own time to it
        return outputs

    def _guarded(self, batch: Batch, stage: str, step: Callable[[], Any]) -> Any:
        """``step()`` over the whole batch; if our code fails, every item still in it is answered 500 (and None
        returned)."""
        try:
            return step()
        except Exception as error:
            failure = _internal(stage, error)
            batch.errors.update({item.index: failure for item in batch.items})
            batch.items = []
            return None

    def postprocess(self, batch: Batch) -> list[bytes]:
        """One body per request, with its own status and content type; the batch's stage times as metrics."""
        with CLOCK.stage("postprocess"):
            if batch.items:
                batch.answers = (
                    self._guarded(
                        batch, "writing the answers", lambda: self.answer(batch.items, batch.inputs, batch.outputs)
                    )
                    or []
                )
            by_place: dict[int, Answer] = {i: error_answer(e) for i, e in batch.errors.items()}
            by_place.update(zip((item.index for item in batch.items), batch.answers))
            answers = dict(enumerate(self._row_answer(row, by_place) for row in batch.rows))
            timing = server_timing(CLOCK.so_far())
            for index, answer in answers.items():
                self.context.set_response_content_type(index, answer.content_type)
                self.context.set_response_header(index, BATCH_SIZE_HEADER, str(batch.size))
                self.context.set_response_header(index, SERVER_TIMING_HEADER, timing)
                sequence_id = self.context.get_sequence_id(index)
                if sequence_id is not None:  # how a REST client learns the ID TorchServe gave its new sequence
                    self.context.set_response_header(index, self.context.header_key_sequence_id, sequence_id)
                    self.context.set_response_header(index, SEQUENCE_HEADER, sequence_id)
                    if batch.rows[index].metadata:  # a sequence model's metadata request opened one of its own
                        self.context.set_response_header(index, SEQUENCE_END_HEADER, sequence_id)
                for name, value in answer.headers.items():
                    self.context.set_response_header(index, name, value)
                if answer.status != HTTPStatus.OK:
                    self.context.set_response_status(answer.status, HTTPStatus(answer.status).phrase, index)
        batch.stages = dict(CLOCK.totals)  # handle() restarts the clock for the next batch
        report_batch(self.context.metrics, batch.stages, batch.size, self.batch_limit, len(batch.errors))
        return [answers[index].body for index in range(batch.size)]

    def _row_answer(self, row: Row, by_place: dict[int, Answer]) -> Answer:
        """A request's answer from its items': the one item's, or the v2 answer of them all (over REST or gRPC)."""
        if row.metadata and row.grpc:
            return model_metadata(self.model_name, self.model_version, self.v2_output_names)
        if row.metadata:
            return v2_metadata(
                self.model_name,
                self.model_version,
                self.v2_output_names,
                describe(self.options),
                self.description,
                self.weights,
            )
        if not row.v2:
            return by_place[row.places[0]]
        if row.request is None:
            return (grpc_error if row.grpc else v2_error)(by_place[row.places[0]], 0, 1)
        answers = [by_place[p] for p in row.places]
        answer = (grpc_answer if row.grpc else v2_answer)(row.request, self.model_name, self.model_version, answers)
        # Headers for the frontend (a tracker's sequence end) go with the v2 answer, as with the items' own.
        carried = {name: value for item in answers for name, value in item.headers.items()}
        return replace(answer, headers={**carried, **answer.headers}) if carried else answer

    def describe_handle(self) -> str:
        """What the describe API shows under ``customizedMetadata``."""
        return json.dumps(
            {
                "model": self.model_name,
                "version": self.model_version,
                "description": self.description,
                "weights": self.weights,
                "compiled": self.compiled,
                "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
                "options": describe(self.options),
                "limits": {"max_image_bytes": self.limits.max_bytes, "max_image_pixels": self.limits.max_pixels},
                "config": {k: v for k, v in self.config.items() if k not in ("weights", "compiled", "limits")},
            }
        )

    def validate(self, item: Item) -> None:
        """Model-specific checks of one item before its pixels are decoded (raise ``RequestError``); none by default."""

    def coarsest_scale(self, item: Item) -> float:
        """How many image pixels per decoded pixel the model can do with for ``item`` (``images.dct_scale``): 1 by
        default."""
        return 1.0

    def prepare(self, items: list[Item]) -> Any:
        """Turn the readable items into one model input on ``self.device``: by default, their images."""
        return [item.image.to(self.device) for item in items]

    def forward(self, inputs: Any) -> Any:
        """Call the model; override to add test-time augmentation."""
        return self.model(inputs)

    def answer(self, items: list[Item], inputs: Any, outputs: Any) -> list[Answer]:
        """One ``Answer`` per item, in ``items`` order."""
        raise NotImplementedError


def _internal(stage: str, error: Exception) -> InternalError:
    logger.exception("failed while %s", stage)
    return InternalError(stage, error)
