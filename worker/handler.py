"""Import the handler named ``MODULE:FUNC``; failing that is a configuration error (exit 2)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from batchctl.core.errors import BadInput

Handler = Callable[[Any], object]


class HandlerNotFound(BadInput):
    """Raised when ``MODULE:FUNC`` cannot be imported or does not name a callable."""


def load_handler(spec: str) -> Handler:
    """The callable ``spec`` names; HandlerNotFound (one line, naming ``spec``) otherwise."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise HandlerNotFound(f"handler {spec!r} cannot be imported: expected MODULE:FUNC")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the same config error
        raise HandlerNotFound(f"handler {spec!r} cannot be imported: {type(exc).__name__}: {exc}") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise HandlerNotFound(f"handler {spec!r} cannot be imported: module {module_name!r} has no {func_name!r}")
    if not callable(func):
        raise HandlerNotFound(f"handler {spec!r} is not callable")
    handler: Handler = func
    return handler
