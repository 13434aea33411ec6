"""Every output option through the HTTP API on a real Serve app with the real u2netp:
what each one returns, and the 422 (naming the allowed values) for bad values and
contradicting combinations."""

from __future__ import annotations

import io
from functools import cache

import httpx
import numpy as np
import pytest
from PIL import Image

from imaging.compose import subject_bbox
from tests.support.http import post_image
from tests.support.shared import IMAGES


@cache
def _whisk() -> bytes:
    """A meerkat on green grass, 400x300 (read on first use, not at import)."""
    return (IMAGES / "whisk.png").read_bytes()


@pytest.fixture(scope="module")
def url(u2netp_app: str) -> str:
    return u2netp_app


@pytest.fixture(scope="module")
def cutout(url: str) -> np.ndarray:
    """The plain cut-out (RGBA) every other option is compared with."""
    response = post_image(url, _whisk(), filename="whisk.png")
    assert response.status_code == 200, response.text
    return np.asarray(_open(response))


def _open(response: httpx.Response) -> Image.Image:
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def _ok(response: httpx.Response, media_type: str) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["x-model-used"] == "u2net"
    return _open(response)


def _refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_option"
    for word in words:
        assert word in error["message"], error["message"]
    return error["message"]


def _bbox(alpha: np.ndarray) -> tuple[int, int, int, int]:
    box = subject_bbox(alpha)
    assert box is not None, "the model found no subject"
    return box


def _background(size: tuple[int, int] = (200, 100)) -> bytes:
    """A horizontal red-to-blue gradient, as a JPEG upload."""
    w, h = size
    t = np.linspace(0, 1, w)[None, :, None]
    rgb = (np.array([255, 0, 0]) * (1 - t) + np.array([0, 0, 255]) * t).repeat(h, axis=0)
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_the_meerkat_is_found(cutout: np.ndarray) -> None:
    x0, y0, x1, y1 = _bbox(cutout[:, :, 3])
    assert cutout.shape == (300, 400, 4)
    assert 50 < x1 - x0 < 400 and 50 < y1 - y0 <= 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ffffff", (255, 255, 255)), ("#1E90FF", (30, 144, 255)), ("RebeccaPurple", (102, 51, 153))],
)
def test_bg_color_opaque(url: str, cutout: np.ndarray, value: str, expected: tuple) -> None:
    image = _ok(post_image(url, _whisk(), bg_color=value), "image/png")
    assert image.mode == "RGB" and image.size == (400, 300)
    pixels = np.asarray(image).astype(int)
    background = cutout[:, :, 3] == 0
    assert background.mean() > 0.2
    assert np.abs(pixels[background] - expected).max() == 0
    subject = cutout[:, :, 3] == 255
    assert np.abs(pixels[subject] - cutout[:, :, :3][subject]).mean() < 1


def test_bg_color_with_alpha_stays_translucent_and_jpeg_needs_opaque(url: str) -> None:
    image = _ok(post_image(url, _whisk(), bg_color="00800080"), "image/png")
    assert image.mode == "RGBA"
    assert tuple(np.asarray(image)[0, 0]) == (0, 128, 0, 128)
    _refused(post_image(url, _whisk(), bg_color="00800080", format="jpeg"), "jpeg")
    jpeg = _ok(post_image(url, _whisk(), bg_color="white", format="jpeg"), "image/jpeg")
    assert jpeg.mode == "RGB"


@pytest.mark.parametrize("value", ["fff", "#12345", "ggghhh", "not-a-colour", "rgb(1,2,3)"])
def test_bad_bg_color(url: str, value: str) -> None:
    _refused(post_image(url, _whisk(), bg_color=value), "bg_color", "RRGGBB", "CSS colour name")


def test_bg_image_file_covers_the_canvas(url: str, cutout: np.ndarray) -> None:
    image = _ok(post_image(url, _whisk(), background=_background()), "image/png")
    assert image.mode == "RGB" and image.size == (400, 300)
    pixels = np.asarray(image).astype(int)
    # The 2:1 background covers the 4:3 canvas: scaled to 600x300, its sides cropped,
    # so the left edge is still mostly red and the right edge mostly blue.
    background = cutout[:, :, 3] == 0
    left, right = background.copy(), background.copy()
    left[:, 40:] = False
    right[:, :-40] = False
    assert pixels[left][:, 0].mean() > 150 > pixels[left][:, 2].mean()
    assert pixels[right][:, 2].mean() > 150 > pixels[right][:, 0].mean()
    jpeg = _ok(post_image(url, _whisk(), background=_background(), format="jpeg"), "image/jpeg")
    assert jpeg.size == (400, 300)


def test_bg_image_file_conflicts_and_bad_uploads(url: str) -> None:
    _refused(post_image(url, _whisk(), background=_background(), style="minimal"), "exclusive")
    _refused(post_image(url, _whisk(), background=_background(), bg_color="white"), "exclusive")
    response = post_image(url, _whisk(), background=b"not an image")
    assert response.status_code == 415, response.text


def test_crop_to_the_subject(url: str, cutout: np.ndarray) -> None:
    x0, y0, x1, y1 = _bbox(cutout[:, :, 3])
    w, h = x1 - x0, y1 - y0
    plain = _ok(post_image(url, _whisk(), crop="true"), "image/png")
    assert abs(plain.width - w) <= 2 and abs(plain.height - h) <= 2
    px = _ok(post_image(url, _whisk(), crop="true", crop_margin="40px"), "image/png")
    assert (px.width - plain.width, px.height - plain.height) == (80, 80)
    # Past the photo's edge the margin is transparent, never the photo's pixels.
    corner = np.asarray(px)[:5, :5, 3]
    assert corner.max() == 0
    pct = _ok(post_image(url, _whisk(), crop="true", crop_margin="10%"), "image/png")
    margin = -(-max(plain.size) // 10)
    assert abs(pct.width - (plain.width + 2 * margin)) <= 2
    assert abs(pct.height - (plain.height + 2 * margin)) <= 2


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"crop": "maybe"}, ("crop", "true, false")),
        ({"crop": "true", "crop_margin": "ten"}, ("crop_margin", "10%")),
        ({"crop": "true", "crop_margin": "501px"}, ("500px",)),
        ({"crop": "true", "crop_margin": "51%"}, ("50%",)),
        ({"crop_margin": "10%"}, ("crop=true",)),
        ({"crop": "true", "style": "mood"}, ("exclusive",)),
    ],
)
def test_bad_crops(url: str, fields: dict[str, str], words: tuple[str, ...]) -> None:
    _refused(post_image(url, _whisk(), **fields), *words)


def test_output_size_is_exact_and_centred(url: str, cutout: np.ndarray) -> None:
    image = _ok(post_image(url, _whisk(), output_size="300x500"), "image/png")
    assert image.size == (300, 500)
    alpha = np.asarray(image)[:, :, 3]
    # 400x300 fitted into 300x500: scaled to 300x225, centred vertically.
    assert alpha[:137].max() == 0 and alpha[-137:].max() == 0
    styled = _ok(
        post_image(url, _whisk(), style="minimal", output_size="640x480", format="jpeg"),
        "image/jpeg",
    )
    assert styled.size == (640, 480)


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"output_size": "300"}, 422, ("output_size", "WxH")),
        ({"output_size": "0x10"}, 422, ("output_size",)),
        ({"output_size": "300x300", "ratio": "1:1"}, 422, ("exclusive",)),
        ({"output_size": "16000x16000"}, 413, ("max_output_pixels",)),
        ({"output_size": "17000x100", "format": "webp"}, 413, ("16383",)),
    ],
)
def test_bad_output_sizes(
    url: str, fields: dict[str, str], status: int, words: tuple[str, ...]
) -> None:
    response = post_image(url, _whisk(), **fields)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert all(word in message for word in words), message


def test_channels_alpha_is_the_mask(url: str, cutout: np.ndarray) -> None:
    image = _ok(post_image(url, _whisk(), channels="alpha"), "image/png")
    assert image.mode == "L" and image.size == (400, 300)
    assert np.abs(np.asarray(image).astype(int) - cutout[:, :, 3]).max() <= 1
    cropped = _ok(post_image(url, _whisk(), channels="alpha", crop="true"), "image/png")
    assert cropped.mode == "L" and cropped.size[0] < 400
    jpeg = _ok(post_image(url, _whisk(), channels="alpha", format="jpeg"), "image/jpeg")
    assert jpeg.mode == "L"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"channels": "rgb"}, ("channels", "rgba, alpha")),
        ({"channels": "alpha", "style": "mood"}, ("mask alone",)),
        ({"channels": "alpha", "bg_color": "white"}, ("mask alone",)),
    ],
)
def test_bad_channels(url: str, fields: dict[str, str], words: tuple[str, ...]) -> None:
    _refused(post_image(url, _whisk(), **fields), *words)


def test_edges_raw_keeps_the_photo_colours(url: str, cutout: np.ndarray) -> None:
    raw = np.asarray(_ok(post_image(url, _whisk(), edges="raw"), "image/png"))
    assert np.array_equal(raw[:, :, 3], cutout[:, :, 3])
    soft = (cutout[:, :, 3] > 0) & (cutout[:, :, 3] < 255)
    assert soft.sum() > 100
    with Image.open(IMAGES / "whisk.png") as im:
        photo = np.asarray(im.convert("RGB"))
    assert np.array_equal(raw[:, :, :3][soft], photo[soft])  # raw: the photo's own pixels
    assert not np.array_equal(cutout[:, :, :3][soft], photo[soft])  # refined: re-coloured
    _refused(post_image(url, _whisk(), edges="soft"), "edges", "refined, raw")


def test_preset_marketplace_white(url: str) -> None:
    image = _ok(post_image(url, _whisk(), preset="marketplace-white"), "image/jpeg")
    assert image.size == (2000, 2000) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    assert (pixels[:20, :20] >= 253).all() and (pixels[-20:, -20:] >= 253).all()
    # The subject fills 85% of the longer side: find it as the non-white pixels.
    subject = (pixels < 235).any(axis=2).astype(np.uint8) * 255
    x0, y0, x1, y1 = _bbox(subject)
    assert abs(max(x1 - x0, y1 - y0) - 1700) <= 30
    assert abs((x0 + x1) / 2 - 1000) <= 30 and abs((y0 + y1) / 2 - 1000) <= 30


def test_preset_fields_can_be_overridden(url: str) -> None:
    image = _ok(post_image(url, _whisk(), preset="marketplace-white", format="png"), "image/png")
    assert image.size == (2000, 2000)
    small = _ok(
        post_image(url, _whisk(), preset="marketplace-white", output_size="500x500"), "image/jpeg"
    )
    assert small.size == (500, 500)
    _refused(post_image(url, _whisk(), preset="marketplace-white", style="mood"), "exclusive")


def test_unknown_preset_names_the_known_ones(url: str) -> None:
    _refused(post_image(url, _whisk(), preset="amazon"), "preset", "marketplace-white")


def test_unknown_field_is_refused(url: str) -> None:
    _refused(post_image(url, _whisk(), bg_colour="white"), "bg_colour", "bg_color")
