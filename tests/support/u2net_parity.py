"""U2-Net's parity with rembg: the tolerance, the cases, the real u2net, rembg's own masks.

Shared by tests/models/test_u2net.py (every runtime choice against rembg),
test_u2net_int8.py and test_u2net_selection.py. rembg's reference masks come from
`RembgMasks` (the `rembg_masks` fixture of tests/models/conftest.py): computed once per
model, photo and size for the whole run, with the real rembg package on the real weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.u2net_weights import default_u2net_home, home_candidates, model_spec
from tests.support.shared import PHOTO_NAMES, photo

#: per photo, against ``rembg.remove(array, session=new_session(name), only_mask=True)``:
#: mean absolute difference (0-255) and the share of pixels off by more than 32
MAD_MAX = 1.0
FAR_FRACTION_MAX = 0.005
#: (runtime, precision, resize) of u2netp the selection can pick, all checked by
#: test_u2netp_matches_rembg (it runs both runtimes in f32 with both resizes)
U2NETP_CHOICES = {
    (runtime, "f32", resize)
    for runtime in ("onnxruntime", "openvino")
    for resize in ("fast", "exact")
}
#: (runtime, precision, resize) of the real u2net the selection can pick with
#: resize="auto", all checked by test_real_u2net_matches_rembg
REAL_U2NET_CHOICES = [
    ("onnxruntime", "f32", "fast"),
    ("openvino", "f32", "fast"),
    ("openvino", "bf16", "exact"),
]
#: the real u2net: every photo at its own size and at 3000 px wide (bike.jpg already is)
REAL_CASES = [(name, None) for name in PHOTO_NAMES] + [
    (name, 3000) for name in PHOTO_NAMES if name != "bike.jpg"
]
REAL_CASE_IDS = [f"{n}@{w or 'own'}" for n, w in REAL_CASES]


def load_rgb(name: str, width: int | None = None) -> np.ndarray:
    """A shared photo as RGB, resized to `width` (LANCZOS, aspect kept) when given."""
    img = Image.open(photo(name)).convert("RGB")
    if width is not None:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    return np.asarray(img)


def mask_diff(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(mean absolute difference, fraction of pixels off by more than 32 levels)."""
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    d = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return float(d.mean()), float((d > 32).mean())


# --- the real u2net (175 MB): fetched beforehand by CI into $U2NET_HOME ------------------


def real_u2net_home() -> Path | None:
    home = default_u2net_home()
    found = [p for p in home_candidates(model_spec("u2net"), home) if p.is_file()]
    return home if found else None


def require_real_u2net() -> Path:
    """The home holding u2net.onnx; a failure (not a skip) when CI said it must be there."""
    home = real_u2net_home()
    if home is None:
        where = default_u2net_home() / "u2net.onnx"
        if os.environ.get("BG_REMOVAL_REQUIRE_U2NET") == "1":
            pytest.fail(
                f"BG_REMOVAL_REQUIRE_U2NET=1 but {where} is missing: run "
                "`python scripts/fetch_models.py` (or ../shared/scripts/fetch-u2net) first"
            )
        pytest.skip(f"{where} not present (fetch it with scripts/fetch_models.py)")
    return home


# --- rembg's own masks ------------------------------------------------------------------


class RembgMasks:
    """rembg's masks by model, photo and size, each computed once; the photos loaded once.

    ``homes`` maps a rembg model name to a function giving the U2NET_HOME that holds its
    file, called when the model is first used (so a missing real u2net skips or fails
    only the tests that use it). The cached arrays are read-only: tests share them.
    """

    def __init__(self, homes: dict[str, Callable[[], Path]]) -> None:
        self._homes = homes
        self._sessions: dict[str, object] = {}
        self._photos: dict[tuple[str, int | None], np.ndarray] = {}
        self._masks: dict[tuple[str, str, int | None], np.ndarray] = {}

    def rgb(self, image: str, width: int | None = None) -> np.ndarray:
        """`load_rgb(image, width)`, loaded once."""
        key = (image, width)
        if key not in self._photos:
            self._photos[key] = _read_only(load_rgb(image, width))
        return self._photos[key]

    def __call__(
        self, model: str, image: str, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the photo as RGB, rembg's mask of it) for a shared photo at `width` (own size:
        None)."""
        rgb = self.rgb(image, width)
        key = (model, image, width)
        if key not in self._masks:
            self._masks[key] = _read_only(self.mask(model, rgb))
        return rgb, self._masks[key]

    def mask(self, model: str, rgb: np.ndarray) -> np.ndarray:
        """rembg's mask of any RGB array (not cached)."""
        from rembg import remove

        return np.asarray(remove(rgb, session=self._session(model), only_mask=True))

    def _session(self, model: str) -> object:
        if model not in self._sessions:
            from rembg import new_session

            home = self._homes[model]()
            old = os.environ.get("U2NET_HOME")
            os.environ["U2NET_HOME"] = str(home)  # rembg finds its file here
            try:
                self._sessions[model] = new_session(model)
            finally:
                if old is None:
                    del os.environ["U2NET_HOME"]
                else:
                    os.environ["U2NET_HOME"] = old
        return self._sessions[model]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
