"""Our own faults stay per request: the pose handler run in this process with faults injected into its steps."""

import base64
import json
import sys
import zipfile

import pytest
import torch
import yaml

from export.archive import write_archive
from tests.fixtures.in_process import load_handler
from tests.fixtures.oracles import oracle_packages
from tests.fixtures.serving import SMALL_JPEG


@pytest.fixture(scope="module")
def pose(tmp_path_factory):
    """The pose oracle's handler and context, initialised from its archive as a worker would."""
    work = tmp_path_factory.mktemp("pose_oracle")
    package = next(p for p in oracle_packages() if p.name == "pose_oracle")
    zipfile.ZipFile(write_archive(package, work / "store")).extractall(work / "archive")
    config = yaml.safe_load((work / "archive" / "model-config.yaml").read_text())
    handler, context, request_processor = load_handler(work / "archive", config)
    return handler, context, request_processor, sys.modules["handlers.pose.handler"]


def run_batch(pose, rows: list[dict]) -> list[tuple[int, dict]]:
    """(status, JSON body) per row, after one pass through the handler's life cycle."""
    handler, context, request_processor, _ = pose
    context.request_processor = [request_processor({"body": {"content-type": "image/jpeg"}}) for _ in rows]
    with torch.inference_mode():
        bodies = handler.postprocess(handler.inference(handler.preprocess(rows)))
    return [(context.get_response_status(index)[0], json.loads(body)) for index, body in enumerate(bodies)]


def test_a_fault_while_reading_one_request_answers_500_for_it_alone(pose, monkeypatch):
    module = pose[3]
    real = module.check_boxes_overlap

    def broken_for_boxes(item):
        if item.options["boxes"]:
            raise ZeroDivisionError("injected")
        real(item)

    monkeypatch.setattr(module, "check_boxes_overlap", broken_for_boxes)
    with_boxes = {"image": base64.b64encode(SMALL_JPEG).decode(), "boxes": [[1, 1, 50, 50]]}
    rows = [{"body": bytearray(SMALL_JPEG)}, {"body": with_boxes}, {"body": bytearray(SMALL_JPEG)}]
    answers = run_batch(pose, rows)
    assert [status for status, _ in answers] == [200, 500, 200]
    assert answers[1][1]["type"] == "InternalError" and "reading the request" in answers[1][1]["message"]
    assert len(answers[0][1]["people"]) == 1


def test_a_fault_in_the_model_answers_500_for_the_batch_instead_of_failing_the_worker(pose, monkeypatch):
    handler = pose[0]
    monkeypatch.setattr(handler, "forward", lambda inputs: (_ for _ in ()).throw(RuntimeError("injected")))
    answers = run_batch(pose, [{"body": bytearray(SMALL_JPEG)}, {"body": bytearray(b"not an image")}])
    assert [(status, body["type"]) for status, body in answers] == [(500, "InternalError"), (400, "InvalidImage")]
    assert "running the model" in answers[0][1]["message"]
