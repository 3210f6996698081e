"""Person patches from videos (``humanserve patches``): sampled frames through a served model, a square patch per
person.

Every ``every``-th frame is sent (frame 0, every, 2 every, ...). When a sampled frame shows a
person scoring at least ``score_threshold``, ``look_back`` more frames spread over the second
before it are sent too: frame ``f - round(k * fps / (look_back + 1))`` for k = 1..look_back,
those after the previous sampled frame. Each kept person (the best, or all with
``all_people``) becomes a square patch: the box grown by ``padding`` of its longer side on
each side, squared about its centre, cut from the frame (a constant colour where it leaves
the frame, never stretched) and scaled to ``size`` pixels. Frames already handled (listed in
``frames.csv``) are skipped on a rerun.
"""

import csv
import json
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .client import Client, OptionValue
from .pairing import PATCH_COLUMNS
from .progress import Progress
from .tracking import open_video, video_facts

FRAME_COLUMNS = ("video", "frame", "people")
FILL = (0, 0, 0)  # where a patch's square leaves the frame


@dataclass(frozen=True)
class PatchSettings:
    """How frames are sampled and patches cut."""

    every: int = 24
    look_back: int = 4
    score_threshold: float = 0.5
    padding: float = 0.1
    size: int = 256
    all_people: bool = False


def look_back_frames(frame: int, fps: float, settings: PatchSettings) -> list[int]:
    """The frames sent besides sampled ``frame`` when it shows a person: spread over the second before it, after the
    previous sample."""
    earlier = {frame - round(k * fps / (settings.look_back + 1)) for k in range(1, settings.look_back + 1)}
    return sorted(f for f in earlier if max(frame - settings.every, -1) < f < frame)


def square_around(box: list[float], padding: float) -> tuple[float, float, float]:
    """The patch's square ``(x1, y1, side)`` for a person ``box``: grown by ``padding`` of the longer side each way,
    same centre."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * padding)
    return (x1 + x2 - side) / 2, (y1 + y2 - side) / 2, side


def cut_patch(frame: np.ndarray, box: list[float], padding: float, size: int) -> np.ndarray:
    """The ``size`` x ``size`` patch of ``box`` from ``frame``: one scale and a shift, ``FILL`` outside the frame.

    Shrinking goes through ``k * size`` pixels (k whole, the warp's own scale between 1/2
    and 1) and then k x k block means, so a large box is averaged rather than sampled.
    """
    x1, y1, side = square_around(box, padding)
    blocks = max(1, int(side // size))
    cut = blocks * size
    scale = cut / side
    # Continuous coordinates: frame point p lands at (p - corner) * scale; OpenCV's matrix maps pixel centres.
    matrix = np.array([[scale, 0, (0.5 - x1) * scale - 0.5], [0, scale, (0.5 - y1) * scale - 0.5]])
    patch = cv2.warpAffine(
        frame, matrix, (cut, cut), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL
    )
    return patch if blocks == 1 else cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def kept_people(answer: Mapping[str, Any], settings: PatchSettings) -> list[dict[str, Any]]:
    """The people of an answer that become patches: at least the score threshold, the best only unless
    ``all_people``."""
    people = sorted(
        (p for p in answer.get("people", []) if p["score"] >= settings.score_threshold), key=lambda p: -p["score"]
    )
    return people if settings.all_people else people[:1]


def frames_done(out: Path) -> set[tuple[str, int]]:
    """(video, frame) pairs a previous run handled."""
    path = out / "frames.csv"
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {(row["video"], int(row["frame"])) for row in csv.DictReader(handle)}


class PatchWriter:
    """Appends patch rows and handled frames to ``out``'s CSVs and patch files to ``out/patches``, flushed as they
    come."""

    def __init__(self, out: Path):
        (out / "patches").mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files = {}
        self.writers = {}
        for name, columns in (("patches.csv", PATCH_COLUMNS), ("frames.csv", FRAME_COLUMNS)):
            path = out / name
            fresh = not path.exists()
            self.files[name] = open(path, "a", newline="")
            self.writers[name] = csv.writer(self.files[name])
            if fresh:
                self.writers[name].writerow(columns)

    def frame(
        self,
        video: str,
        index: int,
        time_s: float,
        image: np.ndarray,
        people: list[dict[str, Any]],
        settings: PatchSettings,
    ) -> None:
        for person, found in enumerate(people):
            patch = f"{Path(video).stem}_{index:07d}_{person}.jpg"
            cv2.imwrite(
                str(self.out / "patches" / patch), cut_patch(image, found["box"], settings.padding, settings.size)
            )
            keypoints = [[round(v, 2) for v in joint] for joint in found.get("keypoints", [])]
            self.writers["patches.csv"].writerow(
                (
                    video,
                    index,
                    round(time_s, 3),
                    person,
                    patch,
                    *[round(v, 2) for v in found["box"]],
                    found["score"],
                    found.get("view", ""),
                    json.dumps(keypoints),
                )
            )
        self.writers["frames.csv"].writerow((video, index, len(people)))
        for handle in self.files.values():
            handle.flush()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def sampled_with_look_back(
    path: Path, settings: PatchSettings, skip: set[int]
) -> Iterator[tuple[int, float, np.ndarray, list[tuple[int, float, np.ndarray]]]]:
    """Each sampled frame not in ``skip`` with the frames it may look back at: ``(index, time_s, BGR, [(index, time_s,
    BGR), ...])``."""
    _, fps = video_facts(path)
    capture = open_video(path)
    recent: deque = deque(maxlen=settings.every)
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                return
            if index % settings.every == 0 and index not in skip:
                wanted = set(look_back_frames(index, fps, settings))
                yield index, index / fps, image, [item for item in recent if item[0] in wanted]
            recent.append((index, index / fps, image))
            index += 1
    finally:
        capture.release()


def extract_patches(
    client: Client,
    model: str,
    video: Path,
    out: Path,
    settings: PatchSettings,
    options: Mapping[str, OptionValue] = {},
    concurrency: int = 4,
) -> tuple[int, int]:
    """Send ``video``'s sampled frames (and their look-backs) to ``model``, write the patches; (frames handled, patches
    written)."""
    skip = {frame for name, frame in frames_done(out) if name == video.name}
    total, _ = video_facts(video)
    progress = Progress(video.name, -(-total // settings.every) if total else 0)
    writer = PatchWriter(out)

    def people_of(image: np.ndarray) -> list[dict[str, Any]]:
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        return kept_people(client.predict(model, jpeg, options).json(), settings)

    def handle(sample) -> list[tuple[int, float, np.ndarray, list]]:
        index, time_s, image, earlier = sample
        found = people_of(image)
        handled = [(index, time_s, image, found)]
        if found:  # someone is there: look back over the second before
            handled += [(i, t, frame, people_of(frame)) for i, t, frame in earlier]
        return handled

    frames = patches = 0
    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            for sample in sampled_with_look_back(video, settings, skip):
                pending.append(pool.submit(handle, sample))
                while len(pending) > 2 * concurrency or (pending and pending[0].done()):
                    frames, patches = _write(pending.popleft(), writer, video, settings, progress, frames, patches)
            while pending:
                frames, patches = _write(pending.popleft(), writer, video, settings, progress, frames, patches)
    finally:
        for future in pending:
            future.cancel()
        writer.close()
        progress.close()
    return frames, patches


def _write(
    future: Future,
    writer: PatchWriter,
    video: Path,
    settings: PatchSettings,
    progress: Progress,
    frames: int,
    patches: int,
) -> tuple[int, int]:
    for index, time_s, image, people in future.result():
        writer.frame(video.name, index, time_s, image, people, settings)
        frames, patches = frames + 1, patches + len(people)
    progress.step()
    return frames, patches
