"""TorchServe handler for faces: MTCNN boxes and landmarks, an expression per face, and whether it smiles."""

from typing import Any

from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item, VisionHandler
from handlers.faces.schema import FacesConfig
from handlers.faces.steps import (
    FACE_OPTIONS,
    FaceQuery,
    Faces,
    coarsest_face_scale,
    detect_faces,
    face_answer,
)
from handlers.vision.people import check_output_options, output_format


class FacesHandler(VisionHandler):
    """Five compiled networks (P-Net, R-Net, O-Net, expression, and the second opinion where asked for), each run
    once per stage over the whole batch."""

    v2_output_names = ("answer", "faces", "boxes", "scores", "landmarks")

    options = FACE_OPTIONS
    schema = FacesConfig

    def initialize(self, context):
        super().initialize(context)
        self.networks = {
            "pnet": self.model,
            **{part: self.load_part(part) for part in ("rnet", "onet", "expression", "mini_xception")},
        }

    def validate(self, item: Item) -> None:
        check_output_options(item.options)

    def coarsest_scale(self, item: Item) -> float:
        return coarsest_face_scale(item.options["min_face_size"]) if output_format(item.options) == "json" else 1.0

    def prepare(self, items: list[Item]) -> tuple[list[Tensor], list[FaceQuery]]:
        queries = [
            FaceQuery(
                i.options["min_face_size"] / i.scale,
                i.options["score_threshold"],
                i.options["max_faces"],
                i.options["second_opinion"],
            )
            for i in items
        ]
        return [item.image for item in items], queries

    def forward(self, inputs: tuple[list[Tensor], list[FaceQuery]]) -> list[Faces]:
        return detect_faces(self.networks, *inputs, self.settings.cascade)

    def answer(self, items: list[Item], inputs: Any, outputs: list[Faces]) -> list[Answer]:
        return [
            face_answer(item, faces, self.settings.cascade.expressions, self.answer_header)
            for item, faces in zip(items, outputs)
        ]
