"""What a handler's return value becomes (``worker/results.py``): every accepted kind of value,
generators and coroutines run (with or without an output), anything else refused with a
reason; ``wrap`` returns the encoded result (for the worker's writers) only when DEST is set;
a part's result object is overwritten by a second write (``Sink.write_part``), never torn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from batchctl.core.sink import Sink
from batchctl.worker.results import HandlerResultRejected, PartResult, encode, outcome, result_of, wrap


def gen() -> Iterator[dict[str, int]]:
    yield {"a": 1}
    yield {"a": 2}


async def coro() -> list[str]:
    return ["x", "y"]


async def agen() -> AsyncIterator[int]:
    yield 1
    yield 2


@pytest.mark.parametrize(("value", "body", "records"), [
    (None, b"", 0),
    (b'{"a":1}', b'{"a":1}\n', 1),
    (b'{"a":1}\n{"a":2}\n', b'{"a":1}\n{"a":2}\n', 2),
    (bytearray(b"[1]"), b"[1]\n", 1),
    (memoryview(b"[1]\n"), b"[1]\n", 1),
    ('{"t":"zoë"}', '{"t":"zoë"}\n'.encode(), 1),
    ("", b"", 0),
    ({"a": 1, 2: "b"}, b'{"a":1,"2":"b"}\n', 1),
    ([{"a": 1}, "s", 3, None, [1]], b'{"a":1}\n"s"\n3\nnull\n[1]\n', 5),
    ((b'{"raw":1}\n', {"b": 2}), b'{"raw":1}\n{"b":2}\n', 2),
    ([], b"", 0),
])
def test_encode_plain_values(value: Any, body: bytes, records: int) -> None:
    """Raw values are the result as written; a dict is one record; iterables are records."""
    assert encode(outcome(value)) == (body, records)


def test_generator_is_drained_into_records() -> None:
    assert encode(outcome(gen())) == (b'{"a":1}\n{"a":2}\n', 2)


def test_coroutine_runs_to_completion() -> None:
    assert encode(outcome(coro())) == (b'"x"\n"y"\n', 2)


def test_async_generator_is_drained() -> None:
    assert encode(outcome(agen())) == (b"1\n2\n", 2)


def test_iterables_other_than_lists_are_records() -> None:
    assert encode(outcome(range(3))) == (b"0\n1\n2\n", 3)
    assert encode(outcome(iter([{"k": "v"}]))) == (b'{"k":"v"}\n', 1)


@pytest.mark.parametrize("value", [42, 1.5, True, object()])
def test_other_values_are_refused_with_what_to_return(value: Any) -> None:
    with pytest.raises(HandlerResultRejected, match=f"handler returned {type(value).__name__}: return None"):
        outcome(value)


def test_unserialisable_record_is_refused_naming_it() -> None:
    with pytest.raises(HandlerResultRejected, match="result record 1 is not JSON-serialisable"):
        encode(outcome([{"ok": 1}, {"bad": object()}]))


def test_multi_line_bytes_record_is_refused() -> None:
    with pytest.raises(HandlerResultRejected, match="result record 0 is bytes holding several lines"):
        encode(outcome([b"a\nb"]))


def part(index: int) -> Any:
    return SimpleNamespace(index=index, records=[{"i": index}], batch_id="b")


def test_wrap_runs_a_generator_handler_without_output() -> None:
    """No DEST: the generator still runs (its work is the point), nothing is written."""
    ran: list[int] = []

    def handler(p: Any) -> Iterator[int]:
        ran.append(p.index)
        yield p.index

    assert wrap(handler, output=False)(part(3)) is None
    assert ran == [3]


def test_wrap_runs_an_async_handler_without_output() -> None:
    ran: list[int] = []

    async def handler(p: Any) -> None:
        ran.append(p.index)

    wrap(handler, output=False)(part(4))
    assert ran == [4]


def test_wrap_refuses_a_number_even_without_output() -> None:
    with pytest.raises(HandlerResultRejected):
        wrap(lambda p: 7, output=False)(part(0))


def test_wrap_with_output_returns_the_encoded_result() -> None:
    """DEST set: the handler's records come back encoded, for a writer; nothing is written here."""
    handler = wrap(lambda p: ({"out": r["i"]} for r in p.records), output=True)
    assert handler(part(42)) == PartResult(b'{"out":42}\n', 1)
    assert result_of(PartResult(b"x\n", 1)) == PartResult(b"x\n", 1)
    assert result_of(None) == PartResult(b"", 0)


def test_plain_values_encode_as_with_the_options() -> None:
    """``encode`` tries bare ``orjson.dumps`` first: what it accepts must come out byte for byte as
    with the options, and what only the options accept (non-str keys, numpy) still works."""
    from batchctl.worker.results import _DUMPS

    records: list[Any] = [{"a": 1, "b": [1.5, None, True], "c": {"d": "é\n"}}, [1, "x"], "s", 2, None]
    assert encode(records)[0] == b"\n".join(map(_DUMPS, records)) + b"\n"
    assert encode([{1: "a"}, {"k": 2}]) == (b'{"1":"a"}\n{"k":2}\n', 2)


def test_a_part_result_object_is_overwritten_whole(tmp_path: Path) -> None:
    """DEST/part-000042.jsonl: a second write replaces the first; the folder is made when missing."""
    sink = Sink(str(tmp_path / "out"))
    sink.write_part(42, b'{"out":1}\n{"out":2}\n', 2)
    sink.write_part(42, b'{"out":42}\n', 1)
    path = tmp_path / "out" / "part-000042.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"out": 42}]
    assert sink.records_out(43) == (1, list(range(42)))
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-000042.jsonl"]
