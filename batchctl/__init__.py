"""batchctl: cut raw data into Pub/Sub parts, drain them with short-lived Kubernetes Jobs."""

__version__ = "0.1.0"

PUBLIC = ("Client", "Batch", "BatchStatus", "BatchFailed", "WaitTimeout")
"""The Python API (``batchctl.frontend.client``), imported on first use so that ``import
batchctl.worker`` never loads the front end."""


def __getattr__(name: str) -> object:
    if name in PUBLIC:
        from batchctl.frontend import client

        return getattr(client, name)
    raise AttributeError(f"module 'batchctl' has no attribute {name!r}")
