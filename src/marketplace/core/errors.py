"""Errors every layer may raise and every entry point maps to a clear message.

Kept apart from ``marketplace.cli`` (the stages' process handling) so that library code,
the API included, can raise them without importing the command-line layer.
"""


class StageError(Exception):
    """An expected failure whose message tells the user what to do (exit code 2)."""


class InputError(ValueError):
    """The caller's input cannot be answered (a listing with neither photo nor text, a
    photo that does not decode...): the caller must change it. The API answers 422 with
    this message; every other exception is a bug or an outage (500). A ``ValueError``, so
    library callers that catch those keep working."""
