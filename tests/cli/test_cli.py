"""`bgremove` end to end on real photos with the real u2netp, run in-process through `main`
(a subprocess only for stdin/stdout and the console script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bgremove.cli import build_parser, main
from bgremove.folder_scan import scan
from bgremove.local import load_masker
from bgremove.settings import cli_settings
from imaging.compose import subject_bbox
from imaging.options import OPTION_FIELDS
from models.hardware import usable_cpus
from tests.support.cli import PHOTOS
from tests.support.shared import IMAGES

pytestmark = pytest.mark.usefixtures("shared_data")

BGREMOVE = Path(sys.executable).parent / "bgremove"


def _image(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _assert_cutout(path: Path, size: tuple[int, int]) -> None:
    """A real cut-out: RGBA at the photo's size, with both background and subject."""
    image = _image(path)
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == size
    alpha = np.asarray(image)[:, :, 3]
    assert (alpha < 16).mean() > 0.05 and (alpha > 128).mean() > 0.05


def test_help_lists_every_subcommand_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    for command in ("i", "p", "fetch"):
        assert f"    {command} " in top
    for command in ("i", "p"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for field in OPTION_FIELDS:
            assert "--" + field.name.replace("_", "-") in text
        for flag in ("--bg-image", "--model", "--url", "--api-key", "--threads"):
            assert flag in text
    with pytest.raises(SystemExit):
        main(["p", "--help"])
    text = capsys.readouterr().out
    for flag in ("--recursive", "--overwrite", "--watch", "--jobs", "--max-idle"):
        assert flag in text
    # every flag has a help text (argparse prints none for an empty one)
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices["p"]._actions:  # type: ignore[union-attr]
        assert action.help, action.option_strings


def test_console_script_is_installed() -> None:
    done = subprocess.run(
        [str(BGREMOVE), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: bgremove" in done.stdout


def test_i_file_to_file(u2netp_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut" / "horse.png"
    assert main(["i", str(IMAGES / "horse.jpg"), str(out)]) == 0
    _assert_cutout(out, _size(IMAGES / "horse.jpg"))
    # the format follows OUTPUT's extension; JPEG needs a background, given here
    jpeg = tmp_path / "horse.jpg"
    assert main(["i", str(IMAGES / "horse.jpg"), str(jpeg), "--bg-color", "white"]) == 0
    image = _image(jpeg)
    assert image.format == "JPEG" and image.mode == "RGB"
    assert image.size == _size(IMAGES / "horse.jpg")


def test_i_stdin_to_stdout(u2netp_env: Path) -> None:
    photo = (IMAGES / "hockey.png").read_bytes()
    done = subprocess.run(
        [str(BGREMOVE), "i", "-", "-", "--crop"],
        input=photo,
        capture_output=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr.decode()
    out = u2netp_env.parent / "stdout.png"
    out.write_bytes(done.stdout)
    image = _image(out)
    assert image.mode == "RGBA"
    # cropped to the subject: smaller than the photo
    assert image.size[0] * image.size[1] < 400 * 267


def test_i_corrupt_file_fails_with_the_reason(
    u2netp_env: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["i", str(photos / "broken.jpg"), str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "[unsupported_image]" in err and "truncated" in err
    assert not (tmp_path / "x.png").exists()


def _summary_counts(out: str) -> dict[str, int]:
    first = out.strip().splitlines()[0]  # "done: 4, skipped: 0, failed: 1 (...)"
    counts = first.split(" (")[0]
    return {k.strip(): int(v) for k, v in (part.split(":") for part in counts.split(","))}


def test_p_folder_resume_overwrite_recursive(
    u2netp_env: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # first run: every photo done, the corrupt one reported, the text file ignored
    assert main(["p", str(photos), str(out)]) == 1
    captured = capsys.readouterr()
    assert _summary_counts(captured.out) == {"done": 4, "skipped": 0, "failed": 1}
    assert "broken.jpg: [unsupported_image]" in captured.out
    assert "ignored: 1 file" in captured.out
    for name in PHOTOS:
        _assert_cutout(out / Path(name).with_suffix(".png"), _size(photos / name))
    assert not (out / "sub").exists()  # not recursive
    assert sorted(p.name for p in out.iterdir()) == sorted(
        str(Path(n).with_suffix(".png")) for n in PHOTOS
    )
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # the corrupt file fixed (removed): a second run finds everything up to date and does
    # not even load the model
    (photos / "broken.jpg").unlink()
    assert main(["p", str(photos), str(out)]) == 0
    captured = capsys.readouterr()
    assert _summary_counts(captured.out) == {"done": 0, "skipped": 4, "failed": 0}
    assert "model load" not in captured.out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    # a changed input is redone alone
    time.sleep(0.01)
    (photos / "horse.jpg").touch()
    assert main(["p", str(photos), str(out)]) == 0
    assert _summary_counts(capsys.readouterr().out) == {"done": 1, "skipped": 3, "failed": 0}

    # --overwrite redoes everything, -r adds the subfolder
    assert main(["p", str(photos), str(out), "--overwrite", "-r"]) == 0
    captured = capsys.readouterr()
    assert _summary_counts(captured.out) == {"done": 5, "skipped": 0, "failed": 0}
    for name, stamp in stamps.items():
        assert (out / name).stat().st_mtime_ns > stamp
    _assert_cutout(out / "sub" / "lamp.png", _size(photos / "sub" / "lamp.jpg"))
    # nothing left behind by the atomic writes
    assert not [p for p in out.rglob(".*")]


def test_p_output_options(u2netp_env: Path, tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("horse.jpg", "hockey.png"):
        shutil.copy(IMAGES / name, photos / name)
    sizes = {name: _size(photos / name) for name in ("horse.jpg", "hockey.png")}

    assert main(["p", str(photos), str(tmp_path / "crop"), "--crop", "--crop-margin", "10px"]) == 0
    for name, (w, h) in sizes.items():
        image = _image(tmp_path / "crop" / Path(name).with_suffix(".png"))
        assert image.mode == "RGBA" and image.size[0] <= w + 20 and image.size[1] <= h + 20
        # cropped to the subject's box, 10 px of margin on each side
        box = subject_bbox(np.asarray(image)[:, :, 3])
        assert box == (10, 10, image.size[0] - 10, image.size[1] - 10)

    args = ["--bg-color", "ff0000", "--format", "jpeg"]
    assert main(["p", str(photos), str(tmp_path / "red"), *args]) == 0
    for name, size in sizes.items():
        image = _image(tmp_path / "red" / Path(name).with_suffix(".jpg"))
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == size
        r, g, b = np.asarray(image)[0, 0]  # a corner: background, now red
        assert r > 200 and g < 60 and b < 60

    assert main(["p", str(photos), str(tmp_path / "market"), "--preset", "marketplace-white"]) == 0
    for name in sizes:
        image = _image(tmp_path / "market" / Path(name).with_suffix(".jpg"))
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (2000, 2000)
        assert np.asarray(image)[5, 5].min() > 245  # white


def test_p_with_two_model_instances(
    u2netp_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances split the CPUs and give the masks one instance gives."""
    monkeypatch.delenv("BG_REMOVAL_U2NET_THREADS")  # let --instances split the CPUs
    photos = tmp_path / "in"
    photos.mkdir()
    names = ("horse.jpg", "hockey.png", "im_14.png", "whisk.png")
    for name in names:
        shutil.copy(IMAGES / name, photos / name)
    settings = cli_settings(instances=2)
    assert settings.u2net_threads == max(1, usable_cpus() // 2)
    masker = load_masker(settings, 2)
    assert len(masker.predictors) == 2 and masker.predictors[0] is not masker.predictors[1]
    args = ["--channels", "alpha", "--edges", "raw"]
    assert main(["p", str(photos), str(tmp_path / "two"), "--instances", "2", *args]) == 0
    assert main(["p", str(photos), str(tmp_path / "one"), "--instances", "1", *args]) == 0
    for name in names:
        target = Path(name).with_suffix(".png")
        two = np.asarray(_image(tmp_path / "two" / target), dtype=np.int16)
        one = np.asarray(_image(tmp_path / "one" / target), dtype=np.int16)
        assert two.shape == one.shape and len(np.unique(two)) > 2
        assert np.abs(two - one).max() <= 1  # thread counts may round differently


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1:50"], "invalid ratio '1:50'"),
        (["--format", "jpeg"], "format 'jpeg' has no transparency"),
        (["--preset", "nope"], "invalid preset 'nope': allowed values are"),
        (["--style", "minimal", "--bg-color", "white"], "style and bg_color are exclusive"),
        (["--url", "http://127.0.0.1:9", "--model", "u2net"], "--model, --threads and"),
        (["--url", "http://127.0.0.1:9", "--instances", "2"], "--model, --threads and"),
    ],
)
def test_bad_options_exit_2_before_any_work(
    u2netp_env: Path,
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    started = time.perf_counter()
    assert main(["p", str(photos), str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - started < 10  # refused before a model loads


def test_bad_arguments_exit_2(photos: Path, tmp_path: Path) -> None:
    for argv in (
        ["p", str(photos), str(tmp_path), "--jobs", "0"],
        ["p", str(photos)],
        ["i", "a.jpg", "b.png", "--model", "u2netq"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert main(["p", str(photos), str(photos)]) == 2
    assert main(["p", str(photos / "notes.txt"), str(tmp_path / "o")]) == 2


def test_scan_outputs_inside_the_input_and_colliding_names(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "cutouts").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    for name in ("a.jpg", "a.png", "b.webp", "cutouts/old.png", ".hidden/c.png", ".d.png"):
        (photos / name).write_bytes(b"x")
    found = scan(photos, photos / "cutouts", recursive=True, suffix=".png")
    assert [t.name for t in found.tasks] == ["a.jpg", "b.webp"]
    assert [(t.name, owner) for t, owner in found.collisions] == [("a.png", "a.jpg")]
    assert found.tasks[1].target == photos / "cutouts" / "b.png"


def test_watch_processes_a_file_that_arrives(
    u2netp_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    shutil.copy(IMAGES / "hockey.png", photos / "hockey.png")
    status: list[int] = []
    argv = ["p", str(photos), str(out), "--watch", "--watch-interval", "0.2", "--max-idle", "3"]
    watcher = threading.Thread(target=lambda: status.append(main(argv)), daemon=True)
    watcher.start()

    def wait_for(path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            assert watcher.is_alive(), "the watcher stopped early"
            assert time.monotonic() < deadline, f"{path.name} did not appear"
            time.sleep(0.1)

    wait_for(out / "hockey.png", 60)
    shutil.copy(IMAGES / "whisk.png", photos / "whisk.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    wait_for(out / "whisk.png", 30)
    watcher.join(timeout=30)
    assert not watcher.is_alive(), "--max-idle did not stop the watcher"
    assert status == [1]  # broken.png failed
    _assert_cutout(out / "whisk.png", _size(photos / "whisk.png"))
    captured = capsys.readouterr()
    assert _summary_counts(captured.out) == {"done": 2, "skipped": 0, "failed": 1}
    assert "done: whisk.png" in captured.err
    assert "failed: broken.png: [unsupported_image]" in captured.err


def test_fetch_resolves_as_the_loaders_do(
    u2netp_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in place already (BG_REMOVAL_U2NET_HOME): found and checked against rembg's MD5
    assert main(["fetch", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"u2netp: {u2netp_env / 'u2netp.onnx'} (source=u2net_home, md5=")
    # --home wins over the setting; nothing there and no download wanted here: an explicit
    # path that does not exist fails with the loader's typed error, exit 2
    monkeypatch.setenv("BG_REMOVAL_U2NET_PATH", str(tmp_path / "missing.onnx"))
    assert main(["fetch", "--home", str(tmp_path)]) == 2
    assert "error [weights_not_found] u2netp:" in capsys.readouterr().err
