"""TorchServe handler for torchvision Keypoint R-CNN: boxes, 17 keypoints and a view class per person."""

from torch import Tensor

from handlers.core.answers import Answer
from handlers.core.base import Item
from handlers.detection.steps import DETECTION_OPTIONS, DetectionHandler, detected_people
from handlers.keypoint_rcnn.schema import KeypointRCNNConfig
from handlers.keypoint_rcnn.steps import classify_views, view_options
from handlers.vision.keypoints import COCO_KEYPOINTS, COCO_SKELETON
from handlers.vision.people import Layout, people_answer

LAYOUT = Layout(COCO_KEYPOINTS, COCO_SKELETON)


class KeypointRCNNHandler(DetectionHandler):
    """Detects people with their keypoints in one call per batch, then names each person's view."""

    v2_output_names = ("answer", "people", "boxes", "scores", "keypoints", "views")

    schema = KeypointRCNNConfig

    def initialize(self, context):
        super().initialize(context)
        self.options = {**DETECTION_OPTIONS, **view_options(self.settings.view)}

    def answer(self, items: list[Item], images: list[Tensor], detections: list[dict[str, Tensor]]) -> list[Answer]:
        answers = []
        for item, found in zip(items, detections):
            people = detected_people(found, self.settings.detector, item.options, item.scale)
            options = item.options
            people.fields["view"] = classify_views(
                people.keypoints[..., 2], options["view_face_threshold"], options["view_body_threshold"]
            )
            answers.append(people_answer(item, people, LAYOUT, self.answer_header))
        return answers
