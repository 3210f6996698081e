"""Real architectures (keys, shapes, TorchScript) and the export command's archive."""

import hashlib
import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.models import detection
from torchvision.models import get_weight as torchvision_weights

from export.archive import HANDLERS, REPO, Part, to_torchscript
from export.detection import PersonBoxPredictor
from export.pose import PoseResNet
from export.recipe import example_images
from export.registry import RECIPES
from export.weights import choose_weights

BN = ("weight", "bias", "running_mean", "running_var")
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def msra_simplebaseline_keys(depth: int) -> set[str]:
    """State-dict keys of the MSRA SimpleBaseline release (PyTorch 0.4: no num_batches_tracked)."""
    keys = {"conv1.weight", *(f"bn1.{p}" for p in BN), "final_layer.weight", "final_layer.bias"}
    for layer, count in enumerate(BLOCKS[depth], start=1):
        for block in range(count):
            prefix = f"layer{layer}.{block}"
            for i in (1, 2, 3):
                keys |= {f"{prefix}.conv{i}.weight", *(f"{prefix}.bn{i}.{p}" for p in BN)}
            if block == 0:
                keys |= {f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{p}" for p in BN)}
    for conv in (0, 3, 6):
        keys |= {f"deconv_layers.{conv}.weight", *(f"deconv_layers.{conv + 1}.{p}" for p in BN)}
    return keys


def msra_style_checkpoint(path: Path, depth: int = 50, wrapped: bool = True) -> dict[str, torch.Tensor]:
    """Save random weights the way the MSRA release stores them (the same every time: compiled packages are cached);
    return the bare state dict."""
    with torch.random.fork_rng():
        torch.manual_seed(depth)
        state = {k: v for k, v in PoseResNet(depth).state_dict().items() if not k.endswith("num_batches_tracked")}
        state = {k: v + torch.rand_like(v.float()).to(v.dtype) for k, v in state.items()}  # differ from any fresh init
    saved = {"epoch": 140, "state_dict": {f"module.{k}": v for k, v in state.items()}} if wrapped else state
    torch.save(saved, path)
    return state


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_pose_resnet_keys_match_the_msra_release(depth):
    ours = {k for k in PoseResNet(depth).state_dict() if not k.endswith("num_batches_tracked")}
    assert ours == msra_simplebaseline_keys(depth)


def test_pose_resnet_shapes_of_published_layers():
    state = PoseResNet(50).state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert state["deconv_layers.0.weight"].shape == (2048, 256, 4, 4)  # ConvTranspose2d: [in, out, k, k]
    assert state["deconv_layers.6.weight"].shape == (256, 256, 4, 4)
    assert state["final_layer.weight"].shape == (17, 256, 1, 1)


@pytest.mark.parametrize("wrapped", [True, False])
def test_msra_checkpoint_loads_and_is_recorded(tmp_path, wrapped):
    path = tmp_path / "pose_resnet_50_256x192.pth.tar"
    saved = msra_style_checkpoint(path, wrapped=wrapped)
    model = PoseResNet(50)
    _, record = choose_weights(model, path, None, None)
    assert record == {
        "source": "checkpoint",
        "pretrained": True,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_checkpoint_of_another_depth_is_refused(tmp_path):
    path = tmp_path / "resnet101.pth"
    msra_style_checkpoint(path, depth=101)
    with pytest.raises(ValueError, match="does not fit PoseResNet: 0 missing keys .* unexpected keys"):
        choose_weights(PoseResNet(50), path, None, None)


def test_default_checkpoint_is_used_when_present_and_random_otherwise(tmp_path, capsys):
    path = tmp_path / "pose_resnet_50_256x192.pth.tar"
    assert choose_weights(PoseResNet(50), None, None, path)[1]["source"] == "random"
    assert "RANDOM weights" in capsys.readouterr().err
    msra_style_checkpoint(path)
    assert choose_weights(PoseResNet(50), None, None, path)[1]["source"] == "checkpoint"


def test_pose_resnet50_torchscript_matches_eager_and_heatmap_shape():
    part = RECIPES["pose_resnet50"].parts[0]
    model = part.build().eval()
    scripted = to_torchscript(Part("model", model, part.example_inputs, {}))  # raises if TorchScript and eager differ
    crops = torch.randn(3, 3, 256, 192)
    with torch.no_grad():
        heatmaps = scripted(crops)
        assert heatmaps.shape == (3, 17, 64, 48)
        assert torch.allclose(heatmaps, model(crops), rtol=1e-4, atol=1e-5)


def test_export_command_writes_a_self_contained_archive(tmp_path):
    checkpoint = tmp_path / "weights.pth"
    msra_style_checkpoint(checkpoint)
    store = tmp_path / "store"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "pose_resnet50",
            "--checkpoint",
            str(checkpoint),
            "--store",
            str(store),
            "--batch-size",
            "4",
            "--max-batch-delay",
            "7",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(store / "pose_resnet50.mar") as archive:
        names = set(archive.namelist())
        config = yaml.safe_load(archive.read("model-config.yaml"))
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    # The whole serving tree, whatever the family: the entry point names the handler through model-config.yaml.
    tree = {str(p.relative_to(HANDLERS.parent)) for p in HANDLERS.rglob("*.py") if "__pycache__" not in p.parts}
    assert tree <= names and "handlers/faces/steps.py" in tree
    assert {"model.pt2", "entry.py", "model-config.yaml"} <= names
    assert not any("__pycache__" in name for name in names)
    assert manifest["model"]["handler"] == "entry.py" and manifest["model"]["serializedFile"] == "model.pt2"
    assert config["handler"]["module"] == "handlers.pose.handler"
    assert (
        config["batchSize"] == 4 and config["maxBatchDelay"] == 7 and config["minWorkers"] == config["maxWorkers"] == 1
    )
    assert config["handler"]["compiled"]["model"]["format"] == "pt2"
    weights = config["handler"]["weights"]["model"]
    assert weights["source"] == "checkpoint"
    assert weights["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert config["handler"]["input"] == {
        "height": 256,
        "width": 192,
        "channels": "bgr",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }


def test_torchvision_weights_load_from_the_torch_cache(tmp_path, monkeypatch):
    """A file in torchvision's published format, in the torch hub cache, is found and loaded strictly."""
    name = "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"
    published = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).state_dict()
    url_name = Path(detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1.url).name
    (tmp_path / "checkpoints").mkdir()
    torch.save(published, tmp_path / "checkpoints" / url_name)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    part = RECIPES["person_detector_mobilenet"].parts[0].make(weights=name)
    assert part.weights["source"] == "torchvision" and part.weights["name"] == name
    assert part.weights["sha256"] == hashlib.sha256((tmp_path / "checkpoints" / url_name).read_bytes()).hexdigest()
    loaded = part.module.detector.state_dict()  # the archived model takes uint8 pixels around torchvision's
    assert torch.equal(loaded["backbone.body.0.0.weight"], published["backbone.body.0.0.weight"])
    assert isinstance(part.module.detector.roi_heads.box_predictor, PersonBoxPredictor)


def test_missing_torchvision_weights_fall_back_to_random_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HUMANSERVE_OFFLINE", "1")
    part = RECIPES["person_detector_mobilenet"].parts[0].make()
    assert part.weights["source"] == "random"
    assert "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1: offline" in part.weights["reason"]
    assert "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth is not in" in part.weights["reason"]
    assert "RANDOM weights" in capsys.readouterr().err


def test_person_box_predictor_keeps_the_person_probability_and_deltas():
    full = detection.faster_rcnn.FastRCNNPredictor(1024, 91)
    reduced = PersonBoxPredictor(full)
    features = torch.randn(50, 1024) * 3
    with torch.no_grad():
        logits, deltas = full(features)
        two_way, person_deltas = reduced(features)
    assert two_way.shape == (50, 2) and person_deltas.shape == (50, 8)
    assert torch.allclose(two_way.softmax(1)[:, 1], logits.softmax(1)[:, 1], atol=1e-6)
    assert torch.equal(person_deltas, torch.cat([deltas[:, :4], deltas[:, 4:8]], 1))


def test_person_detector_scripts_and_answers_people_only():
    part = RECIPES["person_detector"].parts[0].make(weights="random")
    scripted = to_torchscript(part)  # raises if TorchScript and eager differ
    with torch.no_grad():
        losses, detections = scripted(example_images(2, seed=5))
    assert losses == {} and len(detections) == 2
    for found in detections:
        assert set(found) == {"boxes", "labels", "scores"}
        assert found["boxes"].shape[1] == 4 and (found["labels"] == 1).all()


@pytest.mark.parametrize("name", ["person_detector", "person_detector_mobilenet", "keypoint_rcnn", "pose_pipeline"])
def test_detector_resize_in_the_handler_config_is_the_models_own(name):
    recipe = RECIPES[name]
    config = recipe.handler_config.get("detector", recipe.handler_config)
    transform = recipe.parts[0].build().transform  # the detector is the first part
    assert (config["min_size"], config["max_size"]) == (transform.min_size[-1], transform.max_size)


def test_each_recipe_config_is_its_handler_schema_and_reads_back_the_same():
    """The config contract: a recipe writes its handler's schema class, and the handler reads back what was written."""
    for name, recipe in RECIPES.items():
        module = importlib.import_module(recipe.handler)
        (handler,) = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]
        assert type(recipe.config) is handler.schema, name
        written = yaml.safe_load(yaml.safe_dump(recipe.handler_config, sort_keys=False))
        assert handler.schema.from_config(written) == recipe.config, name
        assert handler.schema.from_config(written).to_config() == written, name


def test_a_config_reads_its_values_as_their_field_types_and_absent_keys_with_defaults_as_the_defaults():
    recipe = RECIPES["pose_resnet50"]  # its limits, heatmap sigma and refinement, padding and crops are the defaults
    written = recipe.handler_config
    by_hand = {"input": {**written["input"], "height": "256"}, "heatmap": {"stride": 4, "offset": 0}}
    read = type(recipe.config).from_config(by_hand)
    assert read == recipe.config
    assert type(read.pose.crop_size[0]) is int and type(read.pose.stride) is float
    with pytest.raises(KeyError, match="offset"):
        type(recipe.config).from_config({**by_hand, "heatmap": {"stride": 4}})


def fast_neural_style_keys() -> set[str]:
    """State-dict keys of the PyTorch examples' fast-neural-style checkpoints (without their stale statistics)."""
    convs = ["conv1", "conv2", "conv3", "deconv1", "deconv2", "deconv3"]
    convs += [f"res{r}.conv{c}" for r in range(1, 6) for c in (1, 2)]
    norms = [f"in{i}" for i in range(1, 6)] + [f"res{r}.in{i}" for r in range(1, 6) for i in (1, 2)]
    return {f"{conv}.conv2d.{p}" for conv in convs for p in ("weight", "bias")} | {
        f"{norm}.{p}" for norm in norms for p in ("weight", "bias")
    }


def test_style_network_keys_match_the_examples_release():
    from export.style import TransformerNet

    assert set(TransformerNet().state_dict()) == fast_neural_style_keys()


def test_style_checkpoint_with_stale_instance_norm_statistics_loads(tmp_path):
    from export.style import TransformerNet

    published = {k: torch.randn_like(v) for k, v in TransformerNet().state_dict().items()}
    stale = {f"{norm}.running_{s}": torch.zeros(32) for norm in ("in1", "res3.in2") for s in ("mean", "var")}
    path = tmp_path / "candy.pth"
    torch.save({**published, **stale}, path)
    part = RECIPES["style_candy"].parts[0].make(checkpoint=path)
    assert part.weights["source"] == "checkpoint"
    loaded = part.module.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in published.items())


@pytest.mark.parametrize("size", [(332, 516), (256, 256), (100, 76), (8, 8)])
def test_style_network_answers_the_size_it_was_given(size):
    """Sides that are multiples of 4 (the handler pads others, ``style.stylize``)."""
    part = RECIPES["style_candy"].parts[0].make(weights="random")
    scripted = to_torchscript(part)
    with torch.no_grad():
        styled = scripted(torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8))
    assert styled.shape == (2, 3, *size) and styled.dtype == torch.uint8


@pytest.mark.parametrize("model", ["person_segmenter", "person_segmenter_lraspp"])
def test_segmenters_script_and_answer_one_log_odds_map_per_image(model):
    part = RECIPES[model].parts[0].make(weights="random")
    scripted = to_torchscript(part)  # raises if TorchScript and eager differ
    with torch.no_grad():
        log_odds = scripted(torch.randint(0, 256, (2, 3, 130, 170), dtype=torch.uint8))
    assert log_odds.shape == (2, 1, 130, 170)


def test_person_log_odds_are_the_person_probability():
    from export.segmentation import PersonLogOdds

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return {"out": self.logits}

    logits = torch.randn(3, 21, 5, 6)
    odds = PersonLogOdds(Fixed(logits))(torch.zeros(3, 3, 5, 6, dtype=torch.uint8))
    person = logits.softmax(dim=1)[:, 15:16]
    assert torch.allclose(torch.sigmoid(odds), person, atol=1e-6)


def test_segmenters_normalise_uint8_photos_with_their_weights_statistics():
    from export.recipe import IMAGENET_MEAN, IMAGENET_STD
    from export.segmentation import PersonLogOdds

    seen = []

    class Recording(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return {"out": torch.zeros(x.shape[0], 21, *x.shape[2:])}

    photos = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    PersonLogOdds(Recording())(photos)
    expected = (photos.float() / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    assert torch.allclose(seen[0], expected, atol=1e-5)
    weights = torchvision_weights(RECIPES["person_segmenter"].parts[0].default_weights).transforms()
    assert (list(weights.mean), list(weights.std)) == (IMAGENET_MEAN, IMAGENET_STD)


def test_segmenter_weights_names_resolve_to_torchvision_weights():
    for model in ("person_segmenter", "person_segmenter_lraspp"):
        weights = torchvision_weights(RECIPES[model].parts[0].default_weights)
        assert weights.meta["categories"][15] == "person"
        assert list(weights.transforms().resize_size) == [520]
