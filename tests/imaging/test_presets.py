"""Presets: the built-in file is valid, operators' files add and override, bad files fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.options import OutputFormat, RenderOptions
from imaging.presets import builtin_presets, load_presets, preset_fields


def test_builtin_presets_are_valid_and_described() -> None:
    presets = builtin_presets()
    assert "marketplace-white" in presets
    assert all(p.description for p in presets.values())
    for name in presets:
        RenderOptions.parse({"preset": name}, presets=preset_fields(presets))


def test_marketplace_white_is_what_marketplaces_ask_for() -> None:
    options = RenderOptions.parse(
        {"preset": "marketplace-white"}, presets=preset_fields(builtin_presets())
    )
    assert options.bg_color == (255, 255, 255, 255)
    assert options.output_size == (2000, 2000)
    assert options.fmt is OutputFormat.JPEG and options.crop
    # The margin on each side makes the subject 85% of the longer side of the canvas.
    fill = 1 / (1 + 2 * options.crop_margin.value / 100)
    assert options.crop_margin.percent and abs(fill - 0.85) < 0.001


def test_operator_file_adds_and_overrides(tmp_path: Path) -> None:
    extra = tmp_path / "presets.yaml"
    extra.write_text(
        "Thumbnail:\n  description: small\n  output_size: 256x256\n  format: webp\n"
        "marketplace-white:\n  bg_color: 'f5f5f5'\n  format: jpeg\n"
    )
    presets = load_presets(extra)
    assert presets["thumbnail"].fields == {"output_size": "256x256", "format": "webp"}
    assert presets["marketplace-white"].fields["bg_color"] == "f5f5f5"
    assert "social-portrait" in presets


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- a\n- b\n", "mapping"),
        ("x: 3\n", "mapping of options"),
        ("x:\n  colour: red\n", "unknown option"),
        ("x:\n  preset: other\n", "unknown option"),
        ("x:\n  format: jpeg\n", "transparency"),
        ("x:\n  ratio: '1:20'\n", "aspect"),
    ],
)
def test_bad_preset_files_fail_at_load(tmp_path: Path, text: str, words: str) -> None:
    extra = tmp_path / "presets.yaml"
    extra.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_presets(extra)
