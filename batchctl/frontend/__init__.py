"""Front ends: the CLI, the demo and the Python API. They may import every layer below."""
