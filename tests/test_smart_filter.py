"""The smart filter's own steps without TorchServe: the palette, the theme, the choice of a background."""

import pytest
import torch

from handlers.core.errors import RequestError
from handlers.smart_filter.steps import (
    EXPRESSION_BACKGROUNDS,
    FILTER_OPTIONS,
    KEYWORDS,
    PALETTE,
    choose_background,
    decision,
    largest,
)
from loadtest.scenarios import FILTER_BACKGROUNDS

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_every_expression_and_no_face_rank_the_whole_palette():
    assert set(EXPRESSION_BACKGROUNDS) == {*EXPRESSIONS, None}
    for ranking in EXPRESSION_BACKGROUNDS.values():
        assert sorted(ranking) == sorted(PALETTE)
    assert sorted(FILTER_BACKGROUNDS) == sorted(PALETTE)  # the load test checks answers against the same names


@pytest.mark.parametrize("name", [n for n, entry in PALETTE.items() if entry.make is not None])
@pytest.mark.parametrize("size", [(1, 1), (37, 211), (480, 640)])
def test_generated_backgrounds_fill_the_photo_and_are_the_same_every_time(name, size):
    photo = torch.zeros(3, *size, dtype=torch.uint8)
    made = PALETTE[name].make(photo)
    assert made.shape == (3, *size) and made.dtype == torch.uint8
    assert torch.equal(made, PALETTE[name].make(photo))
    if size == (480, 640):
        assert made.float().std() > 5  # a picture, not a flat fill


def test_the_expression_orders_and_the_theme_narrows():
    assert choose_background("happy", None, None) == "rainbow"
    assert choose_background("sad", None, None) == "sunset"
    assert choose_background(None, None, None) == "blur"
    assert choose_background("happy", frozenset({"gradient"}), None) == "sunset"  # happy ranks sunset above ocean
    assert choose_background("angry", frozenset({"gradient"}), None) == "ocean"
    assert choose_background("happy", frozenset({"gradient", "texture"}), None) == "sunset"
    assert choose_background("happy", frozenset({"gradient"}), "bokeh") == "bokeh"  # forced beats everything


def test_theme_keywords_are_checked():
    parse = FILTER_OPTIONS["theme"].parse
    assert parse("theme", "Rainbow, texture") == frozenset({"rainbow", "texture"})
    assert parse("theme", ["warm", "cool"]) == frozenset({"warm", "cool"})
    for bad in ("sparkles", " , "):
        with pytest.raises(RequestError, match="known: " + ", ".join(sorted(KEYWORDS))):
            parse("theme", bad)
    with pytest.raises(RequestError, match="must be one of rainbow"):
        FILTER_OPTIONS["background"].parse("background", "stars")


def test_the_largest_face_decides():
    faces = [
        {"box": [0, 0, 10, 10], "expression": {"label": "sad"}, "smiling": False},
        {"box": [50, 50, 90, 100], "expression": {"label": "happy"}, "smiling": True},
    ]
    assert largest(torch.tensor([face["box"] for face in faces], dtype=torch.float32)) == 1
    assert decision(faces, {"theme": None, "background": None}) == {
        "expression": "happy",
        "smiling": True,
        "background": "rainbow",
    }
    assert decision([], {"theme": None, "background": None}) == {
        "expression": None,
        "smiling": None,
        "background": "blur",
    }
