"""CUDA ``.pt2`` packages compute what the CPU ones compute (issue 37's GPU check, ``make gpu-check``; skipped without
CUDA, so in CI).

One set of weights (random: the GPU machine reaches no weights) is built twice, for the CPU and for CUDA; both
archives' handlers run in this process on the same PNG (decoded exactly on either side) through their own
preprocessing, and their models' outputs are compared before any argmax or threshold, which random weights would
make unstable."""

import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils._pytree import tree_leaves

from export.archive import Build, write_archive
from export.registry import recipe_named
from loadtest.photos import photo
from tests.fixtures.in_process import load_handler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: make gpu-check on a GPU machine")

SHOT = photo("astronaut", 640, 480, "PNG")


def model_outputs(archive: Path, work: Path, gpu: int | None) -> list[torch.Tensor]:
    """The archive's model outputs for a batch of two requests of ``SHOT``, as CPU tensors."""
    zipfile.ZipFile(archive).extractall(work)
    config = yaml.safe_load((work / "model-config.yaml").read_text())
    handler, context, request_processor = load_handler(work, config, gpu)
    context.request_processor = [request_processor({"body": {"content-type": SHOT.content_type}}) for _ in range(2)]
    handler.context = context
    with torch.inference_mode():
        batch = handler.preprocess([{"body": bytearray(SHOT.data)} for _ in range(2)])
        assert not batch.errors, batch.errors
        outputs = handler.inference(batch).outputs
    return [leaf.float().cpu() for leaf in tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]


@pytest.mark.parametrize("model", ["pose_resnet50", "person_segmenter_lraspp"])
def test_a_cuda_package_computes_what_the_cpu_package_computes(model, tmp_path):
    recipe = recipe_named(model)
    parts = tuple(part.make(None, "random") for part in recipe.parts)  # one set of weights for both builds
    package = recipe.package(parts, replace(recipe.serving, batch_size=2))
    on_cpu = model_outputs(write_archive(package, tmp_path / "cpu", Build("pt2", "cpu")), tmp_path / "c", None)
    on_cuda = model_outputs(write_archive(package, tmp_path / "cuda", Build("pt2", "cuda")), tmp_path / "g", 0)
    assert [t.shape for t in on_cuda] == [t.shape for t in on_cpu]
    for cpu, cuda in zip(on_cpu, on_cuda):
        # TF32 convolutions and another summation order: within 1 % of the output's range.
        scale = cpu.abs().max().clamp(min=1e-6)
        assert (cuda - cpu).abs().max() <= 0.01 * scale, (model, float((cuda - cpu).abs().max()), float(scale))
