"""``batchctl worker`` flags and configuration errors, called in-process (no Pub/Sub reached).

Checks: every flag lands on its own namespace key; bad configuration returns 2 with
one line on stderr naming the culprit, before any connection is made.
"""

from __future__ import annotations

import argparse

import pytest

from batchctl.worker.cli import add_arguments, run

ENV = {"GOOGLE_CLOUD_PROJECT": "p", "BATCHCTL_PREFIX": "bx"}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_parse_as_text_and_default_to_none() -> None:
    """Flags keep their text for uniform validation; unset flags are None so variables apply."""
    args = parse("--batch-id", "b1", "--ack-deadline", "15")
    assert (args.worker_batch_id, args.worker_lease_s, args.worker_concurrency) == ("b1", "15", None)


def test_unimportable_handler_returns_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 at once, naming the handler."""
    code = run(parse("--batch-id", "b1", "--handler", "no_such_mod_q:f"), ENV)
    err = capsys.readouterr().err
    assert code == 2
    assert "'no_such_mod_q:f'" in err and err.count("\n") == 1


def test_bad_flag_and_variable_return_2_naming_both(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag and a bad variable are reported together in one line."""
    code = run(parse("--concurrency", "many"), {**ENV, "BATCHCTL_BATCH_ID": "b1", "BATCHCTL_LEASE_S": "-1"})
    err = capsys.readouterr().err
    assert code == 2
    assert "--concurrency='many'" in err and "BATCHCTL_LEASE_S='-1'" in err
