"""TorchServe handler for person detectors (torchvision Faster R-CNN): person boxes and scores."""

from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item
from handlers.detection.steps import BOX_LAYOUT, DetectionHandler, detected_people
from handlers.vision.people import people_answer


class PersonDetectorHandler(DetectionHandler):
    """Finds people: a batch of images of any sizes goes through the detector in one call."""

    v2_output_names = ("answer", "people", "boxes", "scores")

    def answer(self, items: list[Item], images: list[Tensor], detections: list[dict[str, Tensor]]) -> list[Answer]:
        return [
            people_answer(
                item,
                detected_people(found, self.settings.detector, item.options, item.scale),
                BOX_LAYOUT,
                self.answer_header,
            )
            for item, found in zip(items, detections)
        ]
