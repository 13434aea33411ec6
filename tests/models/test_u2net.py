"""U2-Net inference: masks equal rembg 2.0.86's within tolerance, typed errors. CPU, no network.

Real masks come from rembg's real u2netp (../shared/models/u2netp.onnx); the
175 MB u2net is checked too when ``$U2NET_HOME/u2net.onnx`` exists (required
when ``BG_REMOVAL_REQUIRE_U2NET=1``). Tolerance, per photo, against
``rembg.remove(array, session=new_session(name), only_mask=True)``: mean
absolute difference <= 1.0 (0-255) and <= 0.5% of pixels off by more than 32.
Every runtime choice the load-time selection can make is checked here
(tests/models/test_u2net_selection.py checks that this list stays complete).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import CorruptWeightsError, InvalidModelError, WeightsNotFoundError
from models.u2net import MAX_BATCH, U2NetInferenceError, U2NetPredictor, default_threads
from models.u2net_transforms import postprocess, preprocess, resize_filters
from models.u2net_tuning import cpu_has_native_bf16
from models.u2net_weights import model_spec
from tests.support.onnx_models import write_u2net_shaped_onnx
from tests.support.shared import PHOTO_NAMES, U2NETP
from tests.support.u2net_parity import (
    FAR_FRACTION_MAX,
    MAD_MAX,
    REAL_CASE_IDS,
    REAL_CASES,
    REAL_U2NET_CHOICES,
    RembgMasks,
    load_rgb,
    mask_diff,
    require_real_u2net,
)

#: photos also checked upscaled to 3000 px wide (bike.jpg already is)
UPSCALED = ["hockey.png", "horse.jpg"]
RUNTIMES = ["onnxruntime", "openvino"]


pytestmark = pytest.mark.usefixtures("no_network", "shared_data")


CASES = [(name, None) for name in PHOTO_NAMES] + [(n, 3000) for n in UPSCALED]
CASE_IDS = [f"{n}@{w or 'own'}" for n, w in CASES]


@pytest.fixture(scope="module")
def predictors(u2netp_home: Path) -> Iterator[Callable[[str, str], U2NetPredictor]]:
    cache: dict[tuple[str, str], U2NetPredictor] = {}

    def get(runtime: str, resize: str) -> U2NetPredictor:
        if (runtime, resize) not in cache:
            cache[(runtime, resize)] = U2NetPredictor.load(
                "u2netp",
                home=u2netp_home,
                runtime=runtime,  # type: ignore[arg-type]
                resize=resize,  # type: ignore[arg-type]
                allow_download=False,
            )
        return cache[(runtime, resize)]

    yield get


@pytest.mark.parametrize("resize", ["fast", "exact"])
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("image", "width"), CASES, ids=CASE_IDS)
def test_u2netp_matches_rembg(
    predictors: Callable[[str, str], U2NetPredictor],
    rembg_masks: RembgMasks,
    runtime: str,
    resize: str,
    image: str,
    width: int | None,
) -> None:
    rgb, ref = rembg_masks("u2netp", image, width)
    (ours,) = predictors(runtime, resize).predict([rgb])
    assert ours.shape == rgb.shape[:2]
    mad, far = mask_diff(ours, ref)
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX, (mad, far)
    if runtime == "onnxruntime" and resize == "exact":
        assert np.array_equal(ours, ref)  # same model, same runtime: rembg's mask bit for bit


def test_whisk_mask_keeps_subject_drops_corners(
    predictors: Callable[[str, str], U2NetPredictor],
) -> None:
    """whisk.png is a meerkat (whiskers!) filling the lower right; the other corners are grass."""
    (mask,) = predictors("onnxruntime", "fast").predict([load_rgb("whisk.png")])
    assert mask.shape == (300, 400)
    face = mask[110:190, 170:270]  # between the eyes and the nose
    assert face.mean() > 240
    for corner in (mask[:30, :30], mask[:30, -30:], mask[-30:, :30]):
        assert corner.mean() < 10
    assert 0.3 < (mask > 128).mean() < 0.8


def test_predict_many_sizes_and_layouts(predictors: Callable[[str, str], U2NetPredictor]) -> None:
    p = predictors("onnxruntime", "fast")
    rgb = load_rgb("im_14.png")
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    tiny = rgb[:1, :1]
    strided = rgb[::2, ::3]  # non-contiguous view
    masks = p.predict([rgb, gray, rgba, tiny, strided])
    assert [m.shape for m in masks] == [(300, 400), (300, 400), (300, 400), (1, 1), (150, 134)]
    assert all(m.dtype == np.uint8 for m in masks)
    assert np.array_equal(masks[0], masks[2])  # rembg drops the alpha channel: same mask
    assert p.predict([]) == []


def test_output_sizes_for_draft_decoded_inputs(
    predictors: Callable[[str, str], U2NetPredictor],
) -> None:
    """A caller that decoded a reduced image gets the mask at the original size."""
    p = predictors("onnxruntime", "fast")
    (full,) = p.predict([load_rgb("horse.jpg")])
    (from_small,) = p.predict([load_rgb("horse.jpg", 385)], output_sizes=[(770, 595)])
    assert from_small.shape == full.shape == (595, 770)
    mad, far = mask_diff(from_small, full)
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX
    with pytest.raises(ValueError, match="one"):
        p.predict([load_rgb("horse.jpg")], output_sizes=[])


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8)],
)
def test_predict_rejects_non_images(
    predictors: Callable[[str, str], U2NetPredictor], bad: np.ndarray
) -> None:
    with pytest.raises(ValueError):
        predictors("onnxruntime", "fast").predict([bad])


def test_preprocess_is_rembgs_normalize() -> None:
    """The lookup-table normalisation gives rembg's float32 input bit for bit."""
    from rembg.sessions.base import BaseSession

    class _Input:
        name = "input.1"

    class _Sess:
        def get_inputs(self) -> list[_Input]:
            return [_Input()]

    fake = BaseSession.__new__(BaseSession)
    fake.inner_session = _Sess()  # type: ignore[attr-defined]
    for name in ("bike.jpg", "whisk.png"):
        rgb = load_rgb(name)
        ref = BaseSession.normalize(
            fake,
            Image.fromarray(rgb),
            (0.485, 0.456, 0.406),
            (0.229, 0.224, 0.225),
            (320, 320),
        )["input.1"]
        ours = preprocess(rgb, (320, 320))
        assert ours.dtype == ref.dtype == np.float32 and ours.shape == ref.shape[1:]
        assert np.array_equal(ours, ref[0])
    black = preprocess(np.zeros((10, 10, 3), np.uint8), (320, 320))
    assert np.isfinite(black).all()


def test_resize_filters() -> None:
    """The ingress resizes with these, so they are public and say what ``resize`` means."""
    assert resize_filters("exact") == (None, Image.Resampling.LANCZOS)
    assert resize_filters("fast") == (3.0, Image.Resampling.BICUBIC)
    with pytest.raises(ValueError, match="resize"):
        resize_filters("auto")  # type: ignore[arg-type]


def test_input_size_image_is_not_resized(
    predictors: Callable[[str, str], U2NetPredictor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image the ingress already resized to the model input goes in, and comes out, as is."""
    p = predictors("onnxruntime", "exact")
    w, h = p.info.input_size
    rgb = load_rgb("horse.jpg")
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
    original_resize = Image.Image.resize
    calls: list[tuple[int, int]] = []

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> object:
        calls.append(tuple(size))  # type: ignore[arg-type]
        return original_resize(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    (mask,) = p.predict([small])
    assert calls == [] and mask.shape == (h, w)
    # the same mask the model gives for that input, unresized
    pred = p._run(preprocess(small, (w, h))[None])[0, 0]
    assert np.array_equal(mask, postprocess(pred, (w, h), Image.Resampling.NEAREST))
    (full,) = p.predict([rgb])  # and an image of another size is resized both ways
    assert len(calls) == 2 and full.shape == rgb.shape[:2]


def test_constant_prediction_gives_empty_mask() -> None:
    mask = postprocess(np.full((320, 320), 0.5, np.float32), (40, 30), Image.Resampling.LANCZOS)
    assert mask.shape == (30, 40) and not mask.any()


def test_info_for_health(
    predictors: Callable[[str, str], U2NetPredictor], u2netp_home: Path
) -> None:
    info = predictors("onnxruntime", "fast").info
    assert info.runtime == "onnxruntime" and info.precision == "f32"
    assert (info.weights.name, info.weights.source) == ("u2netp", "u2net_home")
    assert info.weights.path == u2netp_home / "u2netp.onnx"
    assert info.input_size == (320, 320) and info.batch == 1  # rembg's file: static batch of 1
    d = info.as_dict()
    assert d["weights"]["source"] == "u2net_home" and d["threads"] >= 1
    assert d["selection"] in ("measured", "pinned")
    assert isinstance(d["timings_ms"], dict) and isinstance(d["excluded"], dict)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrong_shape_model_is_invalid(tmp_path: Path, runtime: str) -> None:
    bad = write_u2net_shaped_onnx(tmp_path / "bad.onnx", bad_shape=True)
    with pytest.raises(InvalidModelError, match="output 0"):
        U2NetPredictor.load(path=bad, runtime=runtime, allow_download=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_garbage_file_is_corrupt(tmp_path: Path, runtime: str) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CorruptWeightsError):
        U2NetPredictor.load(path=junk, runtime=runtime, allow_download=False)  # type: ignore[arg-type]


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError):
        U2NetPredictor.load(path=tmp_path / "missing.onnx")
    with pytest.raises(WeightsNotFoundError):
        U2NetPredictor.load("u2netp", home=tmp_path, allow_download=False)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_failure_is_typed(tmp_path: Path, runtime: str) -> None:
    failing = write_u2net_shaped_onnx(tmp_path / "fail.onnx", fail=True)
    p = U2NetPredictor.load(path=failing, runtime=runtime, warmup=False)  # type: ignore[arg-type]
    with pytest.raises(U2NetInferenceError) as info:
        p.predict([np.zeros((8, 8, 3), np.uint8)])
    assert info.value.code == "inference_error"
    with pytest.raises(U2NetInferenceError):
        U2NetPredictor.load(path=failing, runtime=runtime)  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dynamic_batch_runs_images_together(tmp_path: Path, runtime: str) -> None:
    """A model with a dynamic batch dim gets up to MAX_BATCH images per run, same masks."""
    model = write_u2net_shaped_onnx(tmp_path / "dyn.onnx")
    p = U2NetPredictor.load("custom", path=model, runtime=runtime)  # type: ignore[arg-type]
    assert p.info.batch == MAX_BATCH and p.info.weights.source == "path"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20 + i, 30 + 2 * i, 3), dtype=np.uint8) for i in range(11)]
    together = p.predict(images)
    one_by_one = [p.predict([im])[0] for im in images]
    assert [m.shape for m in together] == [im.shape[:2] for im in images]
    for a, b in zip(together, one_by_one, strict=True):
        assert np.array_equal(a, b)


def test_network_runs_take_turns(tmp_path: Path) -> None:
    """Requests from several threads and the timing of an arriving INT8 model never run the
    network at once: each run already uses every CPU the predictor has, and a timing run
    that shared them with a request measured the sharing, not the model."""
    model = write_u2net_shaped_onnx(tmp_path / "dyn.onnx")
    p = U2NetPredictor.load("custom", path=model, runtime="onnxruntime")
    serving, active, most = p._run, [0], [0]
    count = threading.Lock()

    def watched(x: np.ndarray) -> np.ndarray:
        with count:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.005)  # long enough for an overlap to show
        try:
            return serving(x)
        finally:
            with count:
                active[0] -= 1

    p._run = watched
    image = np.zeros((40, 60, 3), np.uint8)
    x = np.zeros((1, 3, 320, 320), np.float32)
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(p.predict, [image]) for _ in range(30)]
        timing = pool.submit(p._time_alone, lambda: watched(x))  # as `_adopt_int8` times
        masks = [call.result()[0] for call in calls]
        assert timing.result() > 0
    assert most[0] == 1
    assert all(mask.shape == (40, 60) for mask in masks)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="bf16"):
        U2NetPredictor.load(path=U2NETP, runtime="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="resize"):
        U2NetPredictor.load(path=U2NETP, resize="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runtime"):
        U2NetPredictor.load(path=U2NETP, runtime="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        U2NetPredictor.load(path=U2NETP, precision="fp16")  # type: ignore[arg-type]


# --- the real u2net (175 MB): fetched beforehand by CI into $U2NET_HOME ------------------


def skip_unless_native_bf16(precision: str) -> None:
    """A bf16 check on a CPU without bf16 would test f32 under a bf16 name: skip, saying why."""
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip(
            "CPU has no native bf16 (OpenVINO OPTIMIZATION_CAPABILITIES lacks BF16): "
            "the selection never picks bf16 here, and OpenVINO would run f32"
        )


@pytest.fixture(scope="module")
def real_u2net() -> Iterator[Callable[[str, str, str], U2NetPredictor]]:
    """Predictors of the real u2net by (runtime, precision, resize), built once each."""
    cache: dict[tuple[str, str, str], U2NetPredictor] = {}

    def get(runtime: str, precision: str, resize: str) -> U2NetPredictor:
        if (runtime, precision, resize) not in cache:
            cache[(runtime, precision, resize)] = U2NetPredictor.load(
                "u2net",
                home=require_real_u2net(),
                runtime=runtime,  # type: ignore[arg-type]
                precision=precision,  # type: ignore[arg-type]
                resize=resize,  # type: ignore[arg-type]
                threads=default_threads(),  # all pinned: no timing runs
                allow_download=False,
            )
        return cache[(runtime, precision, resize)]

    yield get


@pytest.mark.parametrize(
    ("runtime", "precision", "resize"),
    REAL_U2NET_CHOICES,
    ids=["/".join(c) for c in REAL_U2NET_CHOICES],
)
@pytest.mark.parametrize(("image", "width"), REAL_CASES, ids=REAL_CASE_IDS)
def test_real_u2net_matches_rembg(
    real_u2net: Callable[[str, str, str], U2NetPredictor],
    rembg_masks: RembgMasks,
    runtime: str,
    precision: str,
    resize: str,
    image: str,
    width: int | None,
) -> None:
    require_real_u2net()
    skip_unless_native_bf16(precision)
    predictor = real_u2net(runtime, precision, resize)
    rgb, ref = rembg_masks("u2net", image, width)
    (ours,) = predictor.predict([rgb])
    mad, far = mask_diff(ours, ref)
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX, (mad, far)
    assert predictor.info.weights.md5 == model_spec("u2net").md5


def test_openvino_threads_are_not_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned, two 1-thread instances on one node share a core and run 2x slower each."""
    import openvino as ov

    compiled: list[object] = []
    real_compile = ov.Core.compile_model

    def spy(self: ov.Core, *args: object, **kwargs: object) -> object:
        model = real_compile(self, *args, **kwargs)
        compiled.append(model)
        return model

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    predictor = U2NetPredictor.load(
        "u2netp", path=str(U2NETP), runtime="openvino", threads=1, precision="f32"
    )
    assert predictor.predict([load_rgb("whisk.png")])[0].ndim == 2
    assert compiled and all(m.get_property("ENABLE_CPU_PINNING") is False for m in compiled)
