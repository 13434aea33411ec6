"""RMBGPredictor on real photos with synthetic Swin-T weights at a small resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import errors
from models.rmbg import RMBGPredictor
from tests.support.birefnet_weights import write_synthetic_checkpoint
from tests.support.shared import IMAGES

pytestmark = pytest.mark.usefixtures("shared_data")

RESOLUTION = 256
#: reduced precisions run emulated (slowly) on CPUs without them, such as CI's: their
#: behaviour tests need no more than this
SMALL_RESOLUTION = 128


def _photos(names: list[str]) -> list[np.ndarray]:
    return [np.array(Image.open(IMAGES / name).convert("RGB")) for name in names]


@pytest.fixture(scope="session")
def lite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(
        tmp_path_factory.mktemp("lite-weights"), "birefnet-lite"
    ).parent


@pytest.fixture(scope="session")
def predictor(lite_dir: Path) -> RMBGPredictor:
    return RMBGPredictor.from_source(
        lite_dir, arch="birefnet-lite", resolution=RESOLUTION, device="cpu"
    )


def test_attributes(predictor: RMBGPredictor) -> None:
    assert predictor.device == torch.device("cpu")
    assert predictor.dtype == torch.float32
    assert predictor.resolution == RESOLUTION
    assert predictor.arch == "birefnet-lite"


def test_batch_of_photos_of_mixed_sizes(predictor: RMBGPredictor) -> None:
    # portrait, landscape, large (3000x2000), small, PNG with alpha dropped by convert("RGB")
    photos = _photos(["horse.jpg", "bike.jpg", "hockey.png", "whisk.png", "0002-01.jpg"])
    assert len({p.shape[:2] for p in photos}) == len(photos)
    masks = predictor.predict(photos)
    assert len(masks) == len(photos)
    for photo, mask in zip(photos, masks, strict=True):
        assert mask.shape == photo.shape[:2]
        assert mask.dtype == np.uint8
        assert 0 <= int(mask.min()) <= int(mask.max()) <= 255
        assert len(np.unique(mask)) > 1  # a real mask, not a constant


def test_batching_does_not_change_results(predictor: RMBGPredictor) -> None:
    photos = _photos(["boat.jpg", "lamp2_meitu_1.jpg"])
    together = predictor.predict(photos)
    alone = [predictor.predict([p])[0] for p in photos]
    for a, b in zip(together, alone, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_mask_is_rounded_sigmoid_resized(predictor: RMBGPredictor) -> None:
    logits = torch.tensor([[[[-20.0, 0.0], [0.002, 20.0]]]])
    (mask,) = predictor.postprocess(logits, [(2, 2)])
    assert mask.tolist() == [[0, 128], [128, 255]]


def test_preprocess_matches_torchvision_resize(predictor: RMBGPredictor) -> None:
    from torchvision.transforms import v2

    (photo,) = _photos(["horse.jpg"])
    ours = predictor.preprocess([photo])
    pipeline = v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize((RESOLUTION, RESOLUTION), antialias=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ref = pipeline(torch.from_numpy(photo).permute(2, 0, 1))[None]
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_bfloat16_on_cpu(lite_dir: Path) -> None:
    pred = RMBGPredictor.from_source(
        lite_dir, arch="birefnet-lite", resolution=SMALL_RESOLUTION, device="cpu", dtype="bfloat16"
    )
    assert pred.dtype == torch.bfloat16
    # One photo: bf16 is emulated (slow) on CPUs without native bf16, such as CI's.
    photos = _photos(["im_14.png"])
    masks = pred.predict(photos)
    assert [m.shape for m in masks] == [p.shape[:2] for p in photos]
    assert all(m.dtype == np.uint8 for m in masks)


def test_float16_overflow_is_redone_in_float32(lite_dir: Path) -> None:
    """A batch whose float16 logits overflow (past 65504) comes back as float32 would make it."""
    pred = RMBGPredictor.from_source(
        lite_dir, arch="birefnet-lite", resolution=SMALL_RESOLUTION, device="cpu", dtype="float16"
    )
    with torch.no_grad():  # logits of ~1e7: finite in float32, inf in float16
        pred.model.decoder.conv_out1[0].weight.mul_(1e6)
    photos = _photos(["im_14.png"])
    x = pred.preprocess(photos)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(pred.model(x)).all()  # the premise: float16 overflows
    masks = pred.predict(photos)
    assert pred.overflows == 1
    assert pred.describe()["float16_overflows"] == 1
    ref = RMBGPredictor(pred.model, resolution=SMALL_RESOLUTION, device="cpu").predict(photos)
    np.testing.assert_array_equal(masks[0], ref[0])
    assert len(np.unique(masks[0])) > 1


def test_empty_batch_and_bad_inputs(predictor: RMBGPredictor) -> None:
    assert predictor.predict([]) == []
    with pytest.raises(ValueError, match="HxWx3"):
        predictor.predict([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict([np.zeros((8, 8, 3), dtype=np.float32)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(lite_dir: Path) -> None:
    with pytest.raises(errors.DeviceUnavailableError, match="CUDA is not available"):
        RMBGPredictor.from_source(lite_dir, arch="birefnet-lite", device="cuda")


def test_invalid_settings(lite_dir: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        RMBGPredictor.from_source(lite_dir, arch="birefnet-lite", resolution=1000, device="cpu")
    with pytest.raises(ValueError, match="dtype"):
        RMBGPredictor.from_source(lite_dir, arch="birefnet-lite", device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        RMBGPredictor.from_source(lite_dir, arch="birefnet-lite", device="tpu")


def test_warmup(predictor: RMBGPredictor) -> None:
    predictor.warmup(2)


def test_describe(predictor: RMBGPredictor) -> None:
    info = predictor.describe()
    assert info["runtime"] == predictor.runtime == "torch"
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["resolution"] == RESOLUTION
    assert isinstance(info["runtime_reason"], str)


def test_prepare_batches_compiles_every_padded_shape(lite_dir: Path) -> None:
    """A compiled replica meets each batch shape before traffic does (each compile takes
    minutes on a GPU); the shapes are the powers of two up to the padded maximum."""
    eager = RMBGPredictor.from_source(lite_dir, arch="birefnet-lite", resolution=64, device="cpu")
    eager.prepare_batches(8)
    assert eager.warm_batches == set()  # nothing to compile
    pred = RMBGPredictor(eager.model, resolution=64, device="cpu")
    pred.compiled = True  # the bucketing of a compiled predictor, on the eager network
    shapes: list[int] = []
    forward = pred._forward
    pred._forward = lambda x: shapes.append(x.shape[0]) or forward(x)
    pred.prepare_batches(6)
    assert shapes == [1, 2, 4, 8] and pred.warm_batches == {1, 2, 4, 8}
    pred.prepare_batches(8)  # already warm: no work
    assert shapes == [1, 2, 4, 8]
    assert pred.describe()["compiled_batches"] == [1, 2, 4, 8]
