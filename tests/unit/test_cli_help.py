"""``batchctl --help`` and argument checks that come before any configuration is read.

Checks: the top-level help describes the tool (not the CLI module's docstring) and ends with
examples; every command's ``--help`` has a description and an ``examples:`` epilog of
``batchctl`` lines; a bad batch id (``status``, ``cancel``, ``retry``, ``submit --batch-id``)
exits 2 naming the id even where the Kubernetes configuration is missing (it would be 3 if the
configuration were read first); a usage error is one line, ``batchctl: error: ...``, pointing at ``--help``.
"""

from __future__ import annotations

import argparse

import pytest

from batchctl.frontend.cli import build_parser, main

NO_CLUSTER = {"KUBECONFIG": "/nonexistent/kubeconfig", "BATCHCTL_BACKEND": "kubernetes", "HOME": "/nonexistent"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_describes_the_tool_and_shows_examples() -> None:
    text = build_parser().format_help()
    assert "parse, call the library" not in text and "Exit codes in" not in text
    assert "Pub/Sub parts" in text and "examples:\n  batchctl demo" in text


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_help_says_what_it_does_with_examples(name: str) -> None:
    """A description paragraph, then ``examples:`` with at least one ``batchctl NAME`` line."""
    parser = subcommands()[name]
    assert parser.description and len(parser.description) > 40, f"`batchctl {name} --help` has no description"
    assert parser.epilog and parser.epilog.startswith("examples:\n"), f"`batchctl {name} --help` has no examples"
    assert f"batchctl {name}" in parser.epilog


@pytest.mark.parametrize("argv", [
    ["status", "BAD ID"], ["cancel", "BAD ID"], ["retry", "BAD ID"],
    ["submit", "in.jsonl", "--batch-id", "BAD ID"], ["status", "BAD ID", "--json"],
])
def test_a_bad_batch_id_exits_2_naming_it_before_configuration_is_read(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    """No kubeconfig anywhere: still exit 2 (bad input), one line naming 'BAD ID', not 3 (unreachable)."""
    assert main(argv, environ=NO_CLUSTER) == 2
    err = capsys.readouterr().err
    assert "invalid batch id 'BAD ID'" in err and "kubeconfig" not in err.lower()


@pytest.mark.parametrize("argv", [["frobnicate"], ["submit"], ["list", "--nope"], ["status", "BAD ID"]])
def test_a_usage_error_is_one_line_pointing_at_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 and exactly one line on stderr, 'batchctl: error: ...', like every other error."""
    assert main(argv, environ=NO_CLUSTER) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("batchctl: error: ") and "--help`" in err[0]
