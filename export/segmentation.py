"""Person segmentation: torchvision's VOC segmenters and MediaPipe's selfie segmentation answering the person
log-odds of ``uint8`` photos; config and recipes."""

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models import segmentation

from handlers.segmentation.schema import SegmentationConfig, SegmenterSpec

from .archive import Pt2Shapes
from .mediapipe import SELFIE_SEGMENTATION, SELFIE_SEGMENTATION_LANDSCAPE, MediaPipeModel, mediapipe_part
from .pose_blazepose import BLAZEPOSE_DETECTOR, BLAZEPOSE_DETECTOR_PART
from .recipe import IMAGE_LIMITS, IMAGE_SERVING, IMAGENET_MEAN, IMAGENET_STD, PartRecipe, Recipe, example_photos


class PersonLogOdds(nn.Module):
    """A torchvision VOC segmentation model taking RGB ``uint8[N, 3, H, W]`` photos, answering the log-odds of "person".

    ``log p(person) - log p(not person)`` from the 21 class logits; a 1-channel map is
    cheap to resize to the photo, and thresholding it at log(t / (1 - t)) is thresholding
    the person probability at t. The photos are normalised here, on the model's device,
    with the statistics of torchvision's weights (ImageNet's).
    """

    def __init__(self, segmenter: nn.Module, person_label: int = 15, classes: int = 21):
        super().__init__()
        self.segmenter = segmenter
        self.person_label = person_label
        self.register_buffer("others", torch.tensor([c for c in range(classes) if c != person_label]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.segmenter((images.float() - self.mean) / self.std)["out"]
        person = logits[:, self.person_label : self.person_label + 1]
        return person - logits[:, self.others].logsumexp(dim=1, keepdim=True)


def person_log_odds(segmenter: nn.Module) -> nn.Module:
    """Wrap a torchvision VOC segmenter to answer the person log-odds map."""
    return PersonLogOdds(segmenter)


# torchvision's VOC segmenters: resized to 520 px on the short side (their weights'
# transforms); the exported model normalises uint8 photos itself and answers the person log-odds map.
# Photos longer than 4:1 are shrunk to fit 2080 px (a 1 x 40M-pixel strip would otherwise
# become a 520 x 20-billion input), strips are stretched to 32 px: the .pt2's bounds.
SEGMENTER = SegmenterSpec(short_side=520, long_side=2080, min_side=32)
# The same as model-config.yaml holds it.
SEGMENTER_CONFIG = SEGMENTER.to_config()
SEGMENTER_PT2 = Pt2Shapes(sides=(SEGMENTER.min_side, SEGMENTER.long_side))

LIGHT_SEGMENTER = (segmentation.lraspp_mobilenet_v3_large, "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1")


def segmenter_part(builder: Callable[..., nn.Module], weights: str) -> PartRecipe:
    """A torchvision VOC segmenter as a person log-odds model file taking ``uint8`` photos."""
    return PartRecipe(
        name="model",
        build=partial(builder, weights=None, weights_backbone=None),
        example_inputs=lambda batch: (example_photos(batch, 520, 600, seed=batch),),
        torchscript="script",
        default_weights=weights,
        finish=person_log_odds,
        pt2=SEGMENTER_PT2,
    )


def _segmenter_recipe(name: str, builder: Callable[..., nn.Module], weights: str, served_by_default: bool) -> Recipe:
    return Recipe(
        name=name,
        parts=(segmenter_part(builder, weights),),
        handler="handlers.segmentation.handler",
        config=SegmentationConfig(segmenter=SEGMENTER, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
        served_by_default=served_by_default,
    )


# MediaPipe's selfie segmentation (export/mediapipe.py): the photo stretched to its one input size, as MediaPipe's graph
# feeds it. It marks a photo's main subject, whatever it is (a cat too), so BlazePose's person detector gates it.
SELFIE = SegmenterSpec(size=(256, 256))
SELFIE_LANDSCAPE = SegmenterSpec(size=(144, 256))


def selfie_parts(model: MediaPipeModel, spec: SegmenterSpec) -> tuple[PartRecipe, PartRecipe]:
    """The selfie segmenter for ``spec``'s input, and the person detector of its gate."""
    return mediapipe_part("model", model, spec.size, Pt2Shapes()), replace(BLAZEPOSE_DETECTOR_PART, name="detector")


def _selfie_recipe(name: str, model: MediaPipeModel, spec: SegmenterSpec) -> Recipe:
    return Recipe(
        name=name,
        parts=selfie_parts(model, spec),
        handler="handlers.segmentation.handler",
        config=SegmentationConfig(segmenter=spec, person_gate=BLAZEPOSE_DETECTOR, limits=IMAGE_LIMITS),
        serving=IMAGE_SERVING,
    )


RECIPES = (
    _segmenter_recipe(
        "person_segmenter",
        segmentation.deeplabv3_mobilenet_v3_large,
        "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
        served_by_default=True,
    ),
    _segmenter_recipe("person_segmenter_lraspp", *LIGHT_SEGMENTER, served_by_default=False),
    _selfie_recipe("person_segmenter_selfie", SELFIE_SEGMENTATION, SELFIE),
    _selfie_recipe("person_segmenter_selfie_landscape", SELFIE_SEGMENTATION_LANDSCAPE, SELFIE_LANDSCAPE),
)
