"""Parsing of ratio, style and format options."""

from __future__ import annotations

import pytest

from imaging.errors import ImageError, InvalidOptionError
from imaging.options import OutputFormat, Style, parse_format, parse_ratio, parse_style


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4:5", (4, 5)), ("1:1", (1, 1)), ("16:9", (16, 9)), (" 3 : 2 ", (3, 2)), ("1:10", (1, 10))],
)
def test_parse_ratio_ok(text: str, expected: tuple[int, int]) -> None:
    assert parse_ratio(text) == expected


@pytest.mark.parametrize("text", [None, "", "  "])
def test_parse_ratio_absent(text: str | None) -> None:
    assert parse_ratio(text) is None


@pytest.mark.parametrize(
    "text", ["0:1", "4:0", "-4:5", "4", "4:5:6", "a:b", "4.5:5", "101:100", "1:11", "1920:1080"]
)
def test_parse_ratio_bad(text: str) -> None:
    with pytest.raises(InvalidOptionError) as exc:
        parse_ratio(text)
    assert exc.value.code == "invalid_option"
    assert "ratio" in str(exc.value)


def test_parse_style() -> None:
    assert parse_style("Minimal") is Style.MINIMAL
    assert parse_style("street") is Style.STREET
    assert parse_style(None) is None
    with pytest.raises(InvalidOptionError) as exc:
        parse_style("vaporwave")
    assert "minimal, mood, street" in str(exc.value)


def test_parse_format() -> None:
    assert parse_format("PNG") is OutputFormat.PNG
    assert parse_format("jpg") is OutputFormat.JPEG
    assert parse_format("webp") is OutputFormat.WEBP
    assert parse_format(None) is OutputFormat.PNG
    with pytest.raises(InvalidOptionError) as exc:
        parse_format("gif")
    assert "png, webp, jpeg" in str(exc.value)


def test_error_codes_are_distinct_and_typed() -> None:
    from imaging import errors

    classes = [
        errors.ImageTooLargeError,
        errors.UnsupportedImageError,
        errors.InvalidOptionError,
    ]
    assert all(issubclass(c, ImageError) for c in classes)
    assert len({c.code for c in classes}) == 3
    assert errors.InvalidOptionError("bad").message == "bad"
