"""Track the people of a video with a served pose tracker: frames in as one sequence, JSON lines and a drawn video out.

``humanserve track VIDEO`` wires this to the command line. Frames are read with OpenCV
(every ``every``-th one), sent in order as one sequence (gRPC ``StreamPredictions2`` or
REST with the sequence header, see ``Client.stream``), and each answer comes back as one
record: the frame's index and time in the video, and the answer or its error.
"""

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .client import Client, HandlerError, OptionValue

# Colours for track IDs (BGR), far apart; untracked people (no ID yet) are grey.
ID_COLOURS = (
    (75, 25, 230),
    (75, 180, 60),
    (25, 225, 255),
    (200, 130, 0),
    (48, 130, 245),
    (180, 30, 145),
    (240, 240, 70),
    (230, 50, 240),
)
UNTRACKED = (160, 160, 160)


class VideoError(Exception):
    """The video cannot be read."""


def open_video(path: Path) -> cv2.VideoCapture:
    """OpenCV's reader of the video at ``path``; ``VideoError`` if it is none."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"cannot open {path} as a video")
    return capture


def video_frames(capture: cv2.VideoCapture, every: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(index, time_s, BGR frame)`` of every ``every``-th frame of an opened video; releases it at the end."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        index = 0
        while True:
            if index % every == 0:
                ok, frame = capture.read()
                if not ok:
                    return
                yield index, index / fps if fps else 0.0, frame
            elif not capture.grab():  # skipped frames are not decoded
                return
            index += 1
    finally:
        capture.release()


def video_facts(path: Path, default_fps: float = 25.0) -> tuple[int, float]:
    """How many frames the video says it has (0 if it does not say) and its frame rate (``default_fps`` if it does not
    say)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0), capture.get(cv2.CAP_PROP_FPS) or default_fps
    finally:
        capture.release()


def video_writer(path: Path, like: np.ndarray, fps: float) -> cv2.VideoWriter:
    """An MP4 writer for BGR frames shaped like ``like``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (like.shape[1], like.shape[0]))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    return writer


def encode_frame(frame: np.ndarray, image_format: str = "jpeg", quality: int = 90) -> bytes:
    """A BGR frame as JPEG (``quality``) or PNG bytes."""
    extension, parameters = (".png", []) if image_format == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok, encoded = cv2.imencode(extension, frame, parameters)
    if not ok:
        raise ValueError(f"OpenCV could not encode a frame as {image_format}")
    return encoded.tobytes()


def track_video(
    client: Client,
    model: str,
    path: Path,
    every: int = 1,
    options: Mapping[str, OptionValue] = {},
    sequence_id: str | None = None,
    image_format: str = "jpeg",
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Each sent frame (BGR) and its record ``{"frame_index", "time_s", ...answer}`` or ``{..., "error"}``, in order."""
    sent: list[tuple[int, float, np.ndarray]] = []
    frames = video_frames(open_video(path), every)  # a file that is no video fails here, not on gRPC's thread

    def requests() -> Iterator[tuple[bytes, Mapping[str, OptionValue]]]:
        for index, time_s, frame in frames:
            sent.append((index, time_s, frame))
            yield encode_frame(frame, image_format), options

    for answer in client.stream(model, requests(), sequence_id=sequence_id):
        index, time_s, frame = sent.pop(0)
        record: dict[str, Any] = {"frame_index": index, "time_s": round(time_s, 3)}
        if isinstance(answer, HandlerError):
            record["error"] = answer.as_dict()
        else:
            record.update(answer.json())
        yield frame, record


def draw_tracks(frame: np.ndarray, answer: Mapping[str, Any], min_score: float = 0.2) -> np.ndarray:
    """The BGR frame with each person's box, skeleton (joints scored over ``min_score``) and track ID drawn."""
    canvas = frame.copy()
    thickness = max(1, round(max(frame.shape[:2]) / 400))
    for person in answer.get("people", []):
        track_id = person.get("track_id")
        colour = UNTRACKED if track_id is None else ID_COLOURS[track_id % len(ID_COLOURS)]
        x1, y1, x2, y2 = (int(round(v)) for v in person["box"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        if person.get("keypoints"):
            draw_pose(
                canvas,
                np.array(person["keypoints"]),
                answer.get("skeleton", []),
                min_score,
                colour,
                colour,
                thickness,
                thickness + 1,
            )
        label = f"#{track_id}" if track_id is not None else "?"
        cv2.putText(
            canvas,
            label,
            (x1 + 2, max(y1 - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness + 0.2,
            colour,
            thickness,
            cv2.LINE_AA,
        )
    return canvas


def draw_pose(
    canvas: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[Sequence[int]],
    min_score: float,
    limb: tuple[int, int, int],
    joint: tuple[int, int, int],
    thickness: int,
    radius: int,
) -> None:
    """Draw onto ``canvas`` the joints of ``keypoints [K, 3]`` scoring at least ``min_score`` and the ``skeleton``'s
    limbs between them.

    Keypoints are continuous pixel coordinates (a pixel's centre at +0.5); OpenCV draws at pixel indices.
    """
    sure = keypoints[:, 2] >= min_score
    points = [(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in keypoints[:, :2]]
    for a, b in skeleton:
        if sure[a] and sure[b]:
            cv2.line(canvas, points[a], points[b], limb, thickness, cv2.LINE_AA)
    for index in np.flatnonzero(sure):
        cv2.circle(canvas, points[index], radius, joint, -1, cv2.LINE_AA)
