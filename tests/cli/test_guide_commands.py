"""The migration guide's two scripts, run as the guide runs them (from a shell, with the
settings in the environment), on the real u2netp and RMBG-2.0's code on synthetic weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgremove.compare import quick_test
from imaging import mask_metrics
from tests.support.birefnet_weights import write_synthetic_checkpoint
from tests.support.shared import IMAGES

pytestmark = pytest.mark.usefixtures("shared_data")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lite_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("rmbg"), "birefnet-lite").parent


@pytest.fixture
def guide_env(u2netp_env: Path, lite_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RMBG-2.0's code on synthetic birefnet-lite weights at 256 px (PyTorch: nothing is
    converted), and the real u2netp: the settings a migrating team sets, as variables."""
    monkeypatch.setenv("BG_REMOVAL_RMBG_PATH", str(lite_checkpoint))
    monkeypatch.setenv("BG_REMOVAL_RMBG_ARCH", "birefnet-lite")
    monkeypatch.setenv("BG_REMOVAL_RMBG_RESOLUTION", "256")
    monkeypatch.setenv("BG_REMOVAL_RMBG_RUNTIME", "torch")
    return lite_checkpoint


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_test_cuts_out_with_both_models(guide_env: Path, tmp_path: Path) -> None:
    done = _run("test_rmbg2_quick.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "RMBG-2.0: loaded in" in out and "U2-Net: loaded in" in out
    for name in ("rmbg-2.0", "u2net"):
        saved = tmp_path / "test_results" / f"horse_{name}.png"
        with Image.open(saved) as image:
            assert image.mode == "RGBA"
            alpha = np.asarray(image.getchannel("A"))
        share = mask_metrics.foreground_share(alpha)
        assert f"foreground {share:.1%}, soft edge" in out
    assert "agreement: mean |diff|" in out and ", IoU " in out


def test_quick_test_without_rmbg_weights_says_why_and_goes_on(
    u2netp_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("BG_REMOVAL_RMBG_PATH", str(tmp_path / "no-weights"))
    photo = IMAGES / "whisk.png"
    assert quick_test([str(photo), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.startswith("RMBG-2.0: not available")]
    assert len(missing) == 1 and "[weights_not_found]" in missing[0], out
    assert "going on without it" in missing[0]
    assert (tmp_path / "out" / "whisk_u2net.png").is_file()
    assert "agreement" not in out
    assert quick_test([str(photo), "--out", str(tmp_path / "out"), "--require-rmbg"]) == 1
    assert "--require-rmbg: RMBG-2.0 did not load" in capsys.readouterr().out


def test_comparison_with_ground_truth(guide_env: Path, tmp_path: Path) -> None:
    photos, truth = tmp_path / "photos", tmp_path / "truth"
    photos.mkdir()
    truth.mkdir()
    boxes = {"horse.jpg": (40, 30, 200, 150), "im_14.png": (10, 10, 120, 90)}
    for name, box in boxes.items():
        shutil.copy(IMAGES / name, photos / name)
        with Image.open(photos / name) as image:
            mask = Image.new("L", image.size, 0)
        mask.paste(255, box)
        mask.save(truth / f"{Path(name).stem}.png")
    done = _run("benchmark_comparison.py", str(photos), "--ground-truth", str(truth), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out_dir = tmp_path / "test_results" / "benchmark_comparison"
    stats = json.loads((out_dir / "statistics.json").read_text())
    assert [row["photo"] for row in stats["photos"]] == sorted(boxes)
    for row in stats["photos"]:
        stem = Path(row["photo"]).stem
        expected_truth = np.asarray(Image.open(truth / f"{stem}.png"))
        for name in ("rmbg-2.0", "u2net"):
            with Image.open(out_dir / f"{stem}_{name}.png") as image:
                alpha = np.asarray(image.getchannel("A"))
            assert row["scores"][name] == pytest.approx(
                {
                    "mae": mask_metrics.mae(alpha, expected_truth),
                    "iou": mask_metrics.iou(alpha, expected_truth),
                    "max_f": mask_metrics.max_f_measure(alpha, expected_truth),
                }
            )
            assert row["ms"][name] > 0
        assert 0 <= row["agreement"]["iou"] <= 1
        with Image.open(out_dir / f"{stem}_comparison.png") as strip:
            assert strip.size == (3 * 320, 320)  # original | RMBG-2.0 | U2-Net
    table = (out_dir / "statistics.md").read_text()
    assert "| mean |" in table and "U2-Net maxF" in table and "RMBG-2.0 MAE" in table
    assert (out_dir / "grid.png").is_file()
