"""The base handler: TorchServe's life cycle with per-request errors; the only code that touches the context.

A model handler subclasses ``VisionHandler``, declares ``options`` and fills four hooks:
``validate`` (per item, may raise ``RequestError``), ``prepare`` (readable items to one
model input on the device), ``forward`` (the model call) and ``answer`` (outputs to one
``Answer`` per item).
"""

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Mapping

import torch
from ts.torch_handler.base_handler import BaseHandler

from .errors import RequestError
from .images import ImageLimits, decode_image
from .inputs import read_request
from .options import Option, describe, parse_options
from .responses import Answer, error_answer

logger = logging.getLogger(__name__)

BATCH_SIZE_HEADER = "X-Batch-Size"


@dataclass(frozen=True)
class Item:
    """One readable request: its place in TorchServe's batch, RGB ``uint8[3, H, W]`` image, options."""

    index: int
    image: torch.Tensor
    options: dict[str, Any]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class Batch:
    """A TorchServe batch on its way through the life cycle."""

    size: int
    items: list[Item]
    errors: dict[int, RequestError]
    inputs: Any = None
    outputs: Any = None


class VisionHandler(BaseHandler):
    """Shared life cycle: decode and validate each request, run the model once per batch, answer each."""

    options: Mapping[str, Option] = {}

    def initialize(self, context):
        """Load the TorchScript model on the worker's device and read the archive's handler config."""
        super().initialize(context)
        self.config = context.model_yaml_config.get("handler", {})
        self.limits = ImageLimits.from_config(self.config.get("limits", {}))
        manifest = context.manifest["model"]
        self.model_name = manifest["modelName"]
        self.model_version = manifest.get("modelVersion", "")
        self.weights = self.config.get("weights", {})  # per TorchScript file: {"model": {...}, ...}
        threads = self.config.get("torch_threads", 0)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        for part, record in self.weights.items():
            if not record.get("pretrained"):
                logger.warning(
                    "!!! %s serves UNTRAINED weights for its %s (%s): answers are well-formed but meaningless !!!",
                    self.model_name, part, record.get("source"),
                )  # fmt: skip
        logger.info("%s %s on %s, weights: %s", self.model_name, self.model_version, self.device, self.weights)

    @property
    def answer_header(self) -> dict[str, str]:
        """The fields every JSON answer starts with."""
        return {"model": self.model_name, "version": self.model_version}

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        """Read, decode and validate each request; gather the readable ones into one model input."""
        items, errors = [], {}
        for index, row in enumerate(data):
            try:
                request = read_request(row, self.context.get_all_request_header(index))
                options = parse_options(request.options, self.options)
                item = Item(index, decode_image(request.image, self.limits), options)
                self.validate(item)
                items.append(item)
            except RequestError as error:
                errors[index] = error
        batch = Batch(len(data), items, errors)
        if items:
            batch.inputs = self.prepare(items)
        return batch

    def inference(self, batch: Batch, *args, **kwargs) -> Batch:
        """Run the model once over every readable item of the batch."""
        if batch.items:
            with torch.inference_mode():
                batch.outputs = self.forward(batch.inputs)
        return batch

    def postprocess(self, batch: Batch) -> list[bytes]:
        """One body per request, with its own status and content type."""
        answers: dict[int, Answer] = {i: error_answer(e) for i, e in batch.errors.items()}
        if batch.items:
            answers.update(
                zip((item.index for item in batch.items), self.answer(batch.items, batch.inputs, batch.outputs))
            )
        for index, answer in answers.items():
            self.context.set_response_content_type(index, answer.content_type)
            self.context.set_response_header(index, BATCH_SIZE_HEADER, str(batch.size))
            if answer.status != HTTPStatus.OK:
                self.context.set_response_status(answer.status, HTTPStatus(answer.status).phrase, index)
        return [answers[index].body for index in range(batch.size)]

    def describe_handle(self) -> str:
        """What the describe API shows under ``customizedMetadata``."""
        return json.dumps(
            {
                "model": self.model_name,
                "version": self.model_version,
                "weights": self.weights,
                "device": str(self.device),
                "torch_threads": torch.get_num_threads(),
                "options": describe(self.options),
                "limits": {"max_image_bytes": self.limits.max_bytes, "max_image_pixels": self.limits.max_pixels},
                "config": {k: v for k, v in self.config.items() if k not in ("weights", "limits")},
            }
        )

    def validate(self, item: Item) -> None:
        """Model-specific checks of one item (raise ``RequestError``); none by default."""

    def prepare(self, items: list[Item]) -> Any:
        """Turn the readable items into one model input on ``self.device``: by default, their images."""
        return [item.image.to(self.device) for item in items]

    def forward(self, inputs: Any) -> Any:
        """Call the model; override to add test-time augmentation."""
        return self.model(inputs)

    def answer(self, items: list[Item], inputs: Any, outputs: Any) -> list[Answer]:
        """One ``Answer`` per item, in ``items`` order."""
        raise NotImplementedError
