"""batchctl: cut raw data into Pub/Sub parts, drain them with short-lived Kubernetes Jobs."""

__version__ = "0.1.0"
