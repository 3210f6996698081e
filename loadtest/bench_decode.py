"""Heatmap decoding: our batched tensor decoder against a per-person, per-joint NumPy/OpenCV loop.

The loop is the way the reference handlers decode (SimpleBaseline's ``get_final_preds``
with DARK's per-joint Taylor step): argmax, ``cv2.GaussianBlur`` per map, a Newton
step per joint, then the crop affine per person. Both decode the same synthetic
Gaussian heatmaps with known sub-pixel centres, so accuracy is reported with speed.

    python -m loadtest.bench_decode [--device cuda] [--repeats 30]
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "handlers"))

from handlers.vision.heatmaps import decode_heatmaps  # noqa: E402
from loadtest.machine import describe_machine, median_seconds  # noqa: E402

JOINTS, HEIGHT, WIDTH, STRIDE, SIGMA = 17, 64, 48, 4, 2.0
CROP = (HEIGHT * STRIDE, WIDTH * STRIDE)


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


def reference_decode(heatmaps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per person and per joint, as the reference handlers do: ``[N, K, 3]`` (x, y, score)."""
    people, joints, height, width = heatmaps.shape
    out = np.zeros((people, joints, 3), dtype=np.float32)
    kernel = 2 * round(3 * SIGMA) - 1
    for n in range(people):
        scale = (boxes[n, 2:] - boxes[n, :2]) / np.array(CROP[::-1])
        affine = np.array([[STRIDE * scale[0], 0, boxes[n, 0]], [0, STRIDE * scale[1], boxes[n, 1]]])
        points = np.zeros((joints, 2))
        for k in range(joints):
            heatmap = heatmaps[n, k]
            y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
            out[n, k, 2] = heatmap[y, x]
            log = np.log(np.maximum(cv2.GaussianBlur(heatmap, (kernel, kernel), SIGMA), 1e-10))
            px, py = float(x), float(y)
            if 2 <= x < width - 2 and 2 <= y < height - 2:
                dx = 0.5 * (log[y, x + 1] - log[y, x - 1])
                dy = 0.5 * (log[y + 1, x] - log[y - 1, x])
                dxx = 0.25 * (log[y, x + 2] - 2 * log[y, x] + log[y, x - 2])
                dyy = 0.25 * (log[y + 2, x] - 2 * log[y, x] + log[y - 2, x])
                dxy = 0.25 * (log[y + 1, x + 1] - log[y - 1, x + 1] - log[y + 1, x - 1] + log[y - 1, x - 1])
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx < 0 and np.linalg.det(hessian) > 1e-12:
                    step = -np.linalg.solve(hessian, np.array([dx, dy]))
                    px, py = px + np.clip(step[0], -1, 1), py + np.clip(step[1], -1, 1)
            points[k] = (px, py)
        out[n, :, :2] = cv2.transform(points[None], affine)[0]
    return out


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
