"""What a load test sends to each kind of model, and what a right answer to it looks like.

Options are text, as a client sends them in headers (REST) or input-map entries (gRPC).
A check returns the problem with an answer, or None: a load test counts a 200 with a
wrong answer as a failure.
"""

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from humanserve_client import Answer
from loadtest.load import Request
from loadtest.photos import Photo

Options = dict[str, str]
JOINTS = 17


@dataclass(frozen=True)
class Scenario:
    """Options drawn per request, and the check of the answer; for sequence models, the frames per sequence."""

    options: Callable[[Photo, random.Random], Options]
    check: Callable[[Photo, Options, Answer], str | None]
    sequence_length: int = 0  # > 0: a user sends sequences of this many frames (a video), each in one sequence


def _people_answer(photo: Photo, answer: Answer, keypoints: bool) -> tuple[str | None, list]:
    if answer.is_image:
        return f"expected JSON, got {answer.content_type}", []
    body = answer.json()
    if body.get("image") != {"width": photo.width, "height": photo.height}:
        return f"image size {body.get('image')} is not the photo's {photo.width}x{photo.height}", []
    people = body.get("people")
    if not isinstance(people, list):
        return "no 'people' list", []
    for person in people:
        if len(person.get("box", ())) != 4 or not isinstance(person.get("score"), (int, float)):
            return f"a person without box and score: {json.dumps(person)[:120]}", people
        joints = person.get("keypoints")
        if keypoints and (not isinstance(joints, list) or len(joints) != JOINTS or any(len(j) != 3 for j in joints)):
            return f"a person without {JOINTS} [x, y, score] keypoints", people
    return None, people


def _picture_size(answer: Answer) -> tuple[int, int] | None:
    try:
        return Image.open(io.BytesIO(answer.body)).size
    except Exception:  # any undecodable answer is reported as such
        return None


def _photo_sized_picture(photo: Photo, answer: Answer) -> str | None:
    size = _picture_size(answer)
    return (
        None
        if size == (photo.width, photo.height)
        else f"picture of size {size}, photo is {photo.width}x{photo.height}"
    )


def person_boxes(photo: Photo, rng: random.Random) -> Options:
    """One or two person-shaped boxes, as a detector upstream would send them; flip test now and then."""
    boxes = []
    for _ in range(rng.randint(1, 2)):
        x1, y1 = rng.uniform(0, 0.5) * photo.width, rng.uniform(0, 0.3) * photo.height
        width, height = rng.uniform(0.2, 0.5) * photo.width, rng.uniform(0.5, 0.7) * photo.height
        boxes.append([round(x1, 1), round(y1, 1), round(x1 + width, 1), round(y1 + height, 1)])
    options = {"boxes": json.dumps(boxes)}
    if rng.random() < 0.25:
        options["flip_test"] = "true"
    return options


def blazepose_options(photo: Photo, rng: random.Random) -> Options:
    """Mostly the detector's people; one in four given boxes (no detector), one in four all 33 landmarks."""
    options = {"boxes": person_boxes(photo, rng)["boxes"]} if rng.random() < 0.25 else {}
    if rng.random() < 0.25:
        options["landmarks"] = "true"
    return options


def check_pose(photo: Photo, options: Options, answer: Answer) -> str | None:
    problem, people = _people_answer(photo, answer, keypoints=True)
    expected = len(json.loads(options["boxes"])) if "boxes" in options else 1  # no boxes: the whole photo
    return problem or (None if len(people) == expected else f"{len(people)} people for {expected} boxes")


def check_detection(keypoints: bool) -> Callable[[Photo, Options, Answer], str | None]:
    def check(photo: Photo, options: Options, answer: Answer) -> str | None:
        problem, people = _people_answer(photo, answer, keypoints)
        limit = int(options.get("max_people", 100))
        threshold = float(options.get("score_threshold", 0))
        if problem is None and len(people) > limit:
            return f"{len(people)} people, more than max_people={limit}"
        low = [p["score"] for p in people if p["score"] < threshold]
        return problem or (f"score {low[0]} below score_threshold={threshold}" if low else None)

    return check


def segmenter_options(photo: Photo, rng: random.Random) -> Options:
    """Mostly the mask as JSON; one in four a blurred-background picture."""
    return {"background": "blur", "format": "jpeg"} if rng.random() < 0.25 else {}


def check_segmenter(photo: Photo, options: Options, answer: Answer) -> str | None:
    if options.get("background"):
        return _photo_sized_picture(photo, answer)
    if answer.is_image:
        return f"expected JSON, got {answer.content_type}"
    mask = answer.json().get("mask", {})
    if mask.get("size") != [photo.height, photo.width] or not isinstance(mask.get("counts"), str):
        return f"mask {json.dumps(mask)[:80]} is not a COCO RLE of the photo's size"
    return None


STYLE_MAX_SIDE = 640
STYLE_DEFAULT_MAX_SIDE = 1024  # handlers/style/steps.py


def check_style(photo: Photo, options: Options, answer: Answer) -> str | None:
    scale = min(1.0, int(options.get("max_side", STYLE_DEFAULT_MAX_SIDE)) / max(photo.width, photo.height))
    expected = (round(photo.width * scale), round(photo.height * scale))
    size = _picture_size(answer)
    return None if size == expected else f"styled picture of size {size}, expected {expected}"


def trained_size_options(photo: Photo, rng: random.Random) -> Options:
    """A generator trained at one size (pix2pix): mostly answered at the photo's size, one in four at the model's
    own."""
    return {"max_side": str(STYLE_MAX_SIDE), **({"keep_size": "false"} if rng.random() < 0.25 else {})}


def check_trained_size(photo: Photo, options: Options, answer: Answer) -> str | None:
    if options.get("keep_size") != "false":
        return check_style(photo, options, answer)
    size = _picture_size(answer)
    return None if size and size[0] == size[1] else f"picture of size {size}, expected the model's own square"


def face_options(photo: Photo, rng: random.Random) -> Options:
    """Mostly faces as JSON, now and then only the best face; one in four the picture with the faces drawn."""
    if rng.random() < 0.25:
        return {"render": "true"}
    return {"max_faces": "1"} if rng.random() < 0.3 else {}


def check_faces(photo: Photo, options: Options, answer: Answer) -> str | None:
    if options.get("render"):
        return _photo_sized_picture(photo, answer)
    if answer.is_image:
        return f"expected JSON, got {answer.content_type}"
    body = answer.json()
    faces = body.get("faces")
    if body.get("image") != {"width": photo.width, "height": photo.height} or not isinstance(faces, list):
        return f"no 'faces' list for an image of {photo.width}x{photo.height}: {json.dumps(body)[:120]}"
    if len(faces) > int(options.get("max_faces", 1000)):
        return f"{len(faces)} faces, more than max_faces={options['max_faces']}"
    for face in faces:
        if (
            len(face.get("box", ())) != 4
            or len(face.get("landmarks", ())) != 5
            or not isinstance(face.get("smiling"), bool)
        ):
            return f"a face without box, 5 landmarks and smiling: {json.dumps(face)[:120]}"
        if len(face.get("expression", {}).get("scores", {})) != 7:
            return "a face without its 7 expression scores"
    return None


FILTER_BACKGROUNDS = (
    "rainbow",
    "bokeh",
    "sunset",
    "ocean",
    "texture",
    "blur",
)  # handlers/smart_filter/steps.py's palette


def filter_options(photo: Photo, rng: random.Random) -> Options:
    """Mostly the filtered picture, now and then within a theme; one in four the decision as JSON."""
    if rng.random() < 0.25:
        return {"format": "json"}
    return {"theme": "gradient,texture"} if rng.random() < 0.3 else {}


def check_filter(photo: Photo, options: Options, answer: Answer) -> str | None:
    if options.get("format") != "json":
        return _photo_sized_picture(photo, answer)
    body = answer.json() if not answer.is_image else {}
    if (
        body.get("background") not in FILTER_BACKGROUNDS
        or not isinstance(body.get("faces"), list)
        or not 0 <= body.get("coverage", -1) <= 1
    ):
        return f"not a smart filter decision: {json.dumps(body)[:120]}"
    return None


def scenario_for(model: str) -> Scenario:
    """The scenario of a zoo model (or an oracle standing in for one), by its name."""
    if model.startswith(("pose_tracker", "tracker_")):
        # One second of a 30 fps camera that stands still: the same photo in every frame.
        return Scenario(lambda photo, rng: {}, check_detection(keypoints=True), sequence_length=30)
    if model.startswith(("pose_pipeline", "pipeline_")):
        return Scenario(lambda photo, rng: {}, check_detection(keypoints=True))
    if model.startswith("pose_blazepose"):
        return Scenario(blazepose_options, check_detection(keypoints=True))
    if model.startswith("pose_"):
        return Scenario(person_boxes, check_pose)
    if model.startswith("person_detector") or model.startswith("detector_"):
        return Scenario(lambda photo, rng: {"score_threshold": "0.3"}, check_detection(keypoints=False))
    if model.startswith("keypoint_"):
        return Scenario(lambda photo, rng: {"max_people": "5"}, check_detection(keypoints=True))
    if model.startswith("person_segmenter") or model.startswith("segmenter_"):
        return Scenario(segmenter_options, check_segmenter)
    if model.startswith(("style_", "cyclegan_")):
        return Scenario(lambda photo, rng: {"max_side": str(STYLE_MAX_SIDE)}, check_style)
    if model.startswith("pix2pix_"):
        return Scenario(trained_size_options, check_trained_size)
    if model.startswith(("faces", "face_")):
        return Scenario(face_options, check_faces)
    if model.startswith("smart_filter"):
        return Scenario(filter_options, check_filter)
    raise ValueError(f"no load-test scenario for model {model!r}")


def requests_for(model: str, photos: list[Photo], draws: int = 8, seed: int = 0, plain: bool = False) -> list[Request]:
    """``draws`` requests per photo for ``model`` (options drawn by its scenario, seeded; ``plain``: none, the model's
    default answer), each checked by it: what the closed-loop load (loadtest/load.py) sends in turn."""
    scenario, rng = scenario_for(model), random.Random(seed)

    def request(photo: Photo) -> Request:
        options = {} if plain else scenario.options(photo, rng)
        return Request(photo.data, photo.content_type, options, lambda answer: scenario.check(photo, options, answer))

    return [request(photo) for _ in range(draws) for photo in photos]
