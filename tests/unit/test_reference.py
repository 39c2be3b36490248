"""``docs/reference.md`` says what the code does: its tables are checked against the parser and the source.

Checks: the command table lists exactly the parser's subcommands; each command has a section
``### `batchctl NAME ...` `` naming its positional arguments, whose flag table lists exactly
its flags (the options every command takes have a table of their own); the environment tables
list exactly the ``BATCHCTL_*`` variables the code reads (every string constant naming one).
A failure says which row or section to add or remove.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from batchctl.frontend.cli import build_parser, common_options

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference.md"
SOURCES = ("batchctl/__init__.py", "batchctl/__main__.py", "batchctl/core", "batchctl/frontend",
           "splitter", "worker", "launcher")
COMMON = "Options every command takes"
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
VARIABLE = re.compile(r"BATCHCTL_[A-Z0-9_]+")


def sections(text: str, level: str) -> dict[str, str]:
    """Heading text (without the hashes) -> body, for headings of exactly ``level`` ("##" or "###")."""
    found: dict[str, str] = {}
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        found[heading.strip()] = body
    return found


def first_cells(body: str) -> list[str]:
    """The first column of every table row in ``body`` (headers and separators left out)."""
    cells = []
    for line in body.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells.append(line.split("|")[1].strip())
    return [c for c in cells if c not in ("command", "flag", "variable", "code", "resource", "attribute", "state")]


def reference() -> str:
    return REFERENCE.read_text()


def top_section(title: str) -> str:
    return sections(reference(), "##")[title]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def summaries() -> dict[str, str]:
    """Command name -> its one line in ``batchctl --help``."""
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.help or "" for a in action._choices_actions}


def command_sections() -> dict[str, tuple[str, str]]:
    """Command name -> (heading, body) of its ``### `batchctl NAME ...` `` section."""
    found = {}
    for heading, body in sections(top_section("Commands"), "###").items():
        match = re.fullmatch(r"`batchctl ([a-z-]+)([^`]*)`", heading)
        if match:
            found[match.group(1)] = (heading, body)
    return found


def flags_of(parser: argparse.ArgumentParser, *, leave_out: set[str]) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - leave_out


def documented_flags(body: str) -> set[str]:
    return {flag for cell in first_cells(body) for flag in FLAG.findall(cell)}


COMMON_FLAGS = flags_of(common_options(default=None), leave_out=set()) | {"--help"}


def test_command_table_lists_every_command() -> None:
    listed = {re.sub(r"`batchctl ([a-z-]+)`", r"\1", c) for c in first_cells(top_section("Commands").split("###")[0])}
    parsed = set(subcommands())
    missing = sorted(parsed - listed)
    assert not missing, "docs/reference.md, table under '## Commands': add " + "; ".join(
        f"| `batchctl {name}` | {summaries().get(name) or '...'} |" for name in missing)
    assert not listed - parsed, f"docs/reference.md lists commands the parser lacks: {sorted(listed - parsed)}"


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_each_command_has_a_section_whose_flag_table_matches_its_parser(name: str) -> None:
    parser = subcommands()[name]
    positionals = [a.metavar or a.dest for a in parser._actions if not a.option_strings]
    sections_found = command_sections()
    wanted = " ".join(["batchctl", name, *map(str, positionals)])
    assert name in sections_found, (
        f"docs/reference.md: add a section '### `{wanted}`' under '## Commands', with a table "
        "'| flag | default | meaning |' of its flags")
    heading, body = sections_found[name]
    for metavar in positionals:
        assert str(metavar) in heading, f"docs/reference.md: name the argument {metavar} in the heading '{heading}'"
    parsed = flags_of(parser, leave_out=COMMON_FLAGS)
    documented = documented_flags(body)
    missing = sorted(parsed - documented)
    assert not missing, f"docs/reference.md, table under '### {heading}': add " + "; ".join(
        f"| `{f'{flag} {row_metavar(parser, flag)}'.strip()}` | {row_default(parser, flag)} | "
        f"{row_help(parser, flag)} |" for flag in missing)
    extra = sorted(documented - parsed)
    assert not extra, f"docs/reference.md, table under '### {heading}': remove the rows of {extra} (no such flag)"


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def row_metavar(parser: argparse.ArgumentParser, flag: str) -> str:
    action = _action(parser, flag)
    if action.nargs == 0:
        return ""
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return str(action.metavar or action.dest.upper())


def row_default(parser: argparse.ArgumentParser, flag: str) -> str:
    default = _action(parser, flag).default
    return "off" if default is False else "" if default is None else str(default)


def row_help(parser: argparse.ArgumentParser, flag: str) -> str:
    return _action(parser, flag).help or "..."


def test_options_every_command_takes_have_their_own_table() -> None:
    """The common options, and those of ``batchctl`` itself (``--version``), in one table."""
    body = sections(top_section("Commands"), "###")[COMMON]
    documented = documented_flags(body)
    parsed = COMMON_FLAGS | flags_of(build_parser(), leave_out=set())
    assert documented == parsed, (
        f"docs/reference.md, table under '### {COMMON}': add rows for {sorted(parsed - documented)}, "
        f"remove the rows of {sorted(documented - parsed)}")


def variables_in_code() -> set[str]:
    """Every string constant that is exactly a ``BATCHCTL_*`` name, in the installed package's source."""
    found: set[str] = set()
    for source in SOURCES:
        path = REPO / source
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.fullmatch(node.value):
                    found.add(node.value)
    return found


def test_environment_tables_list_every_variable_the_code_reads() -> None:
    body = top_section("Environment variables")
    documented = {v for cell in first_cells(body) for v in VARIABLE.findall(cell)}
    code = variables_in_code()
    missing = sorted(code - documented)
    assert not missing, "docs/reference.md, a table under '## Environment variables' (Where things are, Launcher " \
        "or Worker): add " + "; ".join(f"| `{v}` | DEFAULT | BOUNDS | MEANING |" for v in missing)
    extra = sorted(documented - code)
    assert not extra, f"docs/reference.md documents variables no code reads: remove the rows of {extra}"


def test_finds_variables_and_flags_it_checks() -> None:
    """The scanners see what they must (guards against a parser that silently finds nothing)."""
    assert {"BATCHCTL_PREFIX", "BATCHCTL_WORKER_IMAGE", "BATCHCTL_LEASE_S"} <= variables_in_code()
    assert "--records-per-part" in flags_of(subcommands()["submit"], leave_out=COMMON_FLAGS)
    assert {"submit", "worker", "launcher"} <= set(command_sections())
