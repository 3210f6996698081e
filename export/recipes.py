"""One recipe per model: its parts (architecture, weights, compiled format), handler, input facts and serving settings.

Pose, segmenters and styles export to ``.pt2`` (torch.export + AOTInductor); the detectors
and Keypoint R-CNN stay TorchScript: torchvision's detection models branch on data (how many
boxes survive the score threshold and NMS, per image), which torch.export cannot trace into
one graph.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torchvision.models import detection, segmentation

from .architectures import (
    EXPRESSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExpressionNet,
    ONet,
    PNet,
    PoseResNet,
    ResnetGenerator,
    RNet,
    TransformerNet,
    UnetGenerator,
    drop_instance_norm_statistics,
    example_crops,
    example_images,
    example_photos,
    example_pixels,
    person_detector_of_pixels,
    person_log_odds,
    pixel_generator,
    pixel_style,
    takes_pixels,
)
from .archive import REPO, Package, Part, Pt2Shapes, Sequences, Serving
from .weights import StateDictAdapter, WheelWeights, choose_weights

CHECKPOINTS = REPO / "checkpoints"
IMAGE_LIMITS = {"max_image_bytes": 20 * 1024 * 1024, "max_image_pixels": 40_000_000}

# The MSRA SimpleBaseline release, as trained by its own code:
# - images are read with cv2.imread (BGR) and never converted, so the ImageNet
#   statistics are applied to B, G, R channels in that order;
# - the crop maps the box centre to crop pixel index (w/2, h/2), i.e. continuous
#   w/2 + 0.5, and a joint's target peak sits at heatmap index crop_index / 4. In our
#   continuous crop frame (box centre at w/2) heatmap index u is therefore crop
#   point 4u: offset 0 (and flip test realigns by one column, as SHIFT_HEATMAP did).
SIMPLEBASELINE_INPUT = {"height": 256, "width": 192, "channels": "bgr", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
SIMPLEBASELINE_HEATMAP = {"stride": 4, "offset": 0.0, "sigma": 2.0, "refine": "dark"}
POSE_CONFIG: dict[str, Any] = {
    "input": SIMPLEBASELINE_INPUT,
    "heatmap": SIMPLEBASELINE_HEATMAP,
    "box_padding": 1.25,
    "max_crops_per_forward": 64,
}
POSE_HANDLER_CONFIG = {**POSE_CONFIG, "limits": IMAGE_LIMITS}

# torchvision's COCO detectors: label 1 is person (kept as label 1 by keep_person_class).
# They resize each image to 800 px on the short side, at most 1333 on the long side
# (their GeneralizedRCNNTransform; checked against the built models in the tests), so
# handlers decode JPEGs no larger than that.
DETECTOR_RESIZE = {"min_size": 800, "max_size": 1333}
DETECTOR_CONFIG: dict[str, Any] = {"person_label": 1, **DETECTOR_RESIZE}
# Keypoint R-CNN's joint scores are heatmap logits, not probabilities. Thresholds for the
# view rule: not calibrated here (no trained weights offline); every request can override.
KEYPOINT_RCNN_CONFIG: dict[str, Any] = {**DETECTOR_CONFIG, "view": {"face_threshold": 2.0, "body_threshold": 2.0}}

# torchvision's VOC segmenters: resized to 520 px on the short side (their weights'
# transforms); the exported model normalises uint8 photos itself and answers the person log-odds map.
# Photos longer than 4:1 are shrunk to fit 2080 px (a 1 x 40M-pixel strip would otherwise
# become a 520 x 20-billion input), strips are stretched to 32 px: the .pt2's bounds.
SEGMENTER_CONFIG: dict[str, Any] = {"input": {"short_side": 520, "long_side": 2080, "min_side": 32}}

# Serving defaults for CPU, tuned under load with `make bench` (docs/benchmarks.md): batch 4
# served more images/s than 8 on 2 cores (16.9 and 18.8 vs 15.0 and 15.1) at half the latency;
# a 20 ms batch delay costs little next to a 100+ ms model call; one worker with a torch
# thread per core beat 2 workers x 1 thread; 120 s covers a batch of 64-box requests with
# flip test on CPU. GPU archives take larger batches (make export-gpu).
POSE_SERVING = Serving(batch_size=4, max_batch_delay_ms=20, workers=1, response_timeout_s=120)
# Detectors resize every image to 800 px on the short side: a batch of 4 already keeps a
# GPU busy, and on CPU (seconds per image) a larger batch only lengthens the wait.
DETECTION_SERVING = Serving(batch_size=4, max_batch_delay_ms=20, workers=1, response_timeout_s=300)
# Segmenters and styles work on whole photos (segmenters at 520 px, styles up to 1024 px):
# costs like the detectors'.
IMAGE_SERVING = Serving(batch_size=4, max_batch_delay_ms=20, workers=1, response_timeout_s=300)
# Pose tracking: a video is a sequence; TorchServe closes one idle for a minute (the handler
# frees its state as soon), refuses new ones beyond 64 open per model, and lets one
# sequence queue 8 frames. A worker keeps at most 256 sequences' state (a few kB each).
TRACKER_SERVING = replace(
    DETECTION_SERVING, sequences=Sequences(max_idle_ms=60_000, timeout_ms=0, max_sequences=64, queue_size=8)
)
TRACKING_CONFIG: dict[str, Any] = {"ttl_s": 60, "max_sequences": 256, "tracker": {}}
STYLES_FILE = Path(__file__).with_name("styles.yaml")
GENERATORS_FILE = Path(__file__).with_name("generators.yaml")


@dataclass(frozen=True)
class PartRecipe:
    """How to build, weigh and compile one model file of an archive."""

    name: str
    build: Callable[[], nn.Module]
    example_inputs: Callable[[int], tuple[Any, ...]]
    torchscript: str = "trace"
    check_batch: int = 3
    default_checkpoint: Path | None = None
    default_weights: str | None = None  # torchvision weights name
    default_wheel: WheelWeights | None = None  # weights inside a wheel on the package registry
    adapt_state_dict: StateDictAdapter | None = None
    finish: Callable[[nn.Module], nn.Module] | None = None  # after the weights, before compiling
    pt2: Pt2Shapes | None = None  # None: torch.export cannot take it (TorchScript)

    def make(self, checkpoint: Path | None = None, weights: str | None = None) -> Part:
        """Build the architecture, apply the chosen weights and return the part to archive."""
        with torch.random.fork_rng():
            torch.manual_seed(0)  # random weights are the same on every export: compiled packages are cached by content
            module = self.build()
        record = choose_weights(
            module,
            checkpoint,
            weights,
            self.default_checkpoint,
            self.default_weights,
            self.adapt_state_dict,
            self.default_wheel,
        )
        if self.finish is not None:
            module = self.finish(module)
        return Part(self.name, module, self.example_inputs, record, self.torchscript, self.check_batch, self.pt2)


@dataclass(frozen=True)
class Recipe:
    """How to build, weigh and archive one model."""

    name: str
    parts: tuple[PartRecipe, ...]
    handler: str  # the module of its handler class (handlers.FAMILY.handler)
    handler_config: dict[str, Any]
    serving: Serving
    served_by_default: bool = False

    def package(self, parts: tuple[Part, ...], serving: Serving | None = None) -> Package:
        """The archive contents for ``parts`` built by this recipe."""
        return Package(
            name=self.name,
            parts=parts,
            handler=self.handler,
            handler_config=self.handler_config,
            serving=serving or self.serving,
        )


def _pose_crops(batch: int) -> tuple[Tensor, ...]:
    return (example_crops(batch, SIMPLEBASELINE_INPUT["height"], SIMPLEBASELINE_INPUT["width"], seed=batch),)


def _images(batch: int) -> tuple[list[Tensor], ...]:
    return (example_images(batch, seed=batch),)


# The pose model sees batches of crops, at most max_crops_per_forward of them per call.
POSE_PT2 = Pt2Shapes(batch=POSE_CONFIG["max_crops_per_forward"])
SEGMENTER_PT2 = Pt2Shapes(sides=(SEGMENTER_CONFIG["input"]["min_side"], SEGMENTER_CONFIG["input"]["long_side"]))
# Styled photos: 8 px (style.MIN_SIDE) to 4096 (the largest max_side), padded to multiples of 4.
STYLE_PT2 = Pt2Shapes(sides=(8, 4096), multiple=4)


def _pose_part(depth: int, name: str = "model") -> PartRecipe:
    return PartRecipe(
        name=name,
        build=partial(PoseResNet, depth),
        example_inputs=_pose_crops,
        default_checkpoint=CHECKPOINTS / f"pose_resnet_{depth}_256x192.pth.tar",
        pt2=POSE_PT2,
    )


def _detector_part(builder: Callable[..., nn.Module], weights: str, name: str = "model") -> PartRecipe:
    return PartRecipe(
        name=name,
        build=partial(builder, weights=None, weights_backbone=None),
        example_inputs=_images,
        torchscript="script",
        check_batch=2,
        default_weights=weights,
        finish=person_detector_of_pixels,
    )


PERSON_DETECTOR = _detector_part(detection.fasterrcnn_resnet50_fpn_v2, "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
PERSON_DETECTOR_MOBILENET = _detector_part(
    detection.fasterrcnn_mobilenet_v3_large_fpn, "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"
)
KEYPOINT_RCNN = PartRecipe(
    name="model",
    build=partial(detection.keypointrcnn_resnet50_fpn, weights=None, weights_backbone=None),
    example_inputs=_images,
    torchscript="script",
    check_batch=2,
    default_weights="KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
    finish=takes_pixels,
)


LIGHT_SEGMENTER = (segmentation.lraspp_mobilenet_v3_large, "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1")


def _segmenter_part(builder: Callable[..., nn.Module], weights: str) -> PartRecipe:
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
        parts=(_segmenter_part(builder, weights),),
        handler="handlers.segmentation.handler",
        handler_config={**SEGMENTER_CONFIG, "limits": IMAGE_LIMITS},
        serving=IMAGE_SERVING,
        served_by_default=served_by_default,
    )


def _style_recipes() -> list[Recipe]:
    styles = yaml.safe_load(STYLES_FILE.read_text())["styles"]
    return [
        Recipe(
            name=f"style_{style}",
            parts=(
                PartRecipe(
                    name="model",
                    build=TransformerNet,
                    example_inputs=lambda batch: (example_photos(batch, 100, 132, seed=batch),),
                    torchscript="script",
                    default_checkpoint=CHECKPOINTS / "style" / f"{style}.pth",
                    adapt_state_dict=drop_instance_norm_statistics,
                    finish=pixel_style,
                    pt2=STYLE_PT2,
                ),
            ),
            handler="handlers.style.handler",
            handler_config={"limits": IMAGE_LIMITS},
            serving=IMAGE_SERVING,
            served_by_default=settings.get("served_by_default", False),
        )
        for style, settings in styles.items()
    ]


# pix2pix's U-Net sees its trained size only (the handler resizes); a batch of up to the archive's batch size.
UNET_PT2 = Pt2Shapes()


def generator_recipe(name: str, settings: dict[str, Any]) -> Recipe:
    """The recipe of a pix2pix / CycleGAN generator from its ``generators.yaml`` settings (``ValueError`` naming a bad
    one)."""
    known = {"architecture", "blocks", "size", "norm", "batch_statistics", "dropout", "served_by_default"}
    if set(settings) - known:
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name} has unknown settings {sorted(set(settings) - known)}; known: {sorted(known)}"
        )
    if not all(isinstance(settings.get(flag, False), bool) for flag in ("dropout", "served_by_default")):
        raise ValueError(f"{GENERATORS_FILE.name}: {name}: dropout and served_by_default are true or false")
    architecture, norm, size = settings.get("architecture"), settings.get("norm"), settings.get("size")
    if norm not in ("instance", "batch") or settings.get("batch_statistics", "image") not in ("image", "running"):
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name}: norm is instance or batch, batch_statistics image or running"
        )
    layer = (
        "batch_image_statistics" if norm == "batch" and settings.get("batch_statistics", "image") == "image" else norm
    )
    dropout = settings.get("dropout", False)
    if architecture == "resnet" and settings.get("blocks") in (6, 9) and size == "any":
        build = partial(ResnetGenerator, blocks=settings["blocks"], norm=layer, dropout=dropout)
        example, pt2, side = (100, 132), STYLE_PT2, None
    elif architecture == "unet" and size in (128, 256):
        build = partial(UnetGenerator, downs=size.bit_length() - 1, norm=layer, dropout=dropout)
        example, pt2, side = (size, size), UNET_PT2, size
    else:
        raise ValueError(
            f"{GENERATORS_FILE.name}: {name}: architecture resnet with blocks 6 or 9 and size any, or unet with size 128 or 256"
        )
    return Recipe(
        name=name,
        parts=(
            PartRecipe(
                name="model",
                build=build,
                example_inputs=lambda batch: (example_photos(batch, *example, seed=batch),),
                default_checkpoint=CHECKPOINTS / "generators" / f"{name}.pth",
                finish=pixel_generator,
                pt2=pt2,
            ),
        ),
        handler="handlers.generators.handler",
        handler_config={"generator": {"architecture": architecture, "size": side}, "limits": IMAGE_LIMITS},
        serving=IMAGE_SERVING,
        served_by_default=settings.get("served_by_default", False),
    )


def _generator_recipes() -> list[Recipe]:
    return [
        generator_recipe(name, settings)
        for name, settings in yaml.safe_load(GENERATORS_FILE.read_text())["generators"].items()
    ]


def _pose_recipe(depth: int) -> Recipe:
    return Recipe(
        name=f"pose_resnet{depth}",
        parts=(_pose_part(depth),),
        handler="handlers.pose.handler",
        handler_config=POSE_HANDLER_CONFIG,
        serving=POSE_SERVING,
        served_by_default=depth == 50,
    )


def _detector_recipe(name: str, part: PartRecipe, served_by_default: bool) -> Recipe:
    return Recipe(
        name=name,
        parts=(part,),
        handler="handlers.detection.handler",
        handler_config={**DETECTOR_CONFIG, "limits": IMAGE_LIMITS},
        serving=DETECTION_SERVING,
        served_by_default=served_by_default,
    )


# Faces: MTCNN's three networks from the facenet-pytorch wheel, the expression classifier from
# PyEmotion's (both MIT; pinned by version and digest). facenet-pytorch's own defaults: faces
# from 20 px, a pyramid step of 0.709, thresholds 0.6 / 0.7 / 0.7 per stage; the smile
# threshold is the happy score's sigmoid. R-Net, O-Net and the classifier see at most
# max_crops_per_forward crops per call (facenet-pytorch's own chunk of 512); each image keeps
# its best max_proposals_per_level windows per pyramid level (a photo has tens; untrained weights or
# a pathological picture could give every window of a level, and NMS's cost grows with the square).
# P-Net's levels go to it padded to multiples of 16 px (at least 16): its ceil-mode
# pooling makes odd sides a separate program for torch.export, a 12 px level a 1x1 output it
# specialises, and each distinct shape costs oneDNN a cached primitive (handlers/faces/steps.py).
FACES_CONFIG: dict[str, Any] = {
    "pyramid": {"factor": 0.709, "max_side": 4096, "min_padded_side": 16, "padded_multiple": 16},
    "thresholds": {"proposal": 0.6, "refine": 0.7},
    "nms": {"proposal_level": 0.5, "proposal": 0.7, "refine": 0.7, "output_min_overlap": 0.7},
    "expressions": list(EXPRESSIONS),
    "max_crops_per_forward": 512,
    "max_proposals_per_level": 2000,
}
FACE_CROPS_PT2 = Pt2Shapes(batch=FACES_CONFIG["max_crops_per_forward"])


def _face_part(
    name: str, build: Callable[[], nn.Module], example: tuple[int, int, int], wheel: WheelWeights, pt2: Pt2Shapes
) -> PartRecipe:
    return PartRecipe(
        name=name,
        build=build,
        example_inputs=lambda batch: (example_pixels(batch, *example, seed=batch),),
        default_checkpoint=CHECKPOINTS / "faces" / f"{name}.pt",
        default_wheel=wheel,
        pt2=pt2,
    )


def _facenet_weights(network: str, sha256: str) -> WheelWeights:
    return WheelWeights("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{network}.pt", sha256)


FACE_PARTS = (
    # P-Net sees the pyramid's levels, padded: 16 px to the pyramid's largest side.
    _face_part(
        "pnet",
        PNet,
        (3, 64, 80),
        _facenet_weights("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
        Pt2Shapes(
            sides=(FACES_CONFIG["pyramid"]["min_padded_side"], FACES_CONFIG["pyramid"]["max_side"]),
            multiple=FACES_CONFIG["pyramid"]["padded_multiple"],
        ),
    ),
    _face_part(
        "rnet",
        RNet,
        (3, 24, 24),
        _facenet_weights("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
        FACE_CROPS_PT2,
    ),
    _face_part(
        "onet",
        ONet,
        (3, 48, 48),
        _facenet_weights("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
        FACE_CROPS_PT2,
    ),
    _face_part(
        "expression",
        ExpressionNet,
        (1, 48, 48),
        WheelWeights(
            "PyEmotion==1.0.0",
            "PyEmotion/model/main_model.pkl",
            "d2789940007ee6175130fefd3ed9a523a1afa4475fbdafbf64f2948db6c29537",
            key="network",
        ),
        FACE_CROPS_PT2,
    ),
)

# Detect then pose, in one worker: pose_pipeline, and pose_tracker on top of it.
PIPELINE_PARTS = (replace(PERSON_DETECTOR, name="detector"), _pose_part(50, name="pose"))
PIPELINE_CONFIG: dict[str, Any] = {"detector": DETECTOR_CONFIG, "pose": POSE_CONFIG, "limits": IMAGE_LIMITS}

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        _pose_recipe(50),
        _pose_recipe(101),
        _pose_recipe(152),
        _detector_recipe("person_detector", PERSON_DETECTOR, served_by_default=True),
        _detector_recipe("person_detector_mobilenet", PERSON_DETECTOR_MOBILENET, served_by_default=False),
        Recipe(
            name="keypoint_rcnn",
            parts=(KEYPOINT_RCNN,),
            handler="handlers.keypoint_rcnn.handler",
            handler_config={**KEYPOINT_RCNN_CONFIG, "limits": IMAGE_LIMITS},
            serving=DETECTION_SERVING,
            served_by_default=True,
        ),
        Recipe(
            name="pose_pipeline",
            parts=PIPELINE_PARTS,
            handler="handlers.pose_pipeline.handler",
            handler_config=PIPELINE_CONFIG,
            serving=DETECTION_SERVING,
            served_by_default=True,
        ),
        Recipe(
            name="pose_tracker",
            parts=PIPELINE_PARTS,
            handler="handlers.pose_tracker.handler",
            handler_config={**PIPELINE_CONFIG, "tracking": TRACKING_CONFIG},
            serving=TRACKER_SERVING,
            served_by_default=False,
        ),
        _segmenter_recipe(
            "person_segmenter",
            segmentation.deeplabv3_mobilenet_v3_large,
            "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
            served_by_default=True,
        ),
        _segmenter_recipe("person_segmenter_lraspp", *LIGHT_SEGMENTER, served_by_default=False),
        Recipe(
            name="faces",
            parts=FACE_PARTS,
            handler="handlers.faces.handler",
            handler_config={**FACES_CONFIG, "limits": IMAGE_LIMITS},
            serving=IMAGE_SERVING,
            served_by_default=True,
        ),
        # The smart filter: the light segmenter and the faces networks in one worker.
        Recipe(
            name="smart_filter",
            parts=(_segmenter_part(*LIGHT_SEGMENTER), *FACE_PARTS),
            handler="handlers.smart_filter.handler",
            handler_config={"segmenter": SEGMENTER_CONFIG, "faces": FACES_CONFIG, "limits": IMAGE_LIMITS},
            serving=IMAGE_SERVING,
            served_by_default=False,
        ),
        *_style_recipes(),
        *_generator_recipes(),
    )
}
DEFAULT_MODELS = [name for name, recipe in RECIPES.items() if recipe.served_by_default]


def recipe_named(name: str) -> Recipe:
    """The recipe of ``name``: a listed model, or a user's own generator named after its family (``cyclegan_*``,
    ``pix2pix_*``); ``KeyError`` else."""
    if name in RECIPES:
        return RECIPES[name]
    families = yaml.safe_load(GENERATORS_FILE.read_text())["families"]
    family, _, own = name.partition("_")
    if family in families and own:
        return generator_recipe(name, families[family])
    raise KeyError(name)
