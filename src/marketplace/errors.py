"""Errors every layer may raise and every entry point maps to a clear message.

Kept apart from ``marketplace.cli`` (the stages' process handling) so that library code,
the API included, can raise them without importing the command-line layer.
"""


class StageError(Exception):
    """An expected failure whose message tells the user what to do (exit code 2)."""
