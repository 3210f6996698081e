"""Published weights, fetched from a loopback HTTP server in each publisher's layout (the mirror setting points every
URL at it): pinned by digest, cached, loaded strictly, equal to what the publisher's own code computes; every failure
falls back to random weights with its reason; offline sends nothing. Nothing here reaches outside the machine."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import replace
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import requests
import torch
from skimage import data as photos
from torch import nn

from export import download
from export.archive import REPO
from export.pose import IMAGENET_MEAN, IMAGENET_STD, MMPOSE_SIMPLEBASELINE, PoseResNet
from export.registry import RECIPES
from export.style import TransformerNet
from export.weights import load_published_weights
from runtime.torchserve import TorchServe
from tests.conftest import server_overrides


class PublishedFiles(http.server.BaseHTTPRequestHandler):
    """Answers the files the test publishes, by URL path; paths under /truncated/ send half of a file whose
    Content-Length says whole, paths under /stalled/ wait longer than the download timeout first."""

    def do_GET(self):
        self.server.requests.append(self.path)
        path = urlsplit(self.path).path
        body = self.server.files.get(path.removeprefix("/truncated").removeprefix("/stalled"))
        if body is None:
            self.send_error(404)
            return
        if path.startswith("/stalled/"):
            time.sleep(2)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if path.startswith("/truncated/") else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def publisher(tmp_path, monkeypatch):
    """The loopback server (``files``: path -> bytes; ``requests``: the paths asked for), every URL mirrored to it and
    an empty download cache."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PublishedFiles)
    server.files, server.requests = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(download.MIRROR, server.url)
    monkeypatch.setenv(download.CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(download.TIMEOUT, "1")
    monkeypatch.delenv(download.OFFLINE, raising=False)
    yield server
    server.shutdown()


def publish(server, url: str, body: bytes) -> None:
    server.files[urlsplit(url).path] = body


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def mmpose_checkpoint(model: PoseResNet) -> bytes:
    """``model``'s weights as MMPose 0.x publishes a TopDown SimpleBaseline: meta and state_dict, the backbone and
    the keypoint head under their own prefixes."""
    head = ("deconv_layers.", "final_layer.")
    state = {
        (f"keypoint_head.{key}" if key.startswith(head) else f"backbone.{key}"): value
        for key, value in model.state_dict().items()
    }
    return saved({"meta": {"mmcv_version": "1.3.8", "time": "Thu Jul  9 12:00:00 2020"}, "state_dict": state})


def trained_pose_model() -> PoseResNet:
    torch.manual_seed(3)
    model = PoseResNet(50)
    for module in model.modules():  # running statistics unlike the initial ones, so that eval mode matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_mmpose_s_checkpoint_is_fetched_pinned_and_answers_bgr_crops_as_mmpose_answers_rgb_ones(publisher):
    reference = trained_pose_model()
    body = mmpose_checkpoint(reference)
    digest = hashlib.sha256(body).hexdigest()
    source = replace(MMPOSE_SIMPLEBASELINE[50], sha256=digest[:8])  # the name's prefix, for the test's own file
    publish(publisher, source.url, body)
    part = replace(RECIPES["pose_resnet50"].parts[0], default_checkpoint=None, published=(source,)).make()
    assert part.weights == {
        "source": "published",
        "pretrained": True,
        "url": source.url,
        "file": "res50_coco_256x192-ec54d7f3_20200709.pth",
        "sha256": digest,
        "pinned": digest[:8],
        "license": "Apache-2.0",
    }
    rgb = torch.randint(0, 256, (2, 3, 256, 192), generator=torch.Generator().manual_seed(1)).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # MMPose: RGB crops normalised in RGB order; the handler: BGR crops, the same statistics in BGR order (MSRA's).
    with torch.inference_mode():
        expected = reference((rgb - mean) / std)
        answer = part.module.eval()((rgb.flip(1) - mean) / std)
    assert (answer - expected).abs().max() < 1e-4 * expected.abs().max()


def test_a_file_that_is_not_the_pinned_one_is_refused_naming_url_and_digests(publisher, capsys):
    source = MMPOSE_SIMPLEBASELINE[50]  # pinned to the real file's ec54d7f3
    body = mmpose_checkpoint(trained_pose_model())
    publish(publisher, source.url, body)
    _, record = load_published_weights(PoseResNet(50), (source,))
    digest = hashlib.sha256(body).hexdigest()
    assert record["source"] == "random" and not record["pretrained"]
    assert (
        f"{publisher.url}{urlsplit(source.url).path} has sha256 {digest}, not the pinned ec54d7f3" in record["reason"]
    )
    assert "RANDOM weights" in capsys.readouterr().err
    assert list(download.cached_path(source.url).parent.iterdir()) == []  # nothing kept, no partial file


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [("/missing", "HTTP Error 404"), ("/truncated", "was truncated"), ("/stalled", "timed out")],
)
def test_unreachable_files_fall_back_to_random_weights_with_the_reason(publisher, monkeypatch, prefix, reason):
    body = mmpose_checkpoint(trained_pose_model())
    source = replace(MMPOSE_SIMPLEBASELINE[50], sha256=hashlib.sha256(body).hexdigest())
    publish(publisher, source.url, body)
    monkeypatch.setenv(download.MIRROR, publisher.url + prefix)
    model, record = load_published_weights(PoseResNet(50), (source,))
    assert record["source"] == "random" and reason in record["reason"], record
    assert isinstance(model, PoseResNet)
    assert not download.cached_path(source.url).parent.exists() or not any(
        download.cached_path(source.url).parent.iterdir()
    )


def test_the_next_source_is_tried_and_a_second_export_uses_the_cache_without_a_request(publisher):
    body = mmpose_checkpoint(trained_pose_model())
    source = replace(MMPOSE_SIMPLEBASELINE[50], sha256=hashlib.sha256(body).hexdigest())
    publish(publisher, source.url, body)
    gone = replace(source, url="https://example.org/gone.pth")
    _, first = load_published_weights(PoseResNet(50), (gone, source))
    _, second = load_published_weights(PoseResNet(50), (source,))
    assert first["source"] == second["source"] == "published"
    assert publisher.requests == ["/gone.pth", urlsplit(source.url).path]


def test_offline_sends_no_request(publisher, monkeypatch):
    body = mmpose_checkpoint(trained_pose_model())
    source = replace(MMPOSE_SIMPLEBASELINE[50], sha256=hashlib.sha256(body).hexdigest())
    publish(publisher, source.url, body)
    monkeypatch.setenv(download.OFFLINE, "1")
    _, record = load_published_weights(PoseResNet(50), (source,))
    assert record["source"] == "random" and "offline" in record["reason"]
    assert publisher.requests == []


def stale_style(seed: int) -> dict[str, torch.Tensor]:
    """A TransformerNet state dict as the examples saved theirs: with InstanceNorm running statistics."""
    torch.manual_seed(seed)
    state = TransformerNet().state_dict()
    for key in [key for key in state if key.split(".")[-2].startswith("in") and key.endswith(".weight")]:
        channels = state[key].shape[0]
        state[key.replace(".weight", ".running_mean")] = torch.randn(channels)
        state[key.replace(".weight", ".running_var")] = torch.rand(channels) + 0.5
    return state


def examples_saved_models() -> tuple[bytes, dict[str, dict[str, torch.Tensor]]]:
    """The examples' saved_models.zip: the four styles under saved_models/."""
    styles = {name: stale_style(n) for n, name in enumerate(("candy", "mosaic", "rain_princess", "udnie"))}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, state in styles.items():
            archive.writestr(f"saved_models/{name}.pth", saved(state))
    return buffer.getvalue(), styles


def test_the_four_styles_come_from_one_archive_fetched_once(publisher, capsys):
    body, styles = examples_saved_models()
    url = RECIPES["style_candy"].parts[0].published[0].url
    publish(publisher, url, body)
    for name, state in styles.items():
        part = replace(RECIPES[f"style_{name}"].parts[0], default_checkpoint=None).make()
        assert part.weights["source"] == "published" and part.weights["pinned"] == "nothing published"
        assert part.weights["file"] == f"saved_models.zip:saved_models/{name}.pth"
        loaded = part.module.network.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in state.items() if "running" not in key)
    assert publisher.requests == ["/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"]
    assert f"publishes no digest; the fetched file's is {hashlib.sha256(body).hexdigest()}" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["cyclegan_style_vangogh", "pix2pix_edges2shoes"])
def test_the_reference_generators_load_with_their_pre_0_4_norm_statistics(publisher, model):
    torch.manual_seed(4)
    recipe = RECIPES[model].parts[0]
    network = recipe.build()
    state = network.state_dict()
    for name, module in network.named_modules():
        if isinstance(module, nn.InstanceNorm2d):  # tracked before PyTorch 0.4, ignored since
            state[f"{name}.running_mean"], state[f"{name}.running_var"] = torch.zeros(64), torch.ones(64)
    state = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    publish(publisher, recipe.published[0].url, saved(state))
    part = replace(recipe, default_checkpoint=None).make()
    assert part.weights["source"] == "published" and part.weights["license"] == "BSD"
    loaded = part.module.network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if key in loaded)
    assert sum(key not in loaded for key in state) == (23 if model.startswith("cyclegan") else 0) * 2


def test_the_served_style_equals_the_eager_network_and_the_export_offline_sends_nothing(publisher, tmp_path):
    body, styles = examples_saved_models()
    publish(publisher, RECIPES["style_candy"].parts[0].published[0].url, body)
    store = tmp_path / "store"
    environment = {**os.environ, download.OFFLINE: ""}
    offline = subprocess.run(
        [sys.executable, "-m", "export", "style_candy", "--offline", "--store", str(store), "--format", "torchscript"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert offline.returncode == 0 and "RANDOM weights" in offline.stderr and publisher.requests == []
    fetched = subprocess.run(
        [sys.executable, "-m", "export", "style_candy", "--store", str(store), "--format", "torchscript"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert fetched.returncode == 0 and "RANDOM weights" not in fetched.stderr, fetched.stderr
    network = TransformerNet().eval()
    network.load_state_dict({key: value for key, value in styles["candy"].items() if "running" not in key})
    photo = photos.astronaut()  # 512 x 512: no padding, no resizing
    with TorchServe(tmp_path / "run", ["style_candy"], store, overrides=server_overrides(store)).running() as server:
        answer = requests.post(
            f"{server.inference_url}/predictions/style_candy",
            files={"data": cv2.imencode(".png", photo[:, :, ::-1])[1].tobytes()},
            data={"format": "png"},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    served = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    with torch.inference_mode():
        styled = network(torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float())
    expected = styled.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_the_list_names_each_source_its_licence_and_whether_it_is_cached(publisher):
    from export.__main__ import weight_sources

    (part,) = RECIPES["style_candy"].parts
    before = weight_sources(replace(part, default_checkpoint=None))
    body, _ = examples_saved_models()
    publish(publisher, part.published[0].url, body)
    replace(part, default_checkpoint=None).make()
    after = weight_sources(replace(part, default_checkpoint=None))
    url = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1 (saved_models/candy.pth)"
    layout = f"{part.published[0].layout}; in pytorch/examples fast_neural_style/download_saved_models.py"
    assert before[0] == f"{url}, no published digest, BSD-3-Clause (not cached); {layout}"
    assert after[0] == before[0].replace("(not cached)", "(cached)")
    assert before[-1] == "else random weights, said loudly"
    (pose,) = RECIPES["pose_resnet50"].parts
    assert "res50_coco_256x192-ec54d7f3_20200709.pth, sha256 ec54d7f3..., Apache-2.0" in weight_sources(pose)[1]
