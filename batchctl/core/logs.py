"""Logging setup: structlog, JSON in a pod or when piped, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def configure(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog once per process; stdlib logging goes to stderr too."""
    if json is None:
        in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
        json = in_pod or not sys.stderr.isatty()
    level_name = (level or os.environ.get("BATCHCTL_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # urllib3 logs every connection retry; batchctl reports the failure itself, once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (tests and the CLI swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def get(name: str, **bound: Any) -> Any:
    """A logger bound to ``component=name`` and any extra keys (``batch_id`` above all)."""
    return structlog.get_logger(name).bind(component=name, **bound)
