"""The one place the version is written (``pyproject.toml`` reads it; checkpoints record it)."""

__version__ = "0.1.0"
