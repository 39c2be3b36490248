"""Importing ``MODULE:FUNC`` handlers.

Checks: a good spec imports; every way it can fail is HandlerNotFound (exit 2) with
a one-line message naming the spec.
"""

from __future__ import annotations

import pytest

from batchctl.core.errors import EXIT_BAD_INPUT
from batchctl.worker.demo import handle
from batchctl.worker.handler import HandlerNotFound, load_handler


def test_good_spec_imports_the_function() -> None:
    """``worker.demo:handle`` is the demo handler itself."""
    assert load_handler("batchctl.worker.demo:handle") is handle


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("no_such_module_xyz:f", "ModuleNotFoundError"),
        ("batchctl.worker.demo:nope", "has no 'nope'"),
        ("", "expected MODULE:FUNC"),
        ("batchctl.worker.part:FORMATS", "is not callable"),
        ("batchctl.worker.demo", "expected MODULE:FUNC"),
    ],
)
def test_bad_spec_is_a_config_error_naming_it(spec: str, why: str) -> None:
    """Missing module, missing or non-callable attribute, malformed spec: exit-2 error naming the spec."""
    with pytest.raises(HandlerNotFound, match=why) as caught:
        load_handler(spec)
    assert repr(spec) in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(caught.value)
