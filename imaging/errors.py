"""Typed image errors, so the HTTP layer maps each failure to one status without parsing text.

ImageTooLargeError -> 413, UnsupportedImageError -> 415, InvalidOptionError -> 422.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of every error raised by `imaging`; `code` is a stable machine-readable string."""

    code: str = "image_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImageTooLargeError(ImageError):
    """The body has too many bytes, or the image declares too many pixels (HTTP 413)."""

    code = "image_too_large"


class UnsupportedImageError(ImageError):
    """The body is not a decodable image in a supported format (HTTP 415)."""

    code = "unsupported_image"


class InvalidOptionError(ImageError):
    """A ratio, style or format option is invalid; the message lists allowed values (422)."""

    code = "invalid_option"


class OutputTooLargeError(ImageTooLargeError):
    """The result the options ask for would exceed the output budget or its format (HTTP 413)."""

    code = "output_too_large"
