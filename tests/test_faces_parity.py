"""Faces against their reference implementations, run from their own code (requirements-reference.txt):
facenet-pytorch's ``MTCNN(keep_all=True)`` for the boxes, scores and landmarks, and PyEmotion's expression pipeline
(``DetectFace``: the MTCNN box rounded to whole pixels, the OpenCV grey crop, torchvision's ``ToPILImage``,
``Resize((48, 48))``, ``ToTensor``, ``Normalize(0.5, 0.5)``) for the expressions, on scikit-image's photos, each also
as a JPEG of quality 75 and 95 and scaled by 0.5 and 2. The bounds are issue 38's. The second opinion against the fer
package's ``FER.detect_emotions`` with its Keras model (``use_tflite=False``), run by Keras 3 on its PyTorch backend."""

import importlib.resources
import os
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import rescale
from torchvision.ops import box_iou

from export.faces import CASCADE
from handlers.faces.steps import Candidates, expression_crops, grey_images, grey_levels, mini_xception_crops
from tests.fixtures.faces import faces_on, rgb, wheel_networks

SCORE_TOLERANCE = 0.02  # expression scores on the same face (issue 38)
BOX_IOU = 0.95  # each served box against the reference's
LANDMARK_PIXELS = 1.0


@pytest.fixture(scope="module")
def reference():
    import PyEmotion

    return PyEmotion.DetectFace("cpu")


@pytest.fixture(scope="module")
def fer_reference():
    """fer's ``FER(use_tflite=False)``: its own preprocessing and its Keras model, on Keras 3's PyTorch backend.

    fer imports ``tensorflow`` (only called on its TFLite and TF Serving paths, unused here; an empty module stands
    in, and fer then takes ``load_model`` from Keras itself) and ``pkg_resources`` (gone from current setuptools;
    its ``resource_filename`` is answered by ``importlib.resources``, the file it names).
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    resources = types.ModuleType("pkg_resources")
    resources.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
    saved = {name: sys.modules.get(name) for name in ("tensorflow", "pkg_resources")}
    sys.modules.update(tensorflow=types.ModuleType("tensorflow"), pkg_resources=resources)
    try:
        from fer.fer import FER

        yield FER(
            mtcnn=True, use_tflite=False
        )  # its detector unused: the faces are given (and OpenCV 5 has no Haar cascades)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def expression_network(face_networks):
    return face_networks["expression"]


def photos_with_faces() -> dict[str, tuple[np.ndarray, list[list[float]]]]:
    """Photos and face boxes to cut: facenet-pytorch's boxes on the astronaut and the cameraman, a box over an edge,
    and four LFW faces (25 x 25) scaled up 4 times, each boxed whole."""
    faces = data.lfw_subset()[:4]
    return {
        "astronaut": (rgb(data.astronaut()), [[181.1, 62.2, 267.7, 172.1], [-6.4, 480.5, 30.2, 530.7]]),
        "camera": (rgb(data.camera()), [[199.2, 118.9, 254.3, 192.3], [101.5, 61.5, 129.5, 97.9]]),
        **{
            f"lfw {n}": (rgb((rescale(face, 4, order=1) * 255).round().astype(np.uint8)), [[8.3, 10.6, 92.4, 95.5]])
            for n, face in enumerate(faces)
        },
    }


def reference_input(reference, photo: np.ndarray, box: list[float]) -> torch.Tensor:
    """PyEmotion's classifier input for ``box`` (its own code; the box kept inside the photo, where its slicing
    would wrap around)."""
    grey = cv2.cvtColor(photo[:, :, ::-1], cv2.COLOR_BGR2GRAY)
    x1, y1, x2, y2 = (max(int(round(value)), 0) for value in box)
    return reference.transform(grey[y1:y2, x1:x2])


def test_the_grey_image_is_opencv_s_to_the_level():
    for photo in (rgb(data.astronaut()), rgb(data.coffee()), rgb(data.chelsea())):
        ours = grey_levels(torch.from_numpy(photo).permute(2, 0, 1)).numpy()
        assert np.array_equal(ours, cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))


def test_classifier_inputs_and_scores_are_pyemotion_s_on_the_same_boxes(reference, expression_network):
    for name, (photo, boxes) in photos_with_faces().items():
        faces = Candidates(torch.tensor(boxes), torch.ones(len(boxes)), torch.zeros(len(boxes), dtype=torch.long))
        ours = expression_crops(grey_images([torch.from_numpy(photo).permute(2, 0, 1)], faces), faces)
        expected = torch.stack([reference_input(reference, photo, box) for box in boxes])
        levels = expected * 127.5 + 127.5  # Normalize(0.5, 0.5) undone: grey levels
        assert torch.equal(ours, levels.round()) and (levels - levels.round()).abs().max() < 1e-3, name
        with torch.inference_mode():
            scores, reference_scores = expression_network(ours), reference.network(expected)
        assert (scores - reference_scores).abs().max() <= SCORE_TOLERANCE, (name, scores, reference_scores)


def variants(photo: np.ndarray):
    """The photo as it is, as JPEGs of quality 75 and 95 (decoded by OpenCV) and scaled by 0.5 and 2."""
    yield "", photo
    for quality in (75, 95):
        encoded = cv2.imencode(".jpg", photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        yield f" q{quality}", np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1])
    yield " x0.5", cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    yield " x2", cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)


def parity_photos() -> dict[str, np.ndarray]:
    """Every photo of scikit-image with a face (the LFW faces scaled up 4 times, on a grey frame so that MTCNN's
    smallest face fits), and two without."""
    faces = {
        f"lfw {n}": rgb(np.pad((rescale(face, 4, order=1) * 255).round().astype(np.uint8), 30, constant_values=128))
        for n, face in enumerate(data.lfw_subset()[:6])
    }
    photos = {"astronaut": data.astronaut(), "camera": data.camera(), **faces, "coffee": data.coffee()}
    photos["chelsea"] = data.chelsea()
    return {f"{name}{label}": pixels for name, photo in photos.items() for label, pixels in variants(rgb(photo))}


def reference_faces(reference, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """facenet-pytorch's boxes, probabilities and landmarks (its MTCNN as PyEmotion builds it: keep_all, its
    defaults)."""
    boxes, scores, points = reference.mtcnn.detect(photo, landmarks=True)
    if boxes is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    return (
        np.array([np.asarray(box, float) for box in boxes]),
        np.asarray(scores, float),
        np.array([np.asarray(point, float) for point in points]),
    )


def test_the_same_faces_boxes_landmarks_and_expressions_as_the_references(reference, face_networks):
    measured = []
    for name, photo in parity_photos().items():
        boxes, scores, points = reference_faces(reference, photo)
        ours = faces_on(face_networks, photo)
        assert len(ours.boxes) == len(boxes), (name, ours.boxes, boxes)
        if not len(boxes):
            continue
        overlaps = box_iou(torch.from_numpy(boxes).float(), ours.boxes)
        match = overlaps.argmax(dim=1)
        assert sorted(match.tolist()) == list(range(len(boxes))), (name, overlaps)
        assert overlaps.max(dim=1).values.min() >= BOX_IOU, (name, overlaps)
        assert np.abs(ours.scores[match].numpy() - scores).max() < 1e-3, name
        assert np.abs(ours.landmarks[match].numpy() - points).max() <= LANDMARK_PIXELS, name
        with torch.inference_mode():
            expected = reference.network(torch.stack([reference_input(reference, photo, box) for box in boxes]))
        assert (ours.expressions[match] - expected).abs().max() <= SCORE_TOLERANCE, (name, ours.expressions, expected)
        measured.append(name)
    assert len(measured) >= 10  # the astronaut, the cameraman and LFW faces in their variants


def fer_rectangles(boxes: np.ndarray) -> list[list[int]]:
    """facenet-pytorch's boxes as fer's ``find_faces`` makes them: ``(x, y, w, h)`` of the truncated corners."""
    return [[int(x1), int(y1), int(x2) - int(x1), int(y2) - int(y1)] for x1, y1, x2, y2 in boxes]


def test_the_second_opinion_is_fer_s_on_the_same_faces(reference, fer_reference, face_networks):
    seen = {}
    classify = fer_reference._classify_emotions  # what fer hands its model, recorded on the way

    def recorded(faces):
        seen["inputs"] = faces
        return classify(faces)

    fer_reference._classify_emotions = recorded
    measured = 0
    for name, photo in parity_photos().items():
        boxes, _, _ = reference_faces(reference, photo)
        if not len(boxes):
            continue
        answers = fer_reference.detect_emotions(np.ascontiguousarray(photo[:, :, ::-1]), fer_rectangles(boxes))
        assert len(answers) == len(boxes), name
        faces = Candidates(
            torch.from_numpy(boxes).float(), torch.ones(len(boxes)), torch.zeros(len(boxes), dtype=torch.long)
        )
        crops = mini_xception_crops(grey_images([torch.from_numpy(photo).permute(2, 0, 1)], faces), faces)
        expected = torch.from_numpy(np.asarray(seen["inputs"], np.float32))[:, None]
        assert torch.equal((crops / 255.0 - 0.5) * 2.0, expected), name  # the same input, to the level
        ours = faces_on(face_networks, photo, second_opinion=True)
        match = box_iou(torch.from_numpy(boxes).float(), ours.boxes).argmax(dim=1)
        scores = torch.tensor([[answer["emotions"][label] for label in CASCADE.expressions] for answer in answers])
        # fer answers scores rounded to hundredths (half of one of those inside the bound)
        assert (ours.second_opinion[match] - scores).abs().max() <= SCORE_TOLERANCE, (name, ours.second_opinion, scores)
        measured += 1
    assert measured >= 10


def parity_table() -> str:
    """The parity figures per photo as a markdown table (``python -m tests.test_faces_parity``; docs/accuracy.md)."""
    import PyEmotion

    reference = PyEmotion.DetectFace("cpu")
    networks, _, _ = wheel_networks()
    expressions = CASCADE.expressions
    rows = [
        "| photo | faces (reference / served) | least box IoU | most score difference | most landmark difference px "
        "| most expression difference | expression (reference / served) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, photo in parity_photos().items():
        boxes, scores, points = reference_faces(reference, photo)
        ours = faces_on(networks, photo)
        with torch.inference_mode():
            expected = (
                reference.network(torch.stack([reference_input(reference, photo, box) for box in boxes]))
                if len(boxes)
                else torch.zeros(0, len(expressions))
            )
        if not len(boxes) or not len(ours.boxes):
            rows.append(f"| {name} | {len(boxes)} / {len(ours.boxes)} | | | | | |")
            continue
        overlaps = box_iou(torch.from_numpy(boxes).float(), ours.boxes)
        match = overlaps.argmax(dim=1)
        labels = [
            f"{expressions[int(a)]} / {expressions[int(b)]}"
            for a, b in zip(expected.argmax(dim=1), ours.expressions[match].argmax(dim=1))
        ]
        rows.append(
            f"| {name} | {len(boxes)} / {len(ours.boxes)} | {overlaps.max(dim=1).values.min():.4f} "
            f"| {np.abs(ours.scores[match].numpy() - scores).max():.1e} "
            f"| {np.abs(ours.landmarks[match].numpy() - points).max():.4f} "
            f"| {(ours.expressions[match] - expected).abs().max():.1e} | {', '.join(labels)} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(parity_table())
