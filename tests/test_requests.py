"""Request rows as TorchServe 0.12 hands them over (shapes recorded from a live server) and option parsing."""

import base64

import pytest

from handlers.core.errors import RequestError
from handlers.core.inputs import read_request
from handlers.core.options import boxes, choice, flag, integer, number, parse_options

IMAGE = b"\x89PNG\r\n\x1a\nfake"


def raw_headers(content_type: str = "image/png", **extra: str) -> dict:
    return {"body": {"content-type": content_type}, "Content-Type": content_type, **extra}


def test_raw_body_with_option_headers():
    request = read_request(
        {"body": bytearray(IMAGE)}, raw_headers(**{"X-Option-Flip-Test": "true", "X-Other": "ignored"})
    )
    assert request.image == IMAGE
    assert request.options == {"flip_test": "true"}


def test_multipart_fields_become_options():
    row = {"data": bytearray(IMAGE), "boxes": bytearray(b"[[1,2,3,4]]"), "render": bytearray(b"true")}
    request = read_request(row, {"data": {"content-type": "image/png"}, "boxes": {"content-type": ""}})
    assert request.image == IMAGE
    assert request.options == {"boxes": "[[1,2,3,4]]", "render": "true"}


def test_multipart_field_named_image():
    assert read_request({"image": bytearray(IMAGE)}, {}).image == IMAGE


def test_json_with_base64_and_typed_options():
    body = {"image": base64.b64encode(IMAGE).decode(), "boxes": [[1, 2, 3, 4]], "flip_test": True}
    request = read_request({"body": body}, raw_headers("application/json"))
    assert request.image == IMAGE
    assert request.options == {"boxes": [[1, 2, 3, 4]], "flip_test": True}


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(IMAGE).decode(),
        "data:image/png;base64," + base64.b64encode(IMAGE).decode(),
        base64.urlsafe_b64encode(IMAGE).decode(),
        "\n".join(base64.b64encode(IMAGE * 20).decode()[i : i + 76] for i in range(0, 320, 76)),
    ],
)
def test_base64_variants(encoded):
    assert read_request({"body": {"image": encoded}}, raw_headers("application/json")).image.startswith(IMAGE)


@pytest.mark.parametrize(
    ("row", "headers", "kind", "words"),
    [
        ({"body": bytearray()}, raw_headers(""), "EmptyRequest", "empty"),
        ({"body": bytearray(b'{"image": "x",')}, raw_headers("application/json"), "InvalidJSON", "not valid JSON"),
        ({"body": [1, 2]}, raw_headers("application/json"), "InvalidJSON", "object"),
        ({"body": {"data": "abc"}}, raw_headers("application/json"), "NoImage", "'image'"),
        ({"body": {"image": "!!not base64!!"}}, raw_headers("application/json"), "InvalidBase64", "base64"),
        ({"body": {"image": 42}}, raw_headers("application/json"), "InvalidBase64", "base64 string"),
        ({"body": {"image": ""}}, raw_headers("application/json"), "EmptyRequest", "empty"),
        ({"body": "hello"}, raw_headers("text/plain"), "InvalidRequest", "text"),
        ({}, {}, "NoImage", "no image"),
        ({"boxes": bytearray(b"[]")}, {}, "NoImage", "no image"),
        ({"data": bytearray(IMAGE), "image": bytearray(IMAGE)}, {}, "InvalidRequest", "both"),
    ],
)
def test_unreadable_requests_are_400_with_a_reason(row, headers, kind, words):
    with pytest.raises(RequestError) as caught:
        read_request(row, headers)
    assert caught.value.code == 400
    assert caught.value.kind == kind
    assert words in caught.value.message


def test_json_without_its_content_type_is_recognised():
    body = b'  {"image": "' + base64.b64encode(IMAGE) + b'", "flip_test": true}'
    request = read_request({"body": bytearray(body)}, raw_headers("application/octet-stream"))
    assert request.image == IMAGE and request.options == {"flip_test": True}
    with pytest.raises(RequestError, match="not valid JSON"):
        read_request({"body": bytearray(b'{"image": ')}, raw_headers(""))


def test_option_sent_twice_is_an_error():
    body = {"image": base64.b64encode(IMAGE).decode(), "render": True}
    with pytest.raises(RequestError, match="both as a header and in the body"):
        read_request({"body": body}, raw_headers("application/json", **{"X-Option-Render": "false"}))


def test_binary_fields_stay_bytes_and_options_wanting_text_reject_them():
    # A gRPC input map gives no content types: a background image must survive as bytes.
    request = read_request(
        {"data": bytearray(IMAGE), "boxes": bytearray(b"\xff\xfe"), "render": bytearray(b"true")}, {}
    )
    assert request.options == {"boxes": b"\xff\xfe", "render": "true"}
    for name in SPEC:
        with pytest.raises(RequestError, match=f"option '{name}' must be .*, got 2 bytes of binary data"):
            parse_options({name: b"\xff\xfe"}, SPEC)


SPEC = {
    "boxes": boxes(3, ""),
    "flip_test": flag(False, ""),
    "score_threshold": number(None, 0.0, 1.0, ""),
    "max_people": integer(None, 1, 10, ""),
    "format": choice(None, ("json", "png"), ""),
}


def test_options_parse_text_and_json_values_and_fill_defaults():
    parsed = parse_options(
        {"boxes": "[[1, 2, 3.5, 4]]", "flip_test": "Yes", "score_threshold": 0.5, "max_people": "3", "format": "PNG"},
        SPEC,
    )
    assert parsed == {
        "boxes": [[1, 2, 3.5, 4]],
        "flip_test": True,
        "score_threshold": 0.5,
        "max_people": 3,
        "format": "png",
    }
    assert parse_options({}, SPEC) == {name: option.default for name, option in SPEC.items()}


@pytest.mark.parametrize(
    ("sent", "words"),
    [
        ({"colour": "red"}, "unknown option 'colour'; this model accepts: boxes, flip_test"),
        ({"flip_test": "maybe"}, "'flip_test' must be true or false"),
        ({"score_threshold": "nan"}, "'score_threshold' must be a number from 0 to 1"),
        ({"score_threshold": 2}, "'score_threshold' must be a number from 0 to 1"),
        ({"max_people": 2.5}, "'max_people' must be a whole number"),
        ({"max_people": True}, "'max_people' must be a whole number"),
        ({"format": "gif"}, "'format' must be one of json, png"),
        ({"boxes": "[[1,2"}, "'boxes' must be a JSON list"),
        ({"boxes": {"x": 1}}, "'boxes' must be a list"),
        ({"boxes": [[1, 2, 3]]}, "'boxes[0]' must be [x1, y1, x2, y2] with 4 numbers from -1e+07 to 1e+07"),
        ({"boxes": [[1, 2, 3, "a"]]}, "'boxes[0]' must be [x1, y1, x2, y2]"),
        ({"boxes": [[0, 0, 1, 1], [5, 5, 1, 9]]}, "'boxes[1]' must be a box with x2 > x1 and y2 > y1"),
        ({"boxes": [[0, 0, 1, 1]] * 4}, "has 4 boxes; at most 3"),
        ({"boxes": "[[0, 0, 1, Infinity]]"}, "'boxes[0]' must be [x1, y1, x2, y2] with 4 numbers from -1e+07 to 1e+07"),
    ],
)
def test_bad_options_name_the_problem(sent, words):
    with pytest.raises(RequestError) as caught:
        parse_options(sent, SPEC)
    assert caught.value.code == 400
    assert words in caught.value.message
