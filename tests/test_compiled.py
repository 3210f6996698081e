""".pt2 archives (torch.export + AOTInductor) beside TorchScript: which models get which, agreement, bounds, load
failures.

The served oracle tests (pose, segmenter, style, pipeline) run on ``.pt2`` archives too:
``oracles.oracle_packages`` gives them the same export shapes as the real models.
"""

import json
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from export.archive import Build, Part, Pt2Shapes, to_pt2, to_torchscript
from export.registry import RECIPES
from handlers.core.models import ModelLoadError, load_model
from tests.fixtures.in_process import load_handler
from tests.fixtures.oracles import oracle_packages

PT2_MODELS = [
    "pose_resnet50",
    "person_segmenter_lraspp",
    "style_candy",
    "cyclegan_style_vangogh",
]  # the served real models torch.export takes
TORCHSCRIPT_MODELS = ["person_detector_mobilenet", "keypoint_rcnn"]


def archive_config(store: Path, model: str) -> tuple[dict, dict, set[str]]:
    """model-config.yaml, MANIFEST.json and the file names of ``store/MODEL.mar``."""
    with zipfile.ZipFile(store / f"{model}.mar") as archive:
        return (
            yaml.safe_load(archive.read("model-config.yaml")),
            json.loads(archive.read("MAR-INF/MANIFEST.json")),
            set(archive.namelist()),
        )


@pytest.mark.parametrize("model", PT2_MODELS)
def test_default_archives_are_pt2_where_torch_export_takes_the_model(model_store, model):
    config, manifest, names = archive_config(model_store, model)
    record = config["handler"]["compiled"]["model"]
    assert manifest["model"]["serializedFile"] == "model.pt2" and "model.pt2" in names and "model.pt" not in names
    assert (record["format"], record["file"], record["device"], record["precision"]) == (
        "pt2",
        "model.pt2",
        "cpu",
        "fp32",
    )
    assert record["torch"] == str(torch.__version__) and record["compile"]["inductor"] == {"freezing": True}
    assert record["compile"]["batch"][0] == 1


@pytest.mark.parametrize("model", TORCHSCRIPT_MODELS)
def test_detection_archives_stay_torchscript_and_say_why(model_store, model):
    config, manifest, names = archive_config(model_store, model)
    record = config["handler"]["compiled"]["model"]
    assert manifest["model"]["serializedFile"] == "model.pt" and "model.pt" in names
    assert record["format"] == "torchscript" and "torch.export cannot take" in record["why"]


def test_pipeline_archive_holds_a_torchscript_detector_and_a_pt2_pose_model(model_store):
    config, _, names = archive_config(model_store, "pipeline_oracle")
    compiled = config["handler"]["compiled"]
    assert {"model.pt", "pose.pt2"} <= names
    assert (compiled["model"]["format"], compiled["model"]["part"]) == ("torchscript", "detector")
    assert (compiled["pose"]["format"], compiled["pose"]["file"]) == ("pt2", "pose.pt2")


def test_describe_reports_the_compiled_format(server, model_store):
    metadata = server.describe("pose_resnet50")["customizedMetadata"]
    assert metadata["compiled"]["model"]["format"] == "pt2" and metadata["compiled"]["model"]["device"] == "cpu"
    assert server.describe("keypoint_rcnn")["customizedMetadata"]["compiled"]["model"]["format"] == "torchscript"


def both_formats(part: Part, batch_size: int, tmp_path: Path):
    """The part compiled both ways: (TorchScript module, loaded .pt2 package)."""
    record = to_pt2(part, Build(), batch_size, tmp_path / f"{part.name}.pt2")
    return to_torchscript(part), load_model(str(tmp_path), record, torch.device("cpu"))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / a.double().norm().clamp(min=1e-12))


def test_pose_pt2_agrees_with_torchscript_for_every_batch_size(tmp_path):
    """Random weights (the archive's: export seeds them); batches 1 to the archive's and the most crops per call."""
    part = RECIPES["pose_resnet50"].parts[0].make(weights="random")
    scripted, package = both_formats(part, 4, tmp_path)
    for batch in (1, 2, 3, 4, 64):
        (crops,) = part.example_inputs(batch)
        with torch.inference_mode():
            expected, heatmaps = scripted(crops), package(crops)
        assert heatmaps.shape == (batch, 17, 64, 48)
        assert relative_error(expected, heatmaps) < 1e-4, batch


@pytest.mark.parametrize("model", ["person_segmenter_lraspp", "style_candy", "cyclegan_style_vangogh"])
def test_whole_image_pt2_agrees_with_torchscript_for_every_batch_and_picture_size(model, tmp_path):
    part = RECIPES[model].parts[0].make(weights="random")
    scripted, package = both_formats(part, 4, tmp_path)
    least, most = part.pt2.sides
    step = part.pt2.multiple
    # Both ends of the bounds, an ordinary photo and a long thin one.
    sizes = [(least, least), (520, 692), (least, most // step * step), (96 // step * step, 131 // step * step)]
    generator = torch.Generator().manual_seed(5)
    for batch, size in zip((1, 2, 3, 4), sizes):
        photos = torch.randint(0, 256, (batch, 3, *size), generator=generator, dtype=torch.uint8)
        with torch.inference_mode():
            expected, answer = scripted(photos), package(photos)
        assert answer.shape == expected.shape, (batch, size)
        if answer.dtype == torch.uint8:  # styled pixels: rounding may move a value by one level
            assert (answer.int() - expected.int()).abs().max() <= 1, (batch, size)
        else:
            assert relative_error(expected, answer) < 1e-4, (batch, size)


@pytest.mark.parametrize("oracle", ["pose_oracle", "segmenter_oracle", "style_oracle"])
def test_oracle_pt2_agrees_with_torchscript_for_every_batch_size(oracle, tmp_path):
    (package,) = [p for p in oracle_packages() if p.name == oracle]
    (part,) = package.parts
    scripted, compiled = both_formats(part, package.serving.batch_size, tmp_path)
    for batch in range(1, package.serving.batch_size + 1):
        inputs = part.example_inputs(batch)
        with torch.inference_mode():
            expected, answer = scripted(*inputs), compiled(*inputs)
        assert relative_error(expected.float(), answer.float()) < 1e-3, batch


class TinyNet(nn.Module):
    """Two convolutions: cheap to compile."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_part() -> Part:
    torch.manual_seed(0)
    module = TinyNet().eval()
    return Part(
        "model",
        module,
        lambda n: (torch.randn(n, 3, 24, 20, generator=torch.Generator().manual_seed(n)),),
        {},
        pt2=Pt2Shapes(batch=4),
    )


def test_bf16_package_computes_in_bf16_and_answers_float32(tmp_path):
    part = tiny_part()
    record = to_pt2(part, Build(precision="bf16"), 4, tmp_path / "model.pt2")  # checks against eager under autocast
    package = load_model(str(tmp_path), record, torch.device("cpu"))
    (x,) = part.example_inputs(3)
    with torch.inference_mode():
        answer, full = package(x), part.module(x)
    assert record["precision"] == "bf16" and answer.dtype == torch.float32
    assert 0 < relative_error(full, answer) < 3e-2  # bf16 differs from fp32, within its precision


def test_non_contiguous_inputs_give_the_same_answer(tmp_path):
    part = tiny_part()
    record = to_pt2(part, Build(), 4, tmp_path / "model.pt2")
    package = load_model(str(tmp_path), record, torch.device("cpu"))
    (x,) = part.example_inputs(2)
    channels_last = x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(package(channels_last), package(x))


def test_package_for_another_device_or_torch_is_refused_with_a_message(tmp_path):
    part = tiny_part()
    record = to_pt2(part, Build(), 4, tmp_path / "model.pt2")
    with pytest.raises(
        ModelLoadError, match=r"model.pt2 is compiled for cpu but this worker runs on cuda:0.*--device cuda"
    ):
        load_model(str(tmp_path), record, torch.device("cuda:0"))
    with pytest.raises(ModelLoadError, match=r"compiled with torch 2.13.0 but this worker has torch .*re-export"):
        load_model(str(tmp_path), {**record, "torch": "2.13.0"}, torch.device("cpu"))
    (tmp_path / "model.pt2").write_bytes(b"not a package")
    with pytest.raises(ModelLoadError, match=r"model.pt2 \(compiled for cpu with torch .*\) failed to load on cpu"):
        load_model(str(tmp_path), record, torch.device("cpu"))


def test_worker_start_fails_with_the_message_for_a_package_from_another_torch(model_store, tmp_path):
    """The handler's initialize (what a worker runs at start) refuses the package; no request is ever needed."""
    with zipfile.ZipFile(model_store / "style_oracle.mar") as archive:
        archive.extractall(tmp_path)
    config = yaml.safe_load((tmp_path / "model-config.yaml").read_text())
    config["handler"]["compiled"]["model"]["torch"] = "2.99.0"
    with pytest.raises(ModelLoadError, match="compiled with torch 2.99.0"):
        load_handler(tmp_path, config)
