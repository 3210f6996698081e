"""Batching photos of different sizes: pad them into one model call, or one call per distinct size?

For the person segmenter (photos resized to 520 px on the short side) and the style network
(photos up to 1024 px), on batches of mixed and of equal sizes: time of both strategies,
and how far padding moves the answer (the style network's instance normalisation sees
the padding; the segmenter's receptive field does near the edges).

    python -m loadtest.bench_batching [--device cuda] [--repeats 5]
"""

import argparse

import torch
from torch import Tensor

from export.registry import RECIPES
from loadtest.machine import describe_machine, median_seconds

# Landscape, portrait and wide photos as the segmenter sees them (short side 520) and as
# the style network does (long side at most 1024).
SEGMENTER_SIZES = {"mixed": [(520, 693), (693, 520), (520, 693), (520, 924)], "equal": [(520, 693)] * 4}
STYLE_SIZES = {"mixed": [(768, 1024), (1024, 768), (768, 1024), (576, 1024)], "equal": [(768, 1024)] * 4}


def grouped(model: torch.nn.Module, images: list[Tensor]) -> list[Tensor]:
    """One call per distinct size (what the handlers do)."""
    out: list[Tensor] = [images[0]] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    for members in groups.values():
        for i, answer in zip(members, model(torch.stack([images[i] for i in members]))):
            out[i] = answer
    return out


def padded(model: torch.nn.Module, images: list[Tensor]) -> list[Tensor]:
    """Zero-pad every image to the batch's largest height and width, one call, crop each answer back."""
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    batch = torch.stack(
        [torch.nn.functional.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2])) for image in images]
    )
    answers = model(batch)
    return [answer[..., : image.shape[-2], : image.shape[-1]] for answer, image in zip(answers, images)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"Machine: {describe_machine(device)}; random weights (the compute of trained ones); median of {args.repeats}\n"
    )
    print(
        "| model | batch of 4 | sizes | one call per size, s | padded into one call, s | padded / grouped | answer change from padding |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for model_name, sizes_by_kind, scale in (
        ("person_segmenter", SEGMENTER_SIZES, 1.0),
        ("style_candy", STYLE_SIZES, 255.0),
    ):
        model = RECIPES[model_name].parts[0].make(weights="random").module.eval().to(device)
        generator = torch.Generator().manual_seed(0)
        for kind, sizes in sizes_by_kind.items():
            images = [(torch.rand(3, *size, generator=generator) * scale).to(device) for size in sizes]
            with torch.inference_mode():
                group_time = median_seconds(lambda: grouped(model, images), args.repeats, device)
                pad_time = median_seconds(lambda: padded(model, images), args.repeats, device)
                exact, approx = grouped(model, images), padded(model, images)
            change = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)) for a, b in zip(approx, exact))
            shown = ", ".join(f"{h}x{w}" for h, w in dict.fromkeys(sizes))
            print(
                f"| {model_name} | {kind} | {shown} | {group_time:.2f} | {pad_time:.2f} | {pad_time / group_time:.2f} | {change:.1%} of the range |"
            )


if __name__ == "__main__":
    main()
