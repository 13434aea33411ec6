"""Fuzzing the form over real HTTP: any field values and bodies give 200 or a 4xx, never a 5xx."""

from __future__ import annotations

import io
from functools import cache

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.shared import IMAGES


@cache
def _photo() -> bytes:
    """whisk.png, at most 64 px, as JPEG (made on first draw, not at import)."""
    image = Image.open(IMAGES / "whisk.png").convert("RGB")
    image.thumbnail((64, 64))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


FIELD_VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", "png", "webp", "jpeg", "jpg", "minimal", "mood", "street", "4:5", "1:10"]),
    st.text(max_size=40),
    st.from_regex(r"\d{1,4}:\d{1,4}", fullmatch=True),
)


OPTION_VALUES = st.one_of(
    st.none(),
    st.sampled_from(
        ["true", "false", "10%", "40px", "white", "#ff000080", "300x300", "9999x9999", "alpha"]
    ),
    st.sampled_from(["marketplace-white", "social-portrait", "rgba", "raw", "refined"]),
    st.text(max_size=12),
    st.from_regex(r"\d{1,5}x\d{1,5}", fullmatch=True),
)


@pytest.fixture(scope="module")
def url(u2netp_app: str) -> str:
    return u2netp_app  # small photos only: every budget check still runs, on the header


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ratio=FIELD_VALUES,
    style=FIELD_VALUES,
    fmt=FIELD_VALUES,
    options=st.dictionaries(
        st.sampled_from(
            ["bg_color", "crop", "crop_margin", "output_size", "channels", "preset", "edges"]
        ),
        OPTION_VALUES,
        max_size=3,
    ),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=2),
    body=st.one_of(
        st.deferred(lambda: st.just(_photo())),
        st.binary(max_size=256),
        st.deferred(lambda: st.just(_photo()[: len(_photo()) // 2])),
    ),
)
def test_form_gives_200_or_4xx(
    url: str,
    ratio: str | None,
    style: str | None,
    fmt: str | None,
    options: dict[str, str | None],
    extra: dict[str, str],
    body: bytes,
) -> None:
    given = {"ratio": ratio, "style": style, "format": fmt, **options}
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(extra)
    response = httpx.post(
        f"{url}/api/v1/remove-background",
        files={"file": ("f", body)},
        data=fields,
        timeout=60,
    )
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message"}
