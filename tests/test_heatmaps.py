"""Heatmap decoding on synthetic Gaussians with known sub-pixel centres."""

import pytest
import torch

from handlers.vision.heatmaps import decode_heatmaps, flip_back, peaks
from handlers.vision.keypoints import COCO_KEYPOINTS, mirror_index

HEIGHT, WIDTH = 64, 48


def gaussians(centres: torch.Tensor, sigma: float, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """Unit-peak Gaussians ``[N, K, h, w]`` centred on ``centres[N, K, 2]`` (heatmap pixel indices)."""
    x = torch.arange(width, dtype=torch.float64)
    y = torch.arange(height, dtype=torch.float64)
    gx = torch.exp(-0.5 * ((x - centres[..., 0:1]) / sigma) ** 2)
    gy = torch.exp(-0.5 * ((y - centres[..., 1:2]) / sigma) ** 2)
    return (gy.unsqueeze(-1) * gx.unsqueeze(-2)).float()


def random_centres(n: int, k: int, margin: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, k, 2, generator=generator, dtype=torch.float64)
    low = torch.tensor([margin, margin], dtype=torch.float64)
    span = torch.tensor([WIDTH - 1 - 2 * margin, HEIGHT - 1 - 2 * margin], dtype=torch.float64)
    return low + unit * span


def decode_in_heatmap_pixels(heatmaps: torch.Tensor, refine: str, sigma: float = 2.0) -> torch.Tensor:
    """Decode with an identity crop: box [0, 0, w, h], stride 1, offset 0 -> heatmap pixel indices."""
    n = heatmaps.shape[0]
    box = torch.tensor([[0.0, 0.0, WIDTH, HEIGHT]]).expand(n, 4)
    return decode_heatmaps(heatmaps, box, (HEIGHT, WIDTH), stride=1, offset=0, refine=refine, sigma=sigma)


@pytest.mark.parametrize(("refine", "bound"), [("dark", 0.05), ("quarter", 0.3), ("none", 0.5)])
def test_refinement_error_per_axis_on_sigma2_gaussians(refine, bound):
    centres = random_centres(64, 17, margin=6, seed=1)
    decoded = decode_in_heatmap_pixels(gaussians(centres, sigma=2.0), refine)
    error = (decoded[..., :2].double() - centres).abs()
    assert error.max() <= bound, f"{refine}: max error {error.max():.4f} heatmap px > {bound}"


def test_dark_error_as_a_distance_is_within_bound_too():
    centres = random_centres(64, 17, margin=6, seed=6)
    decoded = decode_in_heatmap_pixels(gaussians(centres, sigma=2.0), "dark")
    assert (decoded[..., :2].double() - centres).norm(dim=-1).max() <= 0.05


def test_dark_beats_quarter_on_average():
    centres = random_centres(64, 17, margin=6, seed=2)
    maps = gaussians(centres, sigma=2.0)
    dark = (decode_in_heatmap_pixels(maps, "dark")[..., :2].double() - centres).norm(dim=-1).mean()
    quarter = (decode_in_heatmap_pixels(maps, "quarter")[..., :2].double() - centres).norm(dim=-1).mean()
    assert dark < quarter / 5


def test_scores_are_peak_values():
    centres = random_centres(4, 17, margin=6, seed=3)
    maps = gaussians(centres, sigma=2.0) * torch.linspace(0.1, 1.0, 17).view(1, 17, 1, 1)
    decoded = decode_in_heatmap_pixels(maps, "dark")
    assert torch.allclose(decoded[..., 2], maps.flatten(2).max(dim=2).values)


def test_batch_decoding_equals_one_map_at_a_time():
    maps = gaussians(random_centres(6, 17, margin=3, seed=4), sigma=2.0) + 0.05 * torch.rand(6, 17, HEIGHT, WIDTH)
    whole = decode_in_heatmap_pixels(maps, "dark")
    single = torch.cat([decode_in_heatmap_pixels(maps[i : i + 1], "dark") for i in range(6)])
    assert torch.allclose(whole, single, atol=1e-5)


def test_peaks_at_the_border_stay_finite_and_near():
    centres = torch.tensor(
        [[[0.2, 0.4], [WIDTH - 1.1, HEIGHT - 1.3], [1.4, 30.0], [20.0, HEIGHT - 1.6]]], dtype=torch.float64
    )
    decoded = decode_in_heatmap_pixels(gaussians(centres, sigma=2.0), "dark")
    assert torch.isfinite(decoded).all()
    assert (decoded[..., :2].double() - centres).norm(dim=-1).max() <= 1.0


def test_untrained_looking_maps_decode_to_finite_points_inside_the_crop():
    maps = torch.randn(8, 17, HEIGHT, WIDTH)  # negative values, many equal-ish maxima
    decoded = decode_in_heatmap_pixels(maps, "dark")
    assert torch.isfinite(decoded).all()
    assert (decoded[..., 0] >= -1).all() and (decoded[..., 0] <= WIDTH).all()
    assert (decoded[..., 1] >= -1).all() and (decoded[..., 1] <= HEIGHT).all()


@pytest.mark.parametrize("refine", ["dark", "quarter", "none"])
def test_no_people_decode_to_an_empty_batch(refine):
    assert decode_in_heatmap_pixels(torch.zeros(0, 17, HEIGHT, WIDTH), refine).shape == (0, 17, 3)


def test_peaks_reports_integer_argmax():
    maps = torch.zeros(1, 2, HEIGHT, WIDTH)
    maps[0, 0, 10, 7] = 1
    maps[0, 1, 63, 47] = 2
    xy, values = peaks(maps)
    assert xy.tolist() == [[[7.0, 10.0], [47.0, 63.0]]]
    assert values.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(("offset", "shift"), [(0.0, 1), (2.0, 0)])
def test_flip_back_restores_joints_seen_in_a_mirrored_crop(offset, shift):
    """A mirrored crop shows joint k where mirror(k) was; flip_back must return each joint to its place."""
    stride, crop_width = 4, WIDTH * 4
    mirror = torch.tensor(mirror_index(COCO_KEYPOINTS))
    crop_points = random_centres(3, 17, margin=6, seed=5) * stride + offset  # crop pixels
    mirrored_points = crop_points.clone()
    mirrored_points[..., 0] = crop_width - crop_points[..., 0]
    # A model looking at the mirrored crop reports joint k's mirror image under channel mirror[k].
    seen = torch.empty_like(mirrored_points)
    seen[:, mirror] = mirrored_points
    restored = flip_back(gaussians((seen - offset) / stride, sigma=2.0), mirror, shift)
    decoded = decode_in_heatmap_pixels(restored, "dark")[..., :2].double() * stride + offset
    assert (decoded - crop_points).norm(dim=-1).max() <= 0.05 * stride


def test_flip_back_swaps_left_and_right_channels():
    mirror = torch.tensor(mirror_index(COCO_KEYPOINTS))
    maps = torch.arange(17, dtype=torch.float32).view(1, 17, 1, 1).expand(1, 17, 4, 4)
    channel_values = flip_back(maps, mirror, shift=0)[0, :, 0, 0].tolist()
    names = COCO_KEYPOINTS
    assert names[int(channel_values[names.index("left_wrist")])] == "right_wrist"
    assert names[int(channel_values[names.index("right_ankle")])] == "left_ankle"
    assert names[int(channel_values[names.index("nose")])] == "nose"


def test_batched_dark_equals_the_per_joint_opencv_reference():
    """Smoothing only each peak's window must give what smoothing whole maps (cv2.GaussianBlur) gives."""
    from tests.fixtures.heatmaps import CROP, STRIDE, reference_decode

    generator = torch.Generator().manual_seed(8)
    centres = random_centres(16, 17, margin=0, seed=9)  # peaks on the border too
    maps = gaussians(centres, sigma=2.0) + 0.1 * torch.rand(16, 17, HEIGHT, WIDTH, generator=generator)
    boxes = torch.tensor([[10.0, 20.0, 160.0, 220.0]]).expand(16, 4).contiguous()
    ours = decode_heatmaps(maps, boxes, CROP, STRIDE, 0.0, "dark", 2.0)
    reference = torch.from_numpy(reference_decode(maps.numpy(), boxes.numpy()))
    assert torch.allclose(ours, reference, atol=1e-3)
