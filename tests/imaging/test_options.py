"""Parsing and validation of the output options every entry point shares."""

from __future__ import annotations

import pytest

from imaging.errors import ImageError, InvalidOptionError
from imaging.options import (
    OPTION_FIELDS,
    Channels,
    Margin,
    OutputFormat,
    RenderOptions,
    Style,
    parse_bool,
    parse_channels,
    parse_color,
    parse_format,
    parse_margin,
    parse_ratio,
    parse_size,
    parse_style,
)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ffffff", (255, 255, 255, 255)),
        ("#FFFFFF", (255, 255, 255, 255)),
        ("#11223344", (17, 34, 51, 68)),
        ("11223344", (17, 34, 51, 68)),
        ("white", (255, 255, 255, 255)),
        ("LightGray", (211, 211, 211, 255)),
        (None, None),
        (" ", None),
    ],
)
def test_parse_color(text: str | None, expected: tuple[int, ...] | None) -> None:
    assert parse_color(text) == expected


@pytest.mark.parametrize("text", ["fff", "#1234567", "zzzzzz", "blurple", "rgb(0,0,0)", "#"])
def test_parse_color_bad(text: str) -> None:
    with pytest.raises(InvalidOptionError, match="bg_color"):
        parse_color(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40", Margin(40)),
        ("40px", Margin(40)),
        ("10%", Margin(10, True)),
        ("8.8%", Margin(8.8, True)),
    ],
)
def test_parse_margin(text: str, expected: Margin) -> None:
    assert parse_margin(text) == expected


@pytest.mark.parametrize("text", ["-5", "10 %%", "abc", "501px", "50.5%", "4.5px", "1e3"])
def test_parse_margin_bad(text: str) -> None:
    with pytest.raises(InvalidOptionError, match="crop_margin"):
        parse_margin(text)


def test_margin_pixels() -> None:
    assert Margin(40).pixels(1000) == 40
    assert Margin(10, True).pixels(1000) == 100
    assert Margin(8.8, True).pixels(1001) == 89  # rounded up: never less than asked


def test_parse_size_and_bool_and_channels() -> None:
    assert parse_size("2000x1000") == (2000, 1000)
    assert parse_size(" 20 X 10 ") == (20, 10)
    assert parse_size(None) is None
    for bad in ["2000", "0x5", "5x0", "20001x5", "axb", "2000x1000x3"]:
        with pytest.raises(InvalidOptionError, match="output_size"):
            parse_size(bad)
    assert parse_bool("crop", "TRUE") and parse_bool("crop", "1")
    assert not parse_bool("crop", "false") and not parse_bool("crop", None)
    with pytest.raises(InvalidOptionError, match="true, false"):
        parse_bool("crop", "maybe")
    assert parse_channels("ALPHA") is Channels.ALPHA
    assert parse_channels("") is Channels.RGBA
    with pytest.raises(InvalidOptionError, match="rgba, alpha"):
        parse_channels("rgb")


@pytest.mark.parametrize(
    ("fields", "bg_image", "words"),
    [
        ({"style": "mood", "bg_color": "white"}, False, "exclusive"),
        ({"style": "mood"}, True, "exclusive"),
        ({"bg_color": "white"}, True, "exclusive"),
        ({"channels": "alpha", "style": "mood"}, False, "mask alone"),
        ({"channels": "alpha"}, True, "mask alone"),
        ({"ratio": "1:1", "output_size": "10x10"}, False, "exclusive"),
        ({"crop_margin": "5px"}, False, "crop=true"),
        ({"crop": "true", "style": "minimal"}, False, "exclusive"),
        ({"format": "jpeg"}, False, "transparency"),
        ({"format": "jpeg", "bg_color": "#ffffff80"}, False, "transparency"),
        ({"colour": "red"}, False, "unknown option"),
    ],
)
def test_contradictions_are_refused(fields: dict[str, str], bg_image: bool, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words):
        RenderOptions.parse(fields, bg_image=bg_image)


@pytest.mark.parametrize(
    ("fields", "bg_image"),
    [
        ({"format": "jpeg", "style": "street"}, False),
        ({"format": "jpeg", "bg_color": "black"}, False),
        ({"format": "jpeg"}, True),
        ({"format": "jpeg", "channels": "alpha", "crop": "true"}, False),
        ({"crop": "true", "crop_margin": "10%", "output_size": "100x100"}, False),
    ],
)
def test_consistent_combinations_parse(fields: dict[str, str], bg_image: bool) -> None:
    options = RenderOptions.parse(fields, bg_image=bg_image)
    assert options.bg_image is bg_image


def test_presets_give_defaults_and_fields_override_them() -> None:
    presets = {"square": {"output_size": "100x100", "bg_color": "white", "format": "jpeg"}}
    options = RenderOptions.parse({"preset": "Square"}, presets=presets)
    assert options.output_size == (100, 100) and options.fmt is OutputFormat.JPEG
    assert options.preset == "square"
    options = RenderOptions.parse({"preset": "square", "format": "png"}, presets=presets)
    assert options.fmt is OutputFormat.PNG and options.bg_color == (255, 255, 255, 255)
    with pytest.raises(InvalidOptionError, match="allowed values are square"):
        RenderOptions.parse({"preset": "round"}, presets=presets)
    with pytest.raises(InvalidOptionError, match="none configured"):
        RenderOptions.parse({"preset": "square"})


def test_every_option_field_is_described() -> None:
    names = [f.name for f in OPTION_FIELDS]
    assert len(names) == len(set(names))
    assert {"style", "ratio", "format", "edges", "bg_color", "crop", "crop_margin"} <= set(names)
    assert {"output_size", "channels", "preset"} <= set(names)
    assert all(f.help.endswith(".") for f in OPTION_FIELDS)
