"""Segmentation steps on synthetic maps: the model size and its bounds, the RLE mask, the separable blur."""

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from skimage import data
from torchvision.transforms.v2 import functional as F

from export.segmentation import SEGMENTER_CONFIG, SEGMENTER_PT2
from handlers.core.images import decode_image
from handlers.core.schema import ImageLimits
from handlers.segmentation.steps import (
    SegmenterSpec,
    alpha_matte,
    cut_out,
    cut_out_on_device,
    gaussian_blur,
    gaussian_blur_on_device,
    mask_rle,
    person_mask,
)

SPEC = SegmenterSpec.from_config(SEGMENTER_CONFIG)


@pytest.mark.parametrize(
    ("size", "model_size"),
    [
        ((480, 640), (520, 693)),  # short side to 520
        ((1080, 1920), (520, 924)),
        ((100, 400), (520, 2080)),  # 4:1 still keeps the short side
        ((100, 800), (260, 2080)),  # longer: the long side is capped
        ((1, 40_000_000), (32, 2080)),  # a 40-megapixel strip: capped, and stretched to the least side
        ((3, 3), (520, 520)),
    ],
)
def test_model_size_keeps_the_aspect_within_the_exported_bounds(size, model_size):
    assert SPEC.model_size(*size) == model_size
    least, most = SEGMENTER_PT2.sides
    assert all(least <= side <= most for side in SPEC.model_size(*size))


@pytest.mark.parametrize("size", [(480, 640), (100, 800), (1, 40_000_000)])
def test_coarsest_decode_still_covers_the_model_size_on_the_capped_side(size):
    scale = SPEC.coarsest_scale(size, {"background": None})
    decoded = [side / scale for side in size]
    assert max(decoded) >= max(SPEC.model_size(*size)) - 0.5


@pytest.mark.parametrize(
    ("model_size", "size"), [((52, 70), (480, 640)), ((90, 60), (1081, 719)), ((64, 48), (40, 30))]
)
def test_rle_of_the_opencv_path_is_the_torch_mask(model_size, size):
    """The CPU path (OpenCV, transposed) and the device path (torch) give the same mask, pixel for pixel but a few."""
    generator = torch.Generator().manual_seed(sum(size))
    log_odds = torch.nn.functional.avg_pool2d(torch.randn(1, 1, *model_size, generator=generator) * 30, 5, 1, 2)[0, 0]
    for threshold in (0.3, 0.5, 0.9):
        expected = person_mask(log_odds, size, threshold).numpy()
        rle = mask_rle(log_odds, size, threshold)
        assert [int(v) for v in rle["size"]] == list(size)
        decoded = coco_mask.decode(rle).astype(bool)
        # Float rounding can flip pixels whose log-odds sit exactly at the threshold.
        assert (decoded != expected).mean() < 1e-3 and 0.05 < expected.mean() < 0.95


@pytest.mark.parametrize("sigma", [0.8, 2.0, 6.5])
def test_separable_blur_equals_torchvisions_2d_blur_inside(sigma):
    """OpenCV (the CPU path) and torch (as on a GPU) agree everywhere, and with torchvision away from the edges."""
    image = torch.rand(3, 60, 80)
    radius = int(np.ceil(3 * sigma))
    expected = F.gaussian_blur(image, [2 * radius + 1] * 2, [sigma] * 2)
    opencv, torch_path = gaussian_blur(image, sigma), gaussian_blur_on_device(image, sigma)
    assert torch.allclose(opencv, torch_path, atol=1e-5)
    inside = (slice(None), slice(radius, -radius), slice(radius, -radius))
    assert torch.allclose(opencv[inside], expected[inside], atol=1e-5)


@pytest.mark.parametrize(("height", "width", "sigma"), [(6, 6, 2.0), (48, 64, 16.0), (10, 2000, 20.0)])
def test_blur_takes_photos_smaller_than_its_kernel(height, width, sigma):
    image = torch.rand(1, height, width)
    assert torch.allclose(gaussian_blur(image, sigma), gaussian_blur_on_device(image, sigma), atol=1e-5)


@pytest.mark.parametrize("feather", [0.0, 2.0, 7.5])
def test_alpha_matte_of_the_opencv_path_is_the_torch_matte(feather):
    """uint8 OpenCV on the CPU against torch as on a GPU (its path is the mask, blurred, in floats)."""
    log_odds = torch.nn.functional.avg_pool2d(
        torch.randn(1, 1, 52, 70, generator=torch.Generator().manual_seed(3)) * 30, 5, 1, 2
    )[0, 0]
    size = (480, 640)
    expected = person_mask(log_odds, size, 0.5).float()
    if feather:
        expected = gaussian_blur_on_device(expected[None], feather)[0]
    alpha = alpha_matte(log_odds, size, 0.5, feather)
    assert alpha.dtype == torch.uint8 and alpha.shape == size
    assert (alpha.float() - expected * 255).abs().max() <= 2.5  # OpenCV's fixed-point blur rounds


@pytest.mark.parametrize("layout", ["decoder's RGBX", "RGB planes", "RGB channels-last"])
def test_cut_out_zeroes_the_background_and_keeps_the_person_exact(layout):
    """Where alpha is 0 the answer carries nothing of the photo; elsewhere its exact pixels and the alpha as given."""
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(data.astronaut(), (64, 48)))
    decoded = decode_image(jpeg.tobytes(), ImageLimits())
    assert decoded.stride()[0] == 1  # the decoder's RGBX buffer behind an RGB view
    image = {
        "decoder's RGBX": decoded,
        "RGB planes": decoded.contiguous(),
        "RGB channels-last": decoded.permute(1, 2, 0).contiguous().permute(2, 0, 1),
    }[layout]
    alpha = torch.zeros(48, 64, dtype=torch.uint8)
    alpha[10:40, 20:50] = 255
    alpha[9, 20:50] = 1  # a feathered edge: visible, however faintly
    rgba = cut_out(image, alpha)
    assert rgba.shape == (4, 48, 64) and rgba.dtype == torch.uint8
    assert (rgba[3] == alpha).all()
    assert (rgba[:3, alpha > 0] == decoded[:, alpha > 0]).all()
    assert (rgba[:3, alpha == 0] == 0).all() and (decoded[:, alpha == 0] > 0).any()
    assert (cut_out_on_device(image, alpha) == rgba).all()
