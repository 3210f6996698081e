"""TorchServe handler for the smart filter: the person kept, the background replaced by one chosen from the largest
face's expression."""

from dataclasses import replace
from typing import Any

from torch import Tensor

from handlers.core.answers import Answer, json_answer
from handlers.core.base import Item, VisionHandler
from handlers.core.options import choice
from handlers.faces.steps import FACE_OPTIONS, FaceQuery, Faces, detect_faces, face_records
from handlers.segmentation.steps import (
    SEGMENTER_OPTIONS,
    alpha_matte,
    composite,
    gate_people,
    mask_coverage,
    mask_rle,
    model_inputs,
    person_log_odds,
    picture_answer,
)
from handlers.smart_filter.schema import SmartFilterConfig
from handlers.smart_filter.steps import FILTER_OPTIONS, PALETTE, decision, decision_headers

# (segmenter inputs grouped by size, the photos, the face queries, the photos' sizes and decode scales) and
# (log-odds, faces) per item: tuples, not classes, as TorchServe wants exactly one class in a handler module.
FilterInputs = tuple[list[tuple[list[int], Tensor]], list[Tensor], list[FaceQuery], list[tuple[int, int]], list[int]]


class SmartFilterHandler(VisionHandler):
    """The segmenter and the four face networks, each run once per batch; one background per photo from the palette."""

    v2_output_names = ("answer", "picture")

    options = {
        **FILTER_OPTIONS,
        "format": choice(
            None,
            ("jpeg", "png", "webp", "json"),
            "jpeg (default), png or webp (lossless): the picture; json: the decision (expression, smiling, background, "
            "faces, coverage)",
        ),
        **{name: SEGMENTER_OPTIONS[name] for name in ("feather", "threshold", "quality", "png_compression")},
        **{name: FACE_OPTIONS[name] for name in ("min_face_size", "score_threshold", "smile_threshold")},
    }
    schema = SmartFilterConfig

    def initialize(self, context):
        super().initialize(context)
        self.networks = {part: self.load_part(part) for part in ("pnet", "rnet", "onet", "expression")}
        self.person_detector = self.load_part("detector") if self.settings.person_gate is not None else None

    def prepare(self, items: list[Item]) -> FilterInputs:
        images = [item.image for item in items]
        queries = [FaceQuery(i.options["min_face_size"] / i.scale, i.options["score_threshold"], None) for i in items]
        sizes = [item.size for item in items]
        groups = model_inputs(images, sizes, self.settings.segmenter)
        return groups, images, queries, sizes, [item.scale for item in items]

    def forward(self, inputs: FilterInputs) -> tuple[list[Tensor], list[Faces]]:
        groups, images, queries, sizes, scales = inputs
        log_odds = person_log_odds(self.model, groups, len(images))
        if self.person_detector is not None:
            log_odds = gate_people(log_odds, self.person_detector, images, sizes, scales, self.settings.person_gate)
        return log_odds, detect_faces(self.networks, images, queries, self.settings.faces)

    def answer(self, items: list[Item], inputs: Any, outputs: tuple[list[Tensor], list[Faces]]) -> list[Answer]:
        answers = []
        for item, odds, faces in zip(items, *outputs):
            options = item.options
            records = face_records(faces, item.scale, self.settings.faces.expressions, options["smile_threshold"])
            chosen = decision(records, options)
            if options["format"] == "json":
                height, width = item.size
                coverage = mask_coverage(mask_rle(odds, item.size, options["threshold"]))
                answers.append(
                    json_answer(
                        {
                            **self.answer_header,
                            "image": {"width": int(width), "height": int(height)},
                            **chosen,
                            "coverage": coverage,
                            "faces": records,
                        }
                    )
                )
                continue
            make = PALETTE[chosen["background"]].make
            alpha = alpha_matte(odds, item.size, options["threshold"], options["feather"])
            picture = composite(item.image, alpha, make(item.image) if make else "blur")
            answer = picture_answer(picture, {**options, "background": chosen["background"]})
            answers.append(replace(answer, headers=decision_headers(chosen)))
        return answers
