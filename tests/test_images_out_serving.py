"""Person segmentation and style transfer served by a real TorchServe, with oracle models."""

import base64
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from tests.fixtures.oracles import paint_segments
from tests.fixtures.serving import BAD_REQUESTS, check_bad_requests_beside_good_ones, encode, post, send_together

SEGMENTER = "segmenter_oracle"
STYLE = "style_oracle"

SHAPES = [  # width, height, form
    (640, 480, "raw"),
    (480, 800, "multipart"),
    (1600, 1000, "json"),
    (333, 517, "raw"),
]


def decode_picture(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as picture:
        return np.asarray(picture.convert(picture.mode if picture.mode in ("RGB", "RGBA") else "RGB"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def interior(mask: np.ndarray, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` pixels inside the mask (and outside its complement)."""
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=margin)


def test_rle_mask_matches_the_painted_people_in_batches_of_mixed_sizes(server, http):
    photos = [paint_segments(width, height, seed) for seed, (width, height, _) in enumerate(SHAPES)]
    responses = send_together(
        list(range(len(SHAPES))), lambda i: post(server, http, SEGMENTER, encode(photos[i].image, "PNG"), SHAPES[i][2])
    )
    for (width, height, _), photo, response in zip(SHAPES, photos, responses):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["image"] == {"width": width, "height": height}
        rle = {"size": answer["mask"]["size"], "counts": answer["mask"]["counts"].encode()}
        mask = coco_mask.decode(rle).astype(bool)
        assert mask.shape == (height, width)
        assert iou(mask, photo.mask) >= 0.98, f"{width}x{height}: IoU {iou(mask, photo.mask):.4f}"
        assert answer["coverage"] == pytest.approx(mask.mean(), abs=1e-5)
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1


def test_long_thin_photo_is_segmented_within_the_models_bounds(server, http):
    """A 6000x60 strip (100:1) is shrunk to the 2080 px long side and stretched to 32 px, not blown up to 520x52000."""
    photo = paint_segments(6000, 60, seed=7)
    response = post(server, http, SEGMENTER, encode(photo.image, "PNG"), "raw")
    assert response.status_code == 200, response.text
    mask = coco_mask.decode(
        {"size": response.json()["mask"]["size"], "counts": response.json()["mask"]["counts"].encode()}
    )
    assert mask.shape == (60, 6000) and iou(mask.astype(bool), photo.mask) >= 0.9


def test_transparent_cut_out_alpha_is_the_mask(server, http):
    photo = paint_segments(640, 480, seed=3)
    response = post(
        server, http, SEGMENTER, encode(photo.image, "PNG"), "json", {"background": "transparent", "feather": 0}
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    cut_out = decode_picture(response.content)
    assert cut_out.shape == (480, 640, 4)
    assert iou(cut_out[..., 3] > 127, photo.mask) >= 0.98
    assert set(np.unique(cut_out[..., 3])) <= {0, 255}  # feather 0: a hard edge
    inside = photo.mask & (cut_out[..., 3] == 255)
    assert (cut_out[..., :3][inside] == photo.image[inside]).all()
    assert (cut_out[..., :3][cut_out[..., 3] == 0] == 0).all(), "the removed background must not travel hidden"


@pytest.mark.parametrize("background", ["transparent", "#1e90ff"])
def test_webp_answers_the_png_answers_pixels_in_fewer_bytes(server, http, background):
    photo = encode(paint_segments(640, 480, seed=5, noise=True).image, "PNG")
    answers = {
        image_format: post(server, http, SEGMENTER, photo, "raw", {"background": background, "format": image_format})
        for image_format in ("png", "webp")
    }
    assert answers["webp"].status_code == 200, answers["webp"].text
    assert answers["webp"].headers["Content-Type"] == "image/webp"
    assert answers["webp"].content[8:12] == b"WEBP"
    assert (decode_picture(answers["webp"].content) == decode_picture(answers["png"].content)).all()
    assert len(answers["webp"].content) < len(answers["png"].content)


def test_png_compression_trades_size_for_nothing_else(server, http):
    photo = encode(paint_segments(320, 240, seed=4).image, "PNG")
    answers = {
        level: post(
            server, http, SEGMENTER, photo, "raw", {"background": "transparent", "png_compression": level}
        ).content
        for level in (0, 1, 9)
    }
    assert len(answers[0]) > len(answers[1]) >= len(answers[9])
    assert all((decode_picture(answer) == decode_picture(answers[1])).all() for answer in answers.values())


def test_feather_softens_only_the_edge(server, http):
    photo = paint_segments(640, 480, seed=3)
    cut_out = decode_picture(
        post(
            server, http, SEGMENTER, encode(photo.image, "PNG"), "raw", {"background": "transparent", "feather": 3}
        ).content
    )
    alpha = cut_out[..., 3]
    soft = (alpha > 0) & (alpha < 255)
    assert soft.sum() > 0
    assert (alpha[interior(photo.mask, 12)] == 255).all() and (alpha[interior(~photo.mask, 12)] == 0).all()


@pytest.mark.parametrize("background", ["#1e90ff", "blur", "image"])
def test_backgrounds_replace_only_what_is_outside_the_mask(server, http, background):
    photo = paint_segments(640, 480, seed=4)
    options = {"background": background, "format": "png", "feather": 1}
    scenery = np.zeros((100, 150, 3), np.uint8)
    scenery[:, :, 1] = 200  # a green scenery, resized to cover the photo
    if background == "image":
        options["background"] = base64.b64encode(encode(scenery, "PNG")).decode()
    response = post(server, http, SEGMENTER, encode(photo.image, "PNG"), "json", options)
    assert response.status_code == 200, response.text
    picture = decode_picture(response.content).astype(int)
    inside, outside = interior(photo.mask, 6), interior(~photo.mask, 6)
    assert (picture[inside] == photo.image[inside]).all(), "pixels inside the mask must be untouched"
    if background == "#1e90ff":
        assert (picture[outside] == [0x1E, 0x90, 0xFF]).all()
    elif background == "image":
        assert (picture[outside] == [0, 200, 0]).all()
    else:
        original = photo.image.astype(int)[outside]
        assert np.abs(picture[outside] - original).mean() > 3, "the background should be blurred"
        assert abs(picture[outside].mean() - original.mean()) < 3, "blurring keeps the background's brightness"


def test_background_image_as_a_multipart_file(server, http):
    photo = paint_segments(320, 240, seed=5)
    scenery = np.full((60, 80, 3), 77, np.uint8)
    files = {
        "data": ("photo.png", encode(photo.image, "PNG"), "image/png"),
        "background": ("scenery.png", encode(scenery, "PNG"), "image/png"),
    }
    url = f"{server.inference_url}/predictions/{SEGMENTER}"
    default = http.post(url, files=files, timeout=300)
    assert default.status_code == 200 and default.headers["Content-Type"] == "image/jpeg", default.text
    exact = http.post(url, files={**files, "format": (None, "png")}, timeout=300)
    picture = decode_picture(exact.content).astype(int)
    # The default feather (sigma 2) reaches 6 px; 10 erosion steps keep at least 7 px away on diagonals too.
    assert (picture[interior(~photo.mask, 10)] == 77).all()
    assert (picture[interior(photo.mask, 10)] == photo.image[interior(photo.mask, 10)]).all()


def test_twelve_megapixel_jpeg_in_and_png_cut_out_out(server, http):
    photo = paint_segments(4000, 3000, seed=6, noise=True)
    data = encode(photo.image, "JPEG")
    response = post(server, http, SEGMENTER, data, "json", {"background": "transparent"})
    assert response.status_code == 200, response.text[:300]
    cut_out = decode_picture(response.content)
    assert cut_out.shape == (3000, 4000, 4)
    assert len(response.content) > 10_000_000, "a 12 MP cut-out of a noisy photo is a large PNG"


# (name, options sent as JSON with a small black PNG, expected type, words the message must contain): each a 400.
SEGMENTER_BAD_OPTIONS = [
    ("bad background colour", {"background": "#12345g"}, "InvalidOption", "'background' must be"),
    (
        "background not an image",
        {"background": base64.b64encode(b"not an image at all, just words " * 4).decode()},
        "InvalidImage",
        "the background image",
    ),
    ("transparent JPEG", {"background": "transparent", "format": "jpeg"}, "InvalidOption", "JPEG has no transparency"),
    ("picture without background", {"format": "png"}, "InvalidOption", "which background"),
    ("WebP without background", {"format": "webp"}, "InvalidOption", "which background"),
]
BLACK_PNG_BASE64 = base64.b64encode(encode(np.zeros((40, 60, 3), np.uint8), "PNG")).decode()
SEGMENTER_BAD_REQUESTS = [
    (name, dict(json={"image": BLACK_PNG_BASE64, **options}), 400, kind, words)
    for name, options, kind, words in SEGMENTER_BAD_OPTIONS
]
GENERIC = [
    request for request in BAD_REQUESTS if request[0] not in ("threshold out of range", "render with json format")
]


def test_bad_requests_for_the_segmenter(server, http):
    photo = paint_segments(640, 480, seed=8)
    data = encode(photo.image, "PNG")

    def check(response):
        rle = {"size": response.json()["mask"]["size"], "counts": response.json()["mask"]["counts"].encode()}
        assert iou(coco_mask.decode(rle).astype(bool), photo.mask) >= 0.98

    check_bad_requests_beside_good_ones(
        server,
        http,
        SEGMENTER,
        GENERIC + SEGMENTER_BAD_REQUESTS,
        send_good=lambda: post(server, http, SEGMENTER, data),
        check_good=check,
    )


STYLE_CASES = [  # width, height, options, expected size
    (640, 480, {"format": "png"}, (480, 640)),
    (333, 517, {"format": "png"}, (517, 333)),
    (1500, 1000, {"format": "png", "max_side": 600}, (400, 600)),
]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


def smooth_photo(height: int, width: int, seed: int) -> np.ndarray:
    """Gentle colour waves: resizing filters (OpenCV's area average, torchvision's antialiased bilinear) agree on
    them."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    waves = [
        127 + 100 * np.sin(xs / rng.uniform(20, 40) + rng.uniform(0, 6)) * np.cos(ys / rng.uniform(20, 40))
        for _ in range(3)
    ]
    return np.stack(waves, axis=2).round().astype(np.uint8)


def test_identity_style_returns_the_photo(server, http):
    import torch
    from torchvision.transforms.v2 import functional as F

    photos = [smooth_photo(h, w, seed) for seed, (w, h, _, _) in enumerate(STYLE_CASES)]
    responses = send_together(
        list(range(len(STYLE_CASES))),
        lambda i: post(server, http, STYLE, encode(photos[i], "PNG"), "json", STYLE_CASES[i][2]),
    )
    for photo, (_, _, _, size), response in zip(photos, STYLE_CASES, responses):
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png", response.text
        styled = decode_picture(response.content)
        assert styled.shape[:2] == size
        expected = (
            photo
            if photo.shape[:2] == size
            else F.resize(torch.from_numpy(photo).permute(2, 0, 1), list(size), antialias=True).permute(1, 2, 0).numpy()
        )
        assert psnr(styled, expected) >= 40


def test_style_jpeg_quality_option(server, http):
    photo = np.random.default_rng(2).integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    low = post(server, http, STYLE, encode(photo, "PNG"), "raw", {"quality": 20})
    high = post(server, http, STYLE, encode(photo, "PNG"), "raw", {"quality": 95})
    assert low.headers["Content-Type"] == high.headers["Content-Type"] == "image/jpeg"
    assert len(low.content) < len(high.content)


def test_bad_requests_for_style(server, http):
    photo = np.random.default_rng(3).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    data = encode(photo, "PNG")
    style_bad = [
        (
            "max_side too small",
            dict(json={"image": base64.b64encode(data).decode(), "max_side": 3}),
            400,
            "InvalidOption",
            "'max_side'",
        ),
        (
            "format gif",
            dict(json={"image": base64.b64encode(data).decode(), "format": "gif"}),
            400,
            "InvalidOption",
            "'format' must be one of jpeg, png",
        ),
        (
            "photo too small to style",
            dict(data=encode(photo[:5, :7], "PNG"), headers={"Content-Type": "image/png"}),
            400,
            "InvalidImage",
            "at least 8",
        ),
        (
            "strip styled too thin",
            dict(
                json={
                    "image": base64.b64encode(encode(np.zeros((20, 3000, 3), np.uint8), "PNG")).decode(),
                    "max_side": 1024,
                }
            ),
            400,
            "InvalidImage",
            "at least 8",
        ),
    ]
    check_bad_requests_beside_good_ones(
        server,
        http,
        STYLE,
        GENERIC + style_bad,
        send_good=lambda: post(server, http, STYLE, data, "raw", {"format": "png"}),
        check_good=lambda response: np.testing.assert_array_equal(decode_picture(response.content), photo),
    )
