"""The errors a user can cause: the CLI prints each as one line on stderr and exits with code 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value or override; the CLI prints it as one line."""


class DataError(ValueError):
    """Bad or missing input data; the CLI prints it as one line."""


class CorruptFileError(ValueError):
    """A file whose checksum does not match what was recorded when it was written."""
