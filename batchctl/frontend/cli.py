"""The ``batchctl`` command: parse, call the library, render. Exit codes in ``batchctl.core.errors``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata

from batchctl.core import logs
from batchctl.core.errors import BatchctlError
from batchctl.core.settings import Settings
from batchctl.frontend import helptext

Command = Callable[[argparse.Namespace, Settings], int]


def common_options(*, default: object) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``batchctl launcher --backend local``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=default, help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT)")
    common.add_argument("--backend", default=default, choices=("kubernetes", "local"),
                        help="default: BATCHCTL_BACKEND, else kubernetes")
    common.add_argument("--namespace", default=default, help="Kubernetes namespace (default: BATCHCTL_NAMESPACE)")
    common.add_argument("--log-level", default=default, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        type=str.upper, help="default INFO")
    return common


def installed_version() -> str:
    """The installed distribution's version, from its metadata (pyproject's ``version``)."""
    try:
        return metadata.version("batchctl")
    except metadata.PackageNotFoundError:  # a source tree run without installing it
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = helptext.program_parser([common_options(default=None)])
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from batchctl.frontend import commands

    commands.add_all(sub, parents=[common_options(default=argparse.SUPPRESS)])
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, a usage error is 2
        return int(exc.code or 0)
    logs.configure(level=args.log_level)
    try:
        settings = Settings.from_env(
            os.environ if environ is None else environ,
            project=args.project,
            backend=args.backend,
            namespace=args.namespace,
        )
        run: Command = args.run
        return run(args, settings)
    except BatchctlError as exc:
        print(f"batchctl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        logs.get("cli").exception("unexpected_error", command=args.command)
        print("batchctl: error: unexpected failure (a bug); see the log above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("batchctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
