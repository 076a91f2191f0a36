"""User-facing errors.

Anything a user can cause (a bad override, a missing dataset, a wrong checkpoint) raises a
`SegenError`; the CLI prints its message on one line and exits with code 2. Everything else is a
bug and keeps its traceback.
"""


class SegenError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(SegenError):
    """The composed configuration is invalid (unknown choice, key or value)."""


class DataError(SegenError):
    """Dataset files are missing, corrupt, or unusable for the chosen model."""


class CheckpointError(SegenError):
    """A checkpoint is missing, unreadable, unsafe, or of the wrong kind."""


class IncompatibleError(SegenError):
    """The chosen model cannot be trained or used with the chosen data or command."""


class WriteError(SegenError):
    """A file could not be written: the disk is full, a quota is reached, or the device failed."""
