"""Box widening, crop mapping and batched crop-and-resize against OpenCV's warpAffine."""

import cv2
import numpy as np
import pytest
import torch

from handlers.vision.geometry import crop_and_resize, crop_to_image, image_to_crop, roi_crops, warp_crops, widen_boxes

CROP = (256, 192)


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """An RGB float image with gentle gradients, so interpolation differences stay small."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127 + 120 * np.sin(xs / rng.uniform(15, 40) + rng.uniform(0, 6)) * np.cos(ys / rng.uniform(15, 40))
        for _ in range(3)
    ]
    return np.stack(channels, axis=2).astype(np.float32)


def warp_reference(image: np.ndarray, box: list[float], size: tuple[int, int]) -> np.ndarray:
    """OpenCV crop: crop pixel index j (centre j + 0.5) samples image index x1 + (j + 0.5) * sx - 0.5."""
    x1, y1, x2, y2 = box
    sx, sy = (x2 - x1) / size[1], (y2 - y1) / size[0]
    crop_to_image_index = np.array([[sx, 0, x1 + 0.5 * sx - 0.5], [0, sy, y1 + 0.5 * sy - 0.5]], dtype=np.float64)
    return cv2.warpAffine(
        image,
        crop_to_image_index,
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def test_widened_boxes_have_the_crop_aspect_ratio_same_centre_and_contain_the_box():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 60.0], [5.0, 5.0, 25.0, 305.0], [0.0, 0.0, 192.0, 256.0]])
    wide = widen_boxes(boxes, aspect_ratio=0.75, padding=1.25)
    width, height = wide[:, 2] - wide[:, 0], wide[:, 3] - wide[:, 1]
    assert torch.allclose(width / height, torch.full((3,), 0.75))
    assert torch.allclose((wide[:, :2] + wide[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    assert (wide[:, :2] < boxes[:, :2]).all() and (wide[:, 2:] > boxes[:, 2:]).all()
    assert torch.allclose(wide[2], torch.tensor([-24.0, -32.0, 216.0, 288.0]))


def test_crop_and_image_points_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 160.0], [-50.0, 5.0, 250.0, 405.0]])
    points = torch.rand(2, 17, 2) * torch.tensor([192.0, 256.0])
    image_points = crop_to_image(points, boxes, CROP)
    assert torch.allclose(image_to_crop(image_points, boxes, CROP), points, atol=1e-4)
    corners = crop_to_image(torch.tensor([[[0.0, 0.0], [192.0, 256.0]]]).expand(2, 2, 2), boxes, CROP)
    assert torch.allclose(corners.flatten(1), boxes)


@pytest.mark.parametrize("box", [[40.3, 25.7, 190.1, 225.2], [100.0, 50.0, 148.0, 114.0], [3.5, 2.25, 397.75, 297.5]])
def test_crop_matches_opencv_warp_affine(box):
    image = smooth_image(300, 400, seed=1)
    ours = (
        crop_and_resize([torch.from_numpy(image).permute(2, 0, 1)], torch.tensor([box]), torch.tensor([0]), CROP)[0]
        .permute(1, 2, 0)
        .numpy()
    )
    reference = warp_reference(image, box, CROP)
    # OpenCV quantises sample positions to 1/32 pixel; the image changes by at most ~8 per pixel.
    assert np.abs(ours - reference).max() < 0.5


def test_crop_reads_zero_outside_the_image():
    image = torch.full((3, 100, 100), 200, dtype=torch.uint8)
    crop = crop_and_resize([image], torch.tensor([[-100.0, 0.0, 100.0, 100.0]]), torch.tensor([0]), (50, 100))[0]
    assert (crop[:, :, :45] == 0).all()
    assert (crop[:, :, 55:] == 200).all()


def test_mixed_sizes_in_one_call_equal_one_image_at_a_time():
    images = [
        torch.from_numpy(smooth_image(h, w, seed=h)).permute(2, 0, 1).contiguous()
        for h, w in ((300, 400), (500, 260), (300, 400), (120, 90))
    ]
    boxes = torch.tensor(
        [
            [10.0, 10.0, 200.0, 290.0],
            [0.0, 0.0, 260.0, 500.0],
            [50.0, 60.0, 70.0, 90.0],
            [-30.0, 20.0, 100.0, 200.0],
            [5.0, 5.0, 80.0, 110.0],
            [100.0, 0.0, 400.0, 300.0],
        ]
    )
    image_index = torch.tensor([0, 1, 2, 2, 3, 0])
    together = crop_and_resize(images, boxes, image_index, CROP)
    for n in range(len(boxes)):
        alone = crop_and_resize([images[image_index[n]]], boxes[n : n + 1], torch.tensor([0]), CROP)
        assert torch.allclose(together[n], alone[0], atol=1e-4), f"person {n}"


def test_opencv_and_roi_align_paths_cut_the_same_uint8_crops():
    """The CPU path (OpenCV warps on uint8) against the device path (roi_align on float), run on the CPU."""
    images = [
        torch.from_numpy(smooth_image(h, w, seed=h).round().astype(np.uint8)).permute(2, 0, 1)
        for h, w in ((300, 400), (120, 90))
    ]
    boxes = torch.tensor([[10.5, 10.25, 200.0, 290.0], [-30.0, 20.0, 100.0, 200.0], [5.0, 5.0, 80.0, 110.0]])
    image_index = torch.tensor([0, 0, 1])
    warped = warp_crops(images, boxes, image_index, CROP)
    aligned = roi_crops(images, boxes, image_index, CROP)
    assert warped.dtype == torch.uint8 and aligned.dtype == torch.float32
    # They differ only in how they blend the image's edge into the 0 outside: compare where
    # every sample is well inside, which is where a crop of an all-white image is white.
    white = [torch.full_like(image, 255) for image in images]
    inside = (warp_crops(white, boxes, image_index, CROP) == 255) & (roi_crops(white, boxes, image_index, CROP) == 255)
    assert inside.float().mean() > 0.7
    assert (warped.float() - aligned)[inside].abs().max() <= 1.5  # OpenCV rounds to uint8 and to 1/32 pixel


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_crops_of_a_reduced_image_match_crops_of_the_whole_image(scale):
    """Boxes stay in image pixels when the image was decoded at 1/scale: the crop shows the same place.

    On linear ramps, block means (what DCT scaling computes) equal the ramp at the block
    centre and bilinear sampling is exact, so any misplacement shows: 0.5 px is 0.17 here.
    """
    ys, xs = np.mgrid[0:480, 0:640] + 0.5
    image = np.stack([0.35 * xs, 0.3 * ys + 20, 0.2 * xs + 0.2 * ys], axis=2).astype(np.float32)
    reduced = image.reshape(480 // scale, scale, 640 // scale, scale, 3).mean(axis=(1, 3))
    boxes = torch.tensor([[100.0, 40.0, 400.0, 440.0], [-80.0, -60.0, 720.0, 540.0]])
    index = torch.tensor([0, 0])
    whole = crop_and_resize([torch.from_numpy(image).permute(2, 0, 1)], boxes, index, CROP)
    small = crop_and_resize([torch.from_numpy(reduced).permute(2, 0, 1)], boxes, index, CROP, scales=[scale])
    white = [torch.full((1, 480 // scale, 640 // scale), 1.0)]
    inside = (
        crop_and_resize(white, boxes, index, CROP, scales=[scale]).expand_as(small) == 1
    )  # samples away from the edge
    assert (whole - small)[inside].abs().max() < 0.05
