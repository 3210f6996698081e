"""Heatmap decoding: our batched tensor decoder against a per-person, per-joint NumPy/OpenCV loop.

The loop is the way the reference handlers decode (SimpleBaseline's ``get_final_preds``
with DARK's per-joint Taylor step): argmax, ``cv2.GaussianBlur`` per map, a Newton
step per joint, then the crop affine per person. Both decode the same synthetic
Gaussian heatmaps with known sub-pixel centres, so accuracy is reported with speed.

    python -m loadtest.bench_decode [--device cuda] [--repeats 30]
"""

import argparse

import numpy as np
import torch

from handlers.vision.heatmaps import decode_heatmaps
from loadtest.machine import describe_machine, median_seconds
from tests.fixtures.heatmaps import CROP, HEIGHT, JOINTS, SIGMA, STRIDE, WIDTH, reference_decode


def synthetic_batch(people: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmaps ``[N, K, h, w]`` with unit Gaussians at random sub-pixel centres, their boxes and true image points."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform([4, 4], [WIDTH - 5, HEIGHT - 5], size=(people, JOINTS, 2))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    heatmaps = np.exp(
        -((xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2) / (2 * SIGMA**2)
    ).astype(np.float32)
    corner = rng.uniform(0, 500, size=(people, 2))
    size = rng.uniform(100, 600, size=(people, 1)) * np.array([[0.75, 1.0]])
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
    truth = corner[:, None, :] + centres * STRIDE * (size / np.array(CROP[::-1]))[:, None, :]
    return heatmaps, boxes, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    device = torch.device(args.device)

    print(f"Machine: {describe_machine(device)}; decoding on {device}")
    print(
        f"{JOINTS} joints, {HEIGHT}x{WIDTH} heatmaps, sigma {SIGMA}, DARK refinement; median of {args.repeats} runs\n"
    )
    print(
        "| people | batched (ours) ms | per-joint loop ms | speed-up | ours max / mean error px | loop max / mean error px |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for people in args.batches:
        heatmaps, boxes, truth = synthetic_batch(people, seed=people)
        maps_t, boxes_t = torch.from_numpy(heatmaps).to(device), torch.from_numpy(boxes).to(device)

        def ours():
            return decode_heatmaps(maps_t, boxes_t, CROP, STRIDE, 0.0, "dark", SIGMA)

        ours_ms = median_seconds(ours, args.repeats, device) * 1000
        loop_ms = median_seconds(lambda: reference_decode(heatmaps, boxes), args.repeats, device) * 1000
        ours_error = np.linalg.norm(ours()[..., :2].cpu().numpy() - truth, axis=-1)
        loop_error = np.linalg.norm(reference_decode(heatmaps, boxes)[..., :2] - truth, axis=-1)
        print(
            f"| {people} | {ours_ms:.2f} | {loop_ms:.2f} | {loop_ms / ours_ms:.1f}x "
            f"| {ours_error.max():.4f} / {ours_error.mean():.4f} | {loop_error.max():.4f} / {loop_error.mean():.4f} |"
        )


if __name__ == "__main__":
    main()
