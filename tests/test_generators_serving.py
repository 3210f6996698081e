"""pix2pix and CycleGAN generators served by a real TorchServe, with identity oracles: the photo must come back."""

import base64

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from tests.fixtures.serving import BAD_REQUESTS, check_bad_requests_beside_good_ones, encode, post, send_together
from tests.test_images_out_serving import decode_picture, psnr, smooth_photo

CYCLEGAN, PIX2PIX = "cyclegan_oracle", "pix2pix_oracle"
TRAINED_SIDE = 256  # export/generators.yaml: pix2pix_edges2shoes
# (model, width, height, request form, options, answer's (height, width)); sent together: one mixed batch per model
CASES = [
    (CYCLEGAN, 640, 480, "raw", {"format": "png"}, (480, 640)),
    (CYCLEGAN, 333, 517, "multipart", {"format": "png"}, (517, 333)),  # padded to multiples of 4 and cut back
    (CYCLEGAN, 1500, 1000, "json", {"format": "png", "max_side": 600}, (400, 600)),
    (PIX2PIX, 640, 480, "raw", {"format": "png"}, (480, 640)),
    (PIX2PIX, 333, 517, "multipart", {"format": "png"}, (517, 333)),
    (PIX2PIX, 1500, 1000, "json", {"format": "png", "max_side": 600}, (400, 600)),
    (PIX2PIX, 640, 480, "json", {"format": "png", "keep_size": False}, (TRAINED_SIDE, TRAINED_SIDE)),
]
GENERIC = [
    request for request in BAD_REQUESTS if request[0] not in ("threshold out of range", "render with json format")
]


def resized(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return F.resize(torch.from_numpy(photo).permute(2, 0, 1), list(size), antialias=True).permute(1, 2, 0).numpy()


def test_identity_generators_hand_the_photo_back_at_every_size(server, http):
    photos = [smooth_photo(height, width, seed) for seed, (_, width, height, *_) in enumerate(CASES)]
    responses = send_together(
        list(range(len(CASES))),
        lambda i: post(server, http, CASES[i][0], encode(photos[i], "PNG"), CASES[i][3], CASES[i][4]),
    )
    for photo, (model, width, height, _, options, size), response in zip(photos, CASES, responses):
        case = f"{model} {width}x{height} {options}"
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png", (
            f"{case}: {response.text}"
        )
        picture = decode_picture(response.content)
        assert picture.shape[:2] == size, case
        if model == CYCLEGAN and size == photo.shape[:2]:
            np.testing.assert_array_equal(picture, photo, err_msg=case)  # [-1, 1] and back is exact
        else:  # resized (pix2pix: to 256x256 and back, which a smooth photo survives), the style tests' bound
            assert psnr(picture, resized(photo, size)) >= 40, case
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1, "the photos never shared a batch"


def test_a_trained_size_generator_answers_its_own_square_when_asked(server, http):
    photo = smooth_photo(300, 500, seed=9)
    response = post(server, http, PIX2PIX, encode(photo, "PNG"), "raw", {"keep_size": "false", "format": "png"})
    picture = decode_picture(response.content)
    assert picture.shape[:2] == (TRAINED_SIDE, TRAINED_SIDE)
    assert (
        psnr(picture, resized(photo, (TRAINED_SIDE, TRAINED_SIDE))) >= 40
    )  # stretched to the square, as pix2pix was trained


@pytest.mark.parametrize("model", [CYCLEGAN, PIX2PIX])
def test_bad_requests_for_generators(server, http, model):
    photo = np.random.default_rng(3).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    data = encode(photo, "PNG")
    sent = base64.b64encode(data).decode()
    bad = [
        ("max_side too small", dict(json={"image": sent, "max_side": 3}), 400, "InvalidOption", "'max_side'"),
        (
            "format gif",
            dict(json={"image": sent, "format": "gif"}),
            400,
            "InvalidOption",
            "'format' must be one of jpeg, png",
        ),
        (
            "photo too small",
            dict(data=encode(photo[:5, :7], "PNG"), headers={"Content-Type": "image/png"}),
            400,
            "InvalidImage",
            "at least 8",
        ),
    ]
    if model == PIX2PIX:
        bad.append(
            (
                "keep_size not a flag",
                dict(json={"image": sent, "keep_size": "maybe"}),
                400,
                "InvalidOption",
                "'keep_size' must be true or false",
            )
        )
    else:  # a ResNet generator answers at the photo's size: nothing to keep
        bad.append(
            (
                "keep_size",
                dict(json={"image": sent, "keep_size": False}),
                400,
                "UnknownOption",
                "unknown option 'keep_size'",
            )
        )
    expected_size = photo.shape[:2]

    def check_good(response):
        picture = decode_picture(response.content)
        assert picture.shape[:2] == expected_size
        if model == CYCLEGAN:
            np.testing.assert_array_equal(picture, photo)

    check_bad_requests_beside_good_ones(
        server,
        http,
        model,
        GENERIC + bad,
        send_good=lambda: post(server, http, model, data, "raw", {"format": "png"}),
        check_good=check_good,
    )
