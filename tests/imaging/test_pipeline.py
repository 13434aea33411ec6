"""The shared pipeline: each option's geometry on a known mask, budgets before any work,
sync and async giving the same bytes, and one run on the real u2netp."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from imaging.errors import InvalidOptionError, OutputTooLargeError, UnsupportedImageError
from imaging.options import RenderOptions
from imaging.pipeline import Limits, MaskOutcome, remove_background, remove_background_async
from imaging.presets import builtin_presets, preset_fields
from imaging.render import plan_output
from models.u2net import U2NetPredictor
from tests.support.shared import U2NETP, photo

W, H = 400, 300
BOX = (100, 50, 300, 250)  # the subject of the known mask: 200x200 px


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


PHOTO = _png(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))


class BoxMasker:
    """A masker whose mask is known: the BOX rectangle, opaque, with a 1 px soft rim.

    It stands in for a model only where the tests check geometry, never model quality.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> MaskOutcome:
        self.calls += 1
        mask = np.zeros(rgb.shape[:2], np.uint8)
        x0, y0, x1, y1 = BOX
        mask[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 128
        mask[y0:y1, x0:x1] = 255
        return MaskOutcome(mask, "box")


def _run(fields: dict[str, str], **kwargs: object) -> tuple[Image.Image, object]:
    options = RenderOptions.parse(
        fields, presets=preset_fields(builtin_presets()), bg_image="background" in kwargs
    )
    result = remove_background(PHOTO, options, BoxMasker(), **kwargs)  # type: ignore[arg-type]
    image = Image.open(io.BytesIO(result.body))
    image.load()
    assert image.size == result.output_size
    return image, result


def test_plain_cutout_and_facts() -> None:
    image, result = _run({})
    assert image.mode == "RGBA" and image.size == (W, H)
    assert result.model == "box" and result.input_size == (W, H)
    assert result.input_format == "PNG" and result.media_type == "image/png"
    assert set(result.timings_ms) == {"decode", "mask", "compose", "encode"}


def test_crop_with_margins() -> None:
    image, _ = _run({"crop": "true"})
    assert image.size == (202, 202)  # the soft rim (alpha 128 > 16) belongs to the subject
    image, _ = _run({"crop": "true", "crop_margin": "10px"})
    assert image.size == (222, 222)
    image, _ = _run({"crop": "true", "crop_margin": "60px"})
    assert image.size == (322, 322)
    alpha = np.asarray(image)[:, :, 3]
    assert alpha[:10].max() == 0  # 60 px above a subject 49 px from the top: padded, clear
    image, _ = _run({"crop": "true", "crop_margin": "10%"})
    assert image.size == (202 + 2 * 21, 202 + 2 * 21)


def test_output_size_fits_and_centres() -> None:
    image, _ = _run({"crop": "true", "output_size": "404x202"})
    assert image.size == (404, 202)
    alpha = np.asarray(image)[:, :, 3]
    assert alpha[:, :100].max() == 0 and alpha[:, -100:].max() == 0
    assert alpha[:, 102:302].min() > 0


def test_backgrounds() -> None:
    image, _ = _run({"bg_color": "#336699"})
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (51, 102, 153)
    image, _ = _run({"bg_color": "#33669980"})
    assert image.mode == "RGBA" and image.getpixel((0, 0)) == (51, 102, 153, 128)
    backdrop = _png(np.full((10, 20, 3), (200, 10, 10), np.uint8))
    image, _ = _run({}, background=backdrop)
    assert image.mode == "RGB" and image.size == (W, H)
    assert image.getpixel((0, 0)) == (200, 10, 10)
    # The subject keeps its own pixels where the mask is opaque.
    photo = np.asarray(Image.open(io.BytesIO(PHOTO)))
    assert np.array_equal(np.asarray(image)[100:200, 150:250], photo[100:200, 150:250])


def test_channels_alpha() -> None:
    image, _ = _run({"channels": "alpha", "crop": "true"})
    assert image.mode == "L" and image.size == (202, 202)
    assert np.asarray(image)[1:-1, 1:-1].min() == 255


def test_marketplace_white_fills_85_percent() -> None:
    image, result = _run({"preset": "marketplace-white"})
    assert result.media_type == "image/jpeg" and image.size == (2000, 2000)
    grey = np.asarray(image.convert("L"))
    assert grey[:100].min() >= 250  # white margins
    rows = np.nonzero((grey < 200).any(axis=1))[0]
    assert abs((rows[-1] - rows[0] + 1) - 1700) <= 12


def test_styled_with_output_size() -> None:
    image, _ = _run({"style": "minimal", "output_size": "300x500", "format": "jpeg"})
    assert image.size == (300, 500) and image.mode == "RGB"


@pytest.mark.parametrize(
    "fields",
    [{}, {"ratio": "1:3"}, {"crop": "true", "crop_margin": "60px", "ratio": "16:9"}],
)
def test_plan_bounds_the_result(fields: dict[str, str]) -> None:
    image, _ = _run(fields)
    planned = plan_output(W, H, RenderOptions.parse(fields))
    assert image.width <= planned[0] and image.height <= planned[1]


def test_budget_is_checked_before_decoding_and_the_mask() -> None:
    masker = BoxMasker()
    reserved: list[int] = []
    options = RenderOptions.parse({"ratio": "1:10"})
    with pytest.raises(OutputTooLargeError):
        remove_background(
            PHOTO,
            options,
            masker,
            limits=Limits(max_output_pixels=1_000_000),
            reserve=reserved.append,
        )
    assert masker.calls == 0 and reserved == []
    remove_background(PHOTO, options, masker, reserve=reserved.append)
    assert reserved == [W * H + W * 4000]


def test_background_image_is_decoded_with_the_same_limits() -> None:
    masker = BoxMasker()
    options = RenderOptions.parse({}, bg_image=True)
    with pytest.raises(UnsupportedImageError):
        remove_background(PHOTO, options, masker, background=b"garbage")
    with pytest.raises(InvalidOptionError, match="bg_image_file"):
        remove_background(PHOTO, options, masker)
    assert masker.calls == 0


def test_async_gives_the_same_bytes() -> None:
    options = RenderOptions.parse({"crop": "true", "bg_color": "white", "format": "webp"})
    sync = remove_background(PHOTO, options, BoxMasker())

    async def masker(rgb: np.ndarray) -> MaskOutcome:
        return BoxMasker()(rgb)

    result = asyncio.run(remove_background_async(PHOTO, options, masker))
    assert result.body == sync.body and result.output_size == sync.output_size


@pytest.mark.usefixtures("shared_data")
def test_real_u2netp_through_the_pipeline() -> None:
    predictor = U2NetPredictor.load("u2netp", path=U2NETP, runtime="onnxruntime", threads=1)

    def masker(rgb: np.ndarray) -> MaskOutcome:
        return MaskOutcome(predictor.predict([rgb])[0], "u2netp")

    data = photo("whisk.png").read_bytes()
    options = RenderOptions.parse({"crop": "true", "bg_color": "white", "format": "jpeg"})
    result = remove_background(data, options, masker)
    assert result.model == "u2netp" and result.media_type == "image/jpeg"
    # The meerkat is found and cropped to: smaller than the 400x300 photo, not empty.
    assert 50 < result.output_size[0] < 400 and 50 < result.output_size[1] <= 300
