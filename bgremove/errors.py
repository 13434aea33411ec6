"""Typed errors of the CLI, each with a stable ``code`` and a message for a person.

The exit status follows the type: a `FileError` fails one input (the run goes on, exit 1),
a `UsageError` or `SetupError` stops the command before or during its work (exit 2).
"""

from __future__ import annotations


class CLIError(Exception):
    """Base of the CLI's errors."""

    code: str = "error"
    exit_status: int = 2

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class UsageError(CLIError):
    """Bad arguments or options: nothing was processed (exit 2)."""

    code = "usage"


class SetupError(CLIError):
    """No input can be processed: the model cannot load, the service refuses us or cannot
    be reached, settings are invalid (exit 2)."""

    code = "setup"


class FileError(CLIError):
    """One input could not be processed; the others go on (exit 1).

    ``status`` is the service's HTTP status where the work was sent to one.
    """

    code = "failed"
    exit_status = 1

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message, code=code)
        self.status = status
