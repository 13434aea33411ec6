"""U2-Net's measured runtime choice on disk: recorded once per key (CPU, threads, model,
runtime versions, candidates), reused by the next load with the same key, measured again
when the record is corrupt, unwritable or its choice no longer loads; the setting that
places it. Real u2netp loads with the real runtimes, only counted."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from deployments.settings import ServiceSettings
from models import u2net_sessions
from models.errors import CorruptWeightsError
from models.hardware import cpu_name
from models.u2net import U2NetPredictor, default_threads
from models.u2net_tuning import cpu_flags_digest, package_version
from models.u2net_weights import model_spec
from tests.support.shared import U2NETP
from tests.support.u2net_parity import load_rgb

pytestmark = pytest.mark.usefixtures("no_network", "shared_data")

#: Timed runs per candidate: what is recorded and reused is under test, not the figure.
TIMING_RUNS = 1


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Labels of the candidates each load builds: the real loaders, only counted."""
    labels: list[str] = []
    real_ort, real_ov = u2net_sessions.load_onnxruntime, u2net_sessions.load_openvino

    def ort(path: Path, threads: int) -> object:
        labels.append(f"onnxruntime/f32/{threads}t")
        return real_ort(path, threads)

    def ov(path: Path, threads: int, precision: str) -> object:
        labels.append(f"openvino/{precision}/{threads}t")
        return real_ov(path, threads, precision)

    monkeypatch.setattr("models.u2net_sessions.load_onnxruntime", ort)
    monkeypatch.setattr("models.u2net_sessions.load_openvino", ov)
    return labels


def load_u2netp(home: Path, cache_dir: Path | str, threads: int = 1) -> U2NetPredictor:
    """rembg's u2netp with threads pinned: two candidates (ORT, OpenVINO), timed quickly."""
    return U2NetPredictor.load(
        "u2netp",
        home=home,
        threads=threads,
        allow_download=False,
        tuning_cache_dir=cache_dir,
        timing_runs=TIMING_RUNS,
    )


def test_first_start_measures_and_records_the_next_reuses_it(
    u2netp_home: Path, tmp_path: Path, built: list[str]
) -> None:
    cache_dir = tmp_path / "tuning"
    measured = load_u2netp(u2netp_home, cache_dir)
    first = measured.info
    assert first.selection == "measured"
    assert sorted(built) == sorted(first.timings_ms) == ["onnxruntime/f32/1t", "openvino/f32/1t"]
    assert first.tuning_cache is not None and Path(first.tuning_cache).parent == cache_dir
    record = json.loads(Path(first.tuning_cache).read_text())
    assert record["chosen"] == {"runtime": first.runtime, "precision": "f32", "threads": 1}
    assert record["timings_ms"] == first.timings_ms and record["measured_at"]
    key = record["key"]
    assert (key["cpu"], key["cpus"], key["threads"]) == (cpu_name(), default_threads(), 1)
    assert key["cpu_flags_sha256"] == cpu_flags_digest()
    # the MD5 the weights code already checked, not a hash computed again
    assert key["model"] == {"size": U2NETP.stat().st_size, "md5": model_spec("u2netp").md5}
    assert key["onnxruntime"] == package_version("onnxruntime") is not None
    assert key["openvino"] == package_version("openvino") is not None
    assert key["candidates"] == ["onnxruntime/f32/1t", "openvino/f32/1t"]

    built.clear()
    again = load_u2netp(u2netp_home, cache_dir)
    second = again.info
    assert second.selection == "cached" and second.tuning_cache == first.tuning_cache
    assert built == [first.label]  # only the recorded choice was built: nothing was timed
    assert (second.label, second.resize) == (first.label, first.resize)
    assert second.timings_ms == first.timings_ms  # the measurement that chose it
    assert second.as_dict()["tuning_cache"] == first.tuning_cache
    rgb = load_rgb("horse.jpg")  # the same runtime and settings: the same masks
    np.testing.assert_array_equal(again.predict([rgb])[0], measured.predict([rgb])[0])


def test_another_thread_count_is_another_key_and_is_measured(
    u2netp_home: Path, tmp_path: Path, built: list[str]
) -> None:
    cache_dir = tmp_path / "tuning"
    one = load_u2netp(u2netp_home, cache_dir, threads=1).info
    two = load_u2netp(u2netp_home, cache_dir, threads=2).info
    assert two.selection == "measured" and two.threads == 2
    assert two.tuning_cache is not None and two.tuning_cache != one.tuning_cache
    assert sorted(built) == sorted([*one.timings_ms, *two.timings_ms])  # all four were timed
    assert len(list(cache_dir.glob("u2net-*.json"))) == 2  # one record per key: neither evicts
    built.clear()
    assert load_u2netp(u2netp_home, cache_dir, threads=1).info.selection == "cached"
    assert built == [one.label]


def test_a_corrupt_cache_file_is_ignored_and_replaced(
    u2netp_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "tuning"
    path = load_u2netp(u2netp_home, cache_dir).info.tuning_cache
    assert path is not None
    caplog.set_level(logging.WARNING, logger="models.u2net")
    # a write cut short (by hand: ours are atomic), another layout, not text at all
    for content in [b'{"key": {"schema"', b"[1, 2]", b"\xff\xfe\x00"]:
        Path(path).write_bytes(content)
        caplog.clear()
        info = load_u2netp(u2netp_home, cache_dir).info
        assert info.selection == "measured" and info.tuning_cache == path, content
        assert f"ignoring U2-Net tuning cache {path}" in caplog.text
        assert json.loads(Path(path).read_text())["timings_ms"] == info.timings_ms  # replaced
    left = sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("checked-"))
    assert left == [Path(path).name]  # no temp file left
    assert load_u2netp(u2netp_home, cache_dir).info.selection == "cached"


def test_an_unwritable_cache_dir_still_serves(
    u2netp_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory under a regular file cannot be created, even by root (CI runs as root,
    # which a read-only mode would not stop).
    (tmp_path / "file").write_text("")
    cache_dir = tmp_path / "file" / "tuning"
    caplog.set_level(logging.WARNING, logger="models.u2net")
    p = load_u2netp(u2netp_home, cache_dir)
    assert p.info.selection == "measured" and p.info.tuning_cache is None
    assert "is not writable" in caplog.text
    assert p.predict([np.zeros((8, 8, 3), np.uint8)])[0].shape == (8, 8)


def test_a_cached_choice_that_fails_to_load_is_measured_again(
    u2netp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "tuning"
    first = load_u2netp(u2netp_home, cache_dir).info

    def broken(*args: object, **kwargs: object) -> None:
        raise CorruptWeightsError("cannot compile it any more")

    monkeypatch.setattr(f"models.u2net_sessions.load_{first.runtime}", broken)
    info = load_u2netp(u2netp_home, cache_dir).info
    assert info.selection == "measured" and info.runtime != first.runtime
    assert info.excluded[first.label].startswith("failed: weights_corrupt")


def test_an_empty_cache_dir_turns_caching_off(u2netp_home: Path) -> None:
    info = load_u2netp(u2netp_home, "").info
    assert info.selection == "measured" and info.tuning_cache is None


def test_cache_dir_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default on (a home cache works on read-only weight mounts); empty turns it off."""
    monkeypatch.delenv("BG_REMOVAL_U2NET_TUNING_CACHE_DIR", raising=False)
    config = ServiceSettings().u2net_load_config()
    assert config.tuning_cache_dir == "~/.cache/bg-removal/tuning"
    # the replica passes the config's fields to load() as they are
    fields = {f.name for f in dataclasses.fields(config)}
    assert fields <= set(inspect.signature(U2NetPredictor.load).parameters)
    monkeypatch.setenv("BG_REMOVAL_U2NET_TUNING_CACHE_DIR", "/var/cache/u2net")
    assert ServiceSettings().u2net_load_config().tuning_cache_dir == "/var/cache/u2net"
    monkeypatch.setenv("BG_REMOVAL_U2NET_TUNING_CACHE_DIR", "")
    assert ServiceSettings().u2net_load_config().tuning_cache_dir is None


def test_cpu_flags_digest(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: sse avx2 fma\n\nflags\t\t: sse avx2 fma\n")
    digest = cpu_flags_digest(cpuinfo)
    assert digest is not None and len(digest) == 64
    cpuinfo.write_text("flags\t: fma sse avx2\n")
    assert cpu_flags_digest(cpuinfo) == digest  # the order is not the identity
    cpuinfo.write_text("flags\t: fma sse avx2 avx512_bf16\n")
    assert cpu_flags_digest(cpuinfo) != digest
    cpuinfo.write_text("model name\t: X\n")
    assert cpu_flags_digest(cpuinfo) is None
    assert cpu_flags_digest(tmp_path / "missing") is None
