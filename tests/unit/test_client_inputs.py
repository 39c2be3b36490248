"""The Python API's argument handling (pure): handler functions to ``module:function`` names,
what ``submit`` accepts as a source, records written as JSONL, and the lazy ``batchctl.Client``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchctl.core.errors import BadInput
from batchctl.frontend.client import BatchStatus, _Inputs, handler_spec, write_records
from tests.support import handlers


def test_handler_spec_from_a_function() -> None:
    assert handler_spec(handlers.echo) == "tests.support.handlers:echo"
    assert handler_spec("pkg.mod:fn") == "pkg.mod:fn"


@pytest.mark.parametrize("handler", [lambda p: None, print, BatchStatus.from_dict])
def test_handler_spec_refuses_what_workers_cannot_import(handler: Any) -> None:
    with pytest.raises(BadInput, match="workers import it by name"):
        handler_spec(handler)


def test_paths_pass_through(tmp_path: Path) -> None:
    with _Inputs(tmp_path) as (inputs, fmt):
        assert (inputs, fmt) == ([str(tmp_path)], None)
    with _Inputs(["gs://b/x", tmp_path]) as (inputs, fmt):
        assert (inputs, fmt) == (["gs://b/x", str(tmp_path)], None)


def test_records_become_a_temporary_jsonl_file_removed_after() -> None:
    with _Inputs({"i": i} for i in range(3)) as (inputs, fmt):
        path = Path(inputs[0])
        assert fmt == "jsonl"
        assert [json.loads(line) for line in path.read_text().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert not path.exists()


@pytest.mark.parametrize("source", [b"bytes", {"a": 1}, 42])
def test_other_sources_are_refused(source: Any) -> None:
    with pytest.raises(BadInput, match="source must be"), _Inputs(source):
        pass


def test_unserialisable_record_is_bad_input() -> None:
    with pytest.raises(BadInput, match="record 1 is not JSON-serialisable"):
        write_records([{"a": 1}, {"b": object()}])


def test_client_is_lazy() -> None:
    """``import batchctl`` loads no front end; ``batchctl.Client`` does, on first use."""
    code = ("import sys, batchctl; assert 'batchctl.frontend.client' not in sys.modules; "
            "c = batchctl.Client; assert 'batchctl.frontend.client' in sys.modules; print(c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "Client"


@pytest.mark.parametrize("module", ["batchctl.worker.cli", "batchctl.splitter.submit", "batchctl.core.sink"])
def test_the_storage_client_loads_only_where_a_bucket_is_used(module: str) -> None:
    """A worker without --output, or a submit of local files, does not import google.cloud.storage
    (it costs every worker's start-up)."""
    code = f"import sys, {module}; print('google.cloud.storage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
