"""One recipe per model: architecture, weights, input facts, handler and serving settings."""

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from torch import Tensor, nn

from .archive import REPO, Package, Serving
from .architectures import PoseResNet, example_crops
from .weights import StateDictAdapter

CHECKPOINTS = REPO / "checkpoints"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# The MSRA SimpleBaseline release, as trained by its own code:
# - images are read with cv2.imread (BGR) and never converted, so the ImageNet
#   statistics are applied to B, G, R channels in that order;
# - the crop maps the box centre to crop pixel index (w/2, h/2), i.e. continuous
#   w/2 + 0.5, and a joint's target peak sits at heatmap index crop_index / 4. In our
#   continuous crop frame (box centre at w/2) heatmap index u is therefore crop
#   point 4u: offset 0 (and flip test realigns by one column, as SHIFT_HEATMAP did).
SIMPLEBASELINE_INPUT = {"height": 256, "width": 192, "channels": "bgr", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
SIMPLEBASELINE_HEATMAP = {"stride": 4, "offset": 0.0, "sigma": 2.0, "refine": "dark"}
IMAGE_LIMITS = {"max_image_bytes": 20 * 1024 * 1024, "max_image_pixels": 40_000_000}

POSE_HANDLER_CONFIG: dict[str, Any] = {
    "input": SIMPLEBASELINE_INPUT,
    "heatmap": SIMPLEBASELINE_HEATMAP,
    "box_padding": 1.25,
    "max_crops_per_forward": 64,
    "limits": IMAGE_LIMITS,
}


@dataclass(frozen=True)
class Recipe:
    """How to build, weigh and archive one model."""

    name: str
    build: Callable[[], nn.Module]
    example_inputs: Callable[[int], tuple[Tensor, ...]]
    handler: str
    handler_modules: tuple[str, ...]
    handler_config: dict[str, Any]
    serving: Serving
    default_checkpoint: Optional[Path] = None
    adapt_state_dict: Optional[StateDictAdapter] = None
    torchscript: str = "trace"
    served_by_default: bool = False

    def package(self, module: nn.Module, serving: Optional[Serving] = None) -> Package:
        """The archive contents for ``module`` built by this recipe."""
        return Package(
            name=self.name,
            module=module,
            example_inputs=self.example_inputs,
            handler=self.handler,
            handler_modules=self.handler_modules,
            handler_config=self.handler_config,
            serving=serving or self.serving,
            torchscript=self.torchscript,
        )


def _pose_crops(batch: int) -> tuple[Tensor, ...]:
    return (example_crops(batch, SIMPLEBASELINE_INPUT["height"], SIMPLEBASELINE_INPUT["width"], seed=batch),)


# Serving defaults (issue 6 tunes them under load): batch 8 because batching pays even on
# CPU (ResNet-50 256x192 on 2 cores: 95 ms for 1 crop, 427 ms for 8, 1.8x the throughput)
# and fills a GPU far better; a 20 ms batch delay costs little latency next to a 100+ ms
# model call; one worker, since torch already uses every CPU core and a GPU wants one
# worker each; 120 s covers a full batch of 64-box requests with flip test on CPU.
POSE_SERVING = Serving(batch_size=8, max_batch_delay_ms=20, workers=1, response_timeout_s=120)


def _pose_resnet(depth: int) -> Recipe:
    return Recipe(
        name=f"pose_resnet{depth}",
        build=partial(PoseResNet, depth),
        example_inputs=_pose_crops,
        handler="pose_handler.py",
        handler_modules=("pose.py",),
        handler_config=POSE_HANDLER_CONFIG,
        serving=POSE_SERVING,
        default_checkpoint=CHECKPOINTS / f"pose_resnet_{depth}_256x192.pth.tar",
        served_by_default=depth == 50,
    )


RECIPES: dict[str, Recipe] = {r.name: r for r in (_pose_resnet(50), _pose_resnet(101), _pose_resnet(152))}
DEFAULT_MODELS = [name for name, recipe in RECIPES.items() if recipe.served_by_default]
