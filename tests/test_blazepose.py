"""BlazePose's steps without a server: anchors, weighted suppression, rotated crops and their way back, regions, and
the converted networks (from MediaPipe's wheel) on real photos; the random stand-in when the wheel cannot be had."""

import math

import numpy as np
import pytest
import torch
from skimage import data

import export.weights
from export.mediapipe import POSE_DETECTION, POSE_LANDMARK_FULL, ssd_anchor_centres
from export.pose_blazepose import BLAZEPOSE_DETECTOR, BLAZEPOSE_LANDMARKS, BLAZEPOSE_PARTS
from handlers.pose_blazepose.steps import (
    alignment_regions,
    blazepose_people,
    body_landmarks,
    box_regions,
    detect_bodies,
    letterbox_frames,
    weighted_nms,
)
from handlers.vision.geometry import (
    affine_crops,
    apply_affines,
    grid_sample_crops,
    invert_affines,
    square_crop_affines,
    warp_affine_crops,
)
from handlers.vision.keypoints import COCO_KEYPOINTS

# Hand-labelled on scikit-image's astronaut (512 x 512): image pixels, and how far BlazePose may be from each.
ASTRONAUT_JOINTS = {
    "nose": ((219, 128), 10),
    "left_eye": ((245, 103), 10),
    "right_eye": ((202, 103), 10),
    "left_shoulder": ((320, 235), 25),  # under the suit's padding: a joint's place is a judgement within ~20 px
    "right_shoulder": ((115, 230), 25),
}


def photo(name: str) -> torch.Tensor:
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def test_anchors_are_mediapipe_s_2254_in_output_order():
    anchors = ssd_anchor_centres(224, (8, 16, 32, 32, 32), 2)
    assert anchors.shape == (2254, 2)
    # 28 x 28 cells of stride 8 with 2 anchors each, row by row; then 14 x 14 of 16 with 2; then 7 x 7 of 32 with 6.
    assert anchors[:4].tolist() == [[4, 4], [4, 4], [12, 4], [12, 4]]
    assert anchors[2 * 28 * 28].tolist() == [8, 8] and anchors[2 * 28 * 28 + 2 * 14 * 14].tolist() == [16, 16]
    assert anchors[-6:].tolist() == [[208, 208]] * 6


def test_weighted_suppression_averages_each_cluster_by_score_and_keeps_its_best_score():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0.5, 0, 10.5, 10]], dtype=torch.float32)
    points = torch.tensor([[[0.0, 0.0]], [[4.0, 0.0]], [[9.0, 9.0]], [[1.0, 1.0]]])
    scores = torch.tensor([0.9, 0.6, 0.7, 0.5])
    kept_points, kept_scores = weighted_nms(boxes, points, scores, iou_threshold=0.3)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.7])
    expected = (0.9 * torch.tensor([0.0, 0.0]) + 0.6 * torch.tensor([4.0, 0.0]) + 0.5 * torch.tensor([1.0, 1.0])) / 2.0
    assert torch.allclose(kept_points[0, 0], expected) and kept_points[1, 0].tolist() == [9.0, 9.0]
    nobody = weighted_nms(boxes[:0], points[:0], scores[:0], 0.3)
    assert nobody[0].shape == (0, 1, 2) and nobody[1].shape == (0,)


def test_letterbox_frames_hold_each_photo_whole_in_a_centred_square():
    assert letterbox_frames([(400, 600), (300, 100)]).tolist() == [[0, -100, 600, 500], [-100, 0, 200, 300]]


@pytest.mark.parametrize("angle_degrees", [0.0, 30.0, -75.0, 180.0])
@pytest.mark.parametrize("scale", [1, 2])
def test_a_rotated_scaled_padded_crop_maps_back_to_the_photo_within_a_pixel(angle_degrees, scale):
    """Bright dots painted on a photo land in a rotated crop (partly outside the photo: padding) where the crop's map
    says, and the crop's points map back onto them, within 1 px; both samplers agree."""
    height, width = 240, 320
    image = torch.zeros((3, height, width), dtype=torch.uint8)
    dots = torch.tensor([[160.5, 120.5], [200.5, 90.5], [120.5, 150.5], [250.5, 60.5]])
    for x, y in dots.tolist():
        image[:, int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    centre, side, angle = (
        torch.tensor([[180.0, 100.0]]),
        torch.tensor([300.0]),
        torch.tensor([math.radians(angle_degrees)]),
    )
    crop_size = (128, 128)
    affines = square_crop_affines(centre, side, angle, crop_size)
    decoded = image[:, ::scale, ::scale].contiguous() if scale > 1 else image
    crops = affine_crops([decoded], affines, torch.zeros(1, dtype=torch.long), crop_size, [scale])
    in_crop = apply_affines(dots[None], invert_affines(affines))[0]
    for (u, v), (x, y) in zip(in_crop.tolist(), dots.tolist()):
        j, i = int(u), int(v)
        if scale == 1:  # one bright pixel per dot at least, where the map puts it
            assert crops[0, :, i - 1 : i + 2, j - 1 : j + 2].amax() > 100, (x, y, u, v)
    back = apply_affines(in_crop[None], affines)[0]
    assert (back - dots).abs().max() <= 1e-3
    assert crops[0, :, 0, 0].tolist() == [0, 0, 0]  # the padding corner lies outside the photo
    sampled = grid_sample_crops([decoded], affines / scale, torch.zeros(1, dtype=torch.long), crop_size)
    warped = warp_affine_crops([decoded], affines / scale, torch.zeros(1, dtype=torch.long), crop_size)
    assert (sampled - warped.float()).abs().max() <= 2  # OpenCV's fixed-point bilinear against torch's float


def test_regions_stand_the_body_upright_around_the_hips():
    upright = torch.tensor([[[100.0, 200.0], [100.0, 100.0], [0, 0], [0, 0]]])  # circle point above the hips
    lying = torch.tensor([[[100.0, 200.0], [200.0, 200.0], [0, 0], [0, 0]]])  # head to the right
    centre, side, angle = alignment_regions(upright, 1.25)
    assert centre.tolist() == [[100, 200]] and side.tolist() == [250] and angle.tolist() == pytest.approx([0.0])
    _, _, angle = alignment_regions(lying, 1.25)
    assert angle.tolist() == pytest.approx([math.pi / 2])
    # The crop's up (v decreasing) points from the hips to the circle point.
    affines = square_crop_affines(*alignment_regions(lying, 1.25), (256, 256))
    top_middle = apply_affines(torch.tensor([[[128.0, 0.0]]]), affines)[0, 0]
    assert top_middle.tolist() == pytest.approx([100 + 125, 200], abs=1e-3)
    centre, side, angle = box_regions(torch.tensor([[10.0, 20.0, 110.0, 220.0]]), 1.25)
    assert centre.tolist() == [[60, 120]] and side.tolist() == [250] and angle.tolist() == [0]


@pytest.fixture(scope="module")
def networks():
    """The detector and landmark networks converted from MediaPipe's wheel, or a skip saying why not."""
    parts = [part.make() for part in BLAZEPOSE_PARTS]
    if not all(part.weights["pretrained"] for part in parts):
        pytest.skip(f"MediaPipe's wheel could not be fetched: {parts[0].weights['reason']}")
    return [part.module.eval() for part in parts]


def people_of(networks, name: str, **options):
    detector, landmarks = networks
    image = photo(name)
    size = tuple(image.shape[-2:])
    with torch.no_grad():
        ((keypoints, _),) = detect_bodies(detector, [image], [size], [1], BLAZEPOSE_DETECTOR)
        regions = [alignment_regions(keypoints, BLAZEPOSE_LANDMARKS.roi_scale)]
        (bodies,) = body_landmarks(landmarks, [image], regions, [1], BLAZEPOSE_LANDMARKS)
    asked = {"score_threshold": None, "max_people": None, "landmarks": False, "mask": False, **options}
    return blazepose_people(bodies, size, asked)


def test_the_astronaut_s_face_and_shoulders_are_where_a_person_sees_them(networks):
    people = people_of(networks, "astronaut")
    assert len(people.scores) == 1 and people.scores[0] > 0.8
    for joint, ((x, y), bound) in ASTRONAUT_JOINTS.items():
        found = people.keypoints[0, COCO_KEYPOINTS.index(joint)]
        assert math.dist(found[:2].tolist(), (x, y)) <= bound, (joint, found.tolist())
        assert found[2] > 0.9


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_no_person_on_a_cup_or_a_cat(networks, name):
    assert len(people_of(networks, name).scores) == 0


def test_without_the_wheel_the_networks_are_random_stand_ins_of_the_same_shapes(monkeypatch):
    def offline(weights):
        raise OSError("no network")

    monkeypatch.setattr(export.weights, "fetch_wheel_member", offline)
    for model, example in ((POSE_DETECTION, (2, 3, 224, 224)), (POSE_LANDMARK_FULL, (2, 3, 256, 256))):
        network, record = model.read(None, None)
        assert record["source"] == "random" and "no network" in record["reason"]
        outputs = network(torch.randint(0, 256, example, dtype=torch.uint8))
        assert all(len(output) == 2 and torch.isfinite(output).all() for output in outputs)
    boxes, keypoints, scores = POSE_DETECTION.stand_in()(torch.zeros((1, 3, 224, 224), dtype=torch.uint8))
    assert boxes.shape == (1, 2254, 4) and keypoints.shape == (1, 2254, 4, 2) and scores.shape == (1, 2254)
    landmarks, pose, mask = POSE_LANDMARK_FULL.stand_in()(torch.zeros((1, 3, 256, 256), dtype=torch.uint8))
    assert landmarks.shape == (1, 39, 5) and pose.shape == (1,) and mask.shape == (1, 256, 256)
