"""What every way of removing a background offers the commands: bytes in, result out.

The in-process model (`bgremove.local`) and a remote service (`bgremove.remote`) both
implement `Remover`, so the file and folder commands (and batch jobs) do not care where
the work runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imaging.formats import FORMATS
from imaging.options import OutputFormat

#: media type -> output format, for results whose format the remover chose
MEDIA_FORMATS: dict[str, OutputFormat] = {info.media_type: fmt for fmt, info in FORMATS.items()}


@dataclass(frozen=True)
class Outcome:
    """One encoded result and what made it (the API's X-Model-Used, X-Fallback-Reason)."""

    body: bytes
    media_type: str
    model: str
    fallback_reason: str | None = None

    @property
    def fmt(self) -> OutputFormat | None:
        """The result's format, from its media type."""
        return MEDIA_FORMATS.get(self.media_type)


class Remover(Protocol):
    """Removes the background of one image; safe to call from several threads.

    Raises `bgremove.errors.FileError` when this input fails (the next one may work) and
    `bgremove.errors.SetupError` when no input can work any more (stop the run).
    """

    def __call__(self, data: bytes, name: str) -> Outcome: ...
