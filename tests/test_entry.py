"""The archives' one entry point: it makes the handler that model-config.yaml names, a class or a bare function."""

from types import SimpleNamespace

import pytest

from handlers.core import entry
from handlers.pose.handler import PoseHandler


def context_for(module: str) -> SimpleNamespace:
    return SimpleNamespace(model_yaml_config={"handler": {"module": module}})


def test_a_family_module_gives_its_one_handler_class():
    assert entry.handler_class("handlers.pose.handler") is PoseHandler


def test_a_module_with_a_bare_handle_function_is_served_through_it():
    context = context_for("tests.fixtures.empty_handler")
    assert entry.handle(None, context) is None
    assert entry.handle([{"body": b"x"}, {"body": b"y"}], context) == ["{}", "{}"]


def test_a_module_without_a_handler_is_refused_by_name():
    with pytest.raises(ValueError, match="handlers.core.errors must define exactly one handler class"):
        entry.handle(None, context_for("handlers.core.errors"))
