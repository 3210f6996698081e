"""TorchServe's entry point for every archive: the handler class that model-config.yaml names, made once per worker.

TorchServe loads ``entry.py`` (``handlers/entry.py``, one line) at the archive's top and calls its ``handle``: first
with no data, to initialise, then once per batch. Which family serves is data (``handler.module``), not code, so
every archive carries the same serving tree and no recipe lists files.
"""

import importlib
import inspect
from collections.abc import Callable
from typing import Any

# The worker's one handler: a TorchServe worker process serves exactly one model.
_handle: Callable[[list[dict], Any], list] | None = None


def handler_class(module_name: str) -> type:
    """The one class defined in ``module_name`` that handles batches (has ``handle`` and ``initialize``)."""
    module = importlib.import_module(module_name)
    classes = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__ and hasattr(member, "handle") and hasattr(member, "initialize")
    ]
    if len(classes) != 1:
        raise ValueError(f"{module_name} must define exactly one handler class, found {[c.__name__ for c in classes]}")
    return classes[0]


def initialized_handler(module_name: str, context: Any) -> Callable[[list[dict], Any], list]:
    """The batch function of ``module_name``, initialised: its handler class's ``handle``, or for a module without one
    (the test fixtures' bare handlers) its own ``handle`` function, as TorchServe would take it."""
    module = importlib.import_module(module_name)
    function = getattr(module, "handle", None)
    if inspect.isfunction(function) and function.__module__ == module.__name__:
        function(None, context)
        return function
    handler = handler_class(module_name)()
    handler.initialize(context)
    return handler.handle


def handle(data: list[dict] | None, context: Any) -> list | None:
    """TorchServe's function entry point: ``data`` None initialises the handler named in model-config.yaml."""
    global _handle
    if data is None:
        _handle = initialized_handler(context.model_yaml_config["handler"]["module"], context)
        return None
    return _handle(data, context)
