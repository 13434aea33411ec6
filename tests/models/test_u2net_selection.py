"""U2-Net's load-time selection: measured on this machine, restricted by pins, masks in tolerance.

The speed of a runtime/precision/threads choice depends on the CPU (bf16 was
1.9x faster on one and 1.7x slower on another), so the predictor times the
candidates at load. These tests check what is offered, that the fastest timed
one is kept, that pins are respected, and that every choice the selection can
make on this CPU has a parity test against rembg (tests/models/test_u2net.py).
The record of a measured choice, reused by the next load with the same key:
test_u2net_tuning_cache.py. No timing asserts: the machine is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from deployments.settings import ServiceSettings
from models.errors import CorruptWeightsError, ModelError
from models.u2net import U2NetPredictor, default_threads
from models.u2net_tuning import (
    Candidate,
    cpu_has_native_bf16,
    plan_candidates,
    select_fastest,
    thread_options,
    time_runs,
)
from tests.support.onnx_models import write_u2net_shaped_onnx
from tests.support.u2net_parity import (
    FAR_FRACTION_MAX,
    MAD_MAX,
    REAL_U2NET_CHOICES,
    U2NETP_CHOICES,
    RembgMasks,
    mask_diff,
    real_u2net_home,
    require_real_u2net,
)

pytestmark = pytest.mark.usefixtures("no_network", "shared_data")

#: Timed runs per candidate in this module's measured loads: which candidates are timed, what
#: is kept and cached is under test here, not the figure's precision (each u2netp run takes
#: about half a second of a core).
TIMING_RUNS = 1


def _yes() -> bool:
    return True


def _no() -> bool:
    return False


def plan(**overrides: object) -> tuple[list[str], dict[str, str]]:
    """Labels and exclusions of a plan: all auto, rembg's u2net, 8 CPUs, unless overridden."""
    kwargs: dict[str, object] = {
        "model_name": "u2net",
        "rembg_file": True,
        "runtime": "auto",
        "precision": "auto",
        "threads": None,
        "resize": "auto",
        "cpus": 8,
        "openvino_installed": True,
        "cpu_bf16": _yes,
    }
    kwargs.update(overrides)
    p = plan_candidates(**kwargs)  # type: ignore[arg-type]
    return [c.label for c in p.candidates], p.excluded


# --- which candidates are offered (no model runs) --------------------------------------


def test_bf16_offered_only_for_rembgs_u2net_on_a_bf16_cpu() -> None:
    labels, excluded = plan()
    assert labels == [
        "onnxruntime/f32/8t",
        "onnxruntime/f32/4t",
        "openvino/f32/8t",
        "openvino/bf16/8t",
        "openvino/f32/4t",
        "openvino/bf16/4t",
    ]
    assert excluded == {"openvino/int8": "no INT8 model"}  # none made (models.u2net_int8)
    _, excluded = plan(cpu_bf16=_no)
    assert excluded["openvino/bf16"] == "CPU has no native bf16"
    for overrides, why in [
        ({"model_name": "u2netp"}, "u2netp"),
        ({"model_name": "u2net_human_seg"}, "u2net_human_seg"),
        ({"rembg_file": False}, "own file"),
        ({"resize": "fast"}, "exact resizing"),
    ]:
        labels, excluded = plan(**overrides)
        assert not any("bf16" in label for label in labels), overrides
        assert why in excluded["openvino/bf16"]
    # an exact resize pin keeps bf16; the CPU is not even asked when the model rules bf16 out
    assert "openvino/bf16/8t" in plan(resize="exact")[0]
    asked: list[bool] = []
    plan(model_name="u2netp", runtime="onnxruntime", cpu_bf16=lambda: asked.append(True) or True)
    assert asked == []


def test_pins_restrict_candidates() -> None:
    assert plan(runtime="onnxruntime")[0] == ["onnxruntime/f32/8t", "onnxruntime/f32/4t"]
    assert plan(threads=3)[0] == ["onnxruntime/f32/3t", "openvino/f32/3t", "openvino/bf16/3t"]
    assert plan(precision="f32", threads=2)[0] == ["onnxruntime/f32/2t", "openvino/f32/2t"]
    # a pinned bf16 is the caller's call (no CPU or model check), and only OpenVINO runs it
    assert plan(precision="bf16", model_name="u2netp", cpu_bf16=_no, threads=1)[0] == [
        "openvino/bf16/1t"
    ]
    labels, excluded = plan(runtime="openvino", precision="f32", threads=2)
    assert labels == ["openvino/f32/2t"] and excluded == {}


def test_threads_and_missing_openvino() -> None:
    assert thread_options(None, 2) == [2] and thread_options(None, 3) == [3]
    assert thread_options(None, 4) == [4, 2] and thread_options(None, 16) == [16, 8]
    assert thread_options(5, 16) == [5]
    labels, excluded = plan(cpus=2, openvino_installed=False)
    assert labels == ["onnxruntime/f32/2t"]
    assert excluded["openvino"] == "openvino is not installed"
    assert "2 CPUs" in excluded["threads"]


def test_select_fastest_keeps_the_fastest_and_releases_the_rest() -> None:
    """A fake clock makes 'fastest' deterministic; slower sessions are dropped as it goes."""
    costs = {"a/f32/1t": 5.0, "b/f32/1t": 2.0, "c/f32/1t": 9.0}
    candidates = [Candidate(label.split("/")[0], "f32", 1) for label in costs]
    now = [0.0]
    alive: list[str] = []

    class Session:
        def __init__(self, label: str) -> None:
            self.label = label
            alive.append(label)

        def __del__(self) -> None:
            alive.remove(self.label)

    def build(c: Candidate) -> tuple[Session, Callable[[], object]]:
        assert len(alive) <= 1, alive  # only the best so far is still alive
        s = Session(c.label)

        def run_once() -> None:
            now[0] += costs[c.label] / 1000.0

        return s, run_once

    def measure(run_once: Callable[[], object]) -> float:
        return time_runs(run_once, warmup_runs=1, timed_runs=3, clock=lambda: now[0])

    picked = select_fastest(candidates, build, measure=measure)
    assert picked.candidate.label == "b/f32/1t" and picked.session.label == "b/f32/1t"
    assert picked.timings_ms == pytest.approx(costs)
    assert picked.failed == {}
    del picked
    assert alive == []


def test_time_runs_waits_for_its_turn_outside_the_clock() -> None:
    """The wait for a turn (a request's run in flight) is not part of a run's time."""
    now, entered = [0.0], []

    class Turn:
        def __enter__(self) -> None:
            entered.append(now[0])
            now[0] += 0.5  # a request's run ends first

        def __exit__(self, *exc: object) -> None:
            pass

    def run_once() -> None:
        now[0] += 0.02

    ms = time_runs(run_once, warmup_runs=1, timed_runs=3, clock=lambda: now[0], turn=Turn())
    assert ms == pytest.approx(20.0) and len(entered) == 4


def test_select_fastest_drops_failing_candidates_and_raises_when_all_fail() -> None:
    def build(c: Candidate) -> tuple[str, Callable[[], object]]:
        if c.runtime == "bad":
            raise CorruptWeightsError("cannot read it")
        return c.label, lambda: None

    picked = select_fastest([Candidate("bad", "f32", 1), Candidate("ok", "f32", 1)], build)
    assert picked.candidate.runtime == "ok"
    assert picked.failed == {"bad/f32/1t": "failed: weights_corrupt: cannot read it"}
    with pytest.raises(CorruptWeightsError):
        select_fastest([Candidate("bad", "f32", 1), Candidate("bad", "f32", 2)], build)


# --- the selection on rembg's real u2netp ----------------------------------------------


@pytest.fixture(scope="module")
def auto_u2netp(u2netp_home: Path) -> U2NetPredictor:
    return U2NetPredictor.load(
        "u2netp", home=u2netp_home, allow_download=False, timing_runs=TIMING_RUNS
    )


def test_auto_u2netp_is_measured_and_fastest(auto_u2netp: U2NetPredictor) -> None:
    info = auto_u2netp.info
    runtimes = ["onnxruntime", "openvino"]
    expected = {f"{r}/f32/{n}t" for r in runtimes for n in thread_options(None, default_threads())}
    assert info.selection == "measured"
    assert set(info.timings_ms) == expected  # every candidate was timed...
    assert all(ms > 0 for ms in info.timings_ms.values())
    assert info.label in info.timings_ms  # ...and the kept one is the fastest of them
    assert info.timings_ms[info.label] == min(info.timings_ms.values())
    assert (info.precision, info.resize) == ("f32", "fast")
    assert not any("bf16" in label for label in info.timings_ms)  # never offered for u2netp
    assert "u2netp" in info.excluded["openvino/bf16"]
    if not cpu_has_native_bf16():
        assert "CPU has no native bf16" in info.excluded["openvino/bf16"]
    d = info.as_dict()
    assert d["selection"] == "measured" and d["timings_ms"] == info.timings_ms
    assert d["excluded"] == info.excluded


def test_auto_u2netp_masks_match_rembg(
    auto_u2netp: U2NetPredictor, rembg_masks: RembgMasks
) -> None:
    """Whatever was picked serves rembg's masks (each choice is checked fully in test_u2net)."""
    rgb, ref = rembg_masks("u2netp", "horse.jpg")
    (ours,) = auto_u2netp.predict([rgb])
    mad, far = mask_diff(ours, ref)
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX, (mad, far)


def test_pinned_threads_are_kept_and_the_choice_logged(
    u2netp_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="models.u2net")
    p = U2NetPredictor.load(
        "u2netp", home=u2netp_home, threads=1, allow_download=False, timing_runs=TIMING_RUNS
    )
    info = p.info
    assert info.selection == "measured" and info.threads == 1
    assert set(info.timings_ms) == {"onnxruntime/f32/1t", "openvino/f32/1t"}
    assert info.timings_ms[info.label] == min(info.timings_ms.values())
    assert "threads" not in info.excluded  # pinned: nothing to explain
    lines = [r for r in caplog.records if r.name == "models.u2net" and r.levelno == logging.INFO]
    assert len(lines) == 1  # one line: the choice, every timing, every exclusion
    message = lines[0].getMessage()
    assert f"{info.label} measured" in message
    assert all(f"{label} {ms:.1f}" in message for label, ms in info.timings_ms.items())
    assert "openvino/bf16: " in message


def test_runtime_pin_is_kept(u2netp_home: Path) -> None:
    p = U2NetPredictor.load("u2netp", home=u2netp_home, runtime="onnxruntime", threads=1)
    assert (p.info.runtime, p.info.precision, p.info.threads) == ("onnxruntime", "f32", 1)
    assert p.info.selection == "pinned" and p.info.timings_ms == {}


def test_fully_pinned_times_nothing(u2netp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fully pinned load must not time candidates")

    monkeypatch.setattr("models.u2net.select_cached", no_timing)
    p = U2NetPredictor.load(
        "u2netp",
        home=u2netp_home,
        runtime="openvino",
        precision="f32",
        threads=1,
        resize="exact",
        allow_download=False,
    )
    info = p.info
    assert (info.runtime, info.precision, info.threads, info.resize) == (
        "openvino",
        "f32",
        1,
        "exact",
    )
    assert info.selection == "pinned" and info.timings_ms == {} and info.excluded == {}


def test_a_candidate_that_fails_to_build_is_excluded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One runtime's failure costs that candidate, not the replica; the choice is not cached."""

    def broken(*args: object, **kwargs: object) -> None:
        raise CorruptWeightsError("OpenVINO could not compile it")

    monkeypatch.setattr("models.u2net_sessions.load_openvino", broken)
    model = write_u2net_shaped_onnx(tmp_path / "own.onnx")
    cache_dir = tmp_path / "tuning"
    # named u2net, but the operator's own file
    p = U2NetPredictor.load(
        path=model, threads=1, tuning_cache_dir=cache_dir, timing_runs=TIMING_RUNS
    )
    assert p.info.runtime == "onnxruntime" and p.info.selection == "measured"
    # the failure may be passing (memory pressure in a rollout): an unfair race is not recorded
    assert p.info.tuning_cache is None and not list(cache_dir.glob("*.json"))
    assert list(p.info.timings_ms) == ["onnxruntime/f32/1t"]
    assert p.info.excluded["openvino/f32/1t"].startswith("failed: weights_corrupt")
    assert "own file" in p.info.excluded["openvino/bf16"]
    assert p.predict([np.zeros((8, 8, 3), np.uint8)])[0].shape == (8, 8)


def test_when_every_candidate_fails_the_error_is_raised(tmp_path: Path) -> None:
    failing = write_u2net_shaped_onnx(tmp_path / "fail.onnx", fail=True)
    with pytest.raises(ModelError) as info:
        U2NetPredictor.load(path=failing, threads=1)
    assert info.value.code == "inference_error"


# --- every choice the selection can make has a parity test -----------------------------


@pytest.mark.parametrize("bf16_cpu", [False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
@pytest.mark.parametrize("model", ["u2net", "u2netp"])
def test_every_possible_choice_has_a_parity_test(model: str, bf16_cpu: bool) -> None:
    """Also for CPUs unlike this one: a new candidate needs its parity test first.

    Checked per (runtime, precision), and bf16 only ever with exact resizing;
    f32 with either resize is checked on u2netp (exact + ORT is rembg's own bits).
    """
    choices = REAL_U2NET_CHOICES if model == "u2net" else U2NETP_CHOICES
    checked = {(runtime, precision) for runtime, precision, _ in choices}
    for resize in ("auto", "exact", "fast"):
        offered = plan_candidates(
            model_name=model,
            rembg_file=True,
            runtime="auto",
            precision="auto",
            threads=None,
            resize=resize,
            cpus=8,
            openvino_installed=True,
            cpu_bf16=lambda: bf16_cpu,
        ).candidates
        for c in offered:
            assert (c.runtime, c.precision) in checked, (model, resize, c.label)
            if c.precision == "bf16":
                assert resize != "fast"  # auto resolves to exact with bf16
                assert (c.runtime, "bf16", "exact") in choices


@pytest.fixture(scope="module")
def auto_u2net() -> U2NetPredictor | None:
    home = real_u2net_home()
    if home is None:
        return None
    return U2NetPredictor.load("u2net", home=home, allow_download=False, timing_runs=TIMING_RUNS)


def test_auto_real_u2net_selection(auto_u2net: U2NetPredictor | None) -> None:
    """The real u2net's selection on this CPU: measured, fastest kept, a parity-checked choice."""
    if auto_u2net is None:
        require_real_u2net()
        return
    info = auto_u2net.info
    assert (info.runtime, info.precision, info.resize) in set(REAL_U2NET_CHOICES)
    if info.selection == "measured":
        assert info.timings_ms[info.label] == min(info.timings_ms.values())
    bf16_timed = any("bf16" in label for label in info.timings_ms)
    assert bf16_timed == cpu_has_native_bf16()
    if not bf16_timed:
        assert info.excluded["openvino/bf16"] == "CPU has no native bf16"
    print(f"u2net selection: {info.label} ({info.selection}), ms {info.timings_ms}")


def test_timing_runs_setting_reaches_every_timing(
    u2netp_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BG_REMOVAL_U2NET_TIMING_RUNS", raising=False)
    assert ServiceSettings().u2net_load_config().timing_runs == 3
    monkeypatch.setenv("BG_REMOVAL_U2NET_TIMING_RUNS", "1")
    assert ServiceSettings().u2net_load_config().timing_runs == 1
    monkeypatch.setenv("BG_REMOVAL_U2NET_TIMING_RUNS", "0")
    with pytest.raises(pydantic.ValidationError, match="u2net_timing_runs"):
        ServiceSettings()
    with pytest.raises(ValueError, match="timing_runs must be at least 1"):
        U2NetPredictor.load("u2netp", home=u2netp_home, timing_runs=0, allow_download=False)
    counts: list[int] = []

    def counting(run_once: Callable[[], object], **kwargs: Any) -> float:
        counts.append(kwargs["timed_runs"])
        return time_runs(run_once, **kwargs)

    monkeypatch.setattr("models.u2net.time_runs", counting)
    p = U2NetPredictor.load("u2netp", home=u2netp_home, timing_runs=2, allow_download=False)
    assert p.info.selection == "measured" and len(p.info.timings_ms) >= 2
    assert counts == [2] * len(p.info.timings_ms)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp8"}, "precision must be 'auto', 'f32', 'bf16' or 'int8'"),
        ({"runtime": "tensorrt"}, "runtime must be 'auto', 'onnxruntime' or 'openvino'"),
        ({"runtime": "onnxruntime", "precision": "bf16"}, "needs runtime='openvino'"),
        ({"runtime": "onnxruntime", "precision": "int8"}, "needs runtime='openvino'"),
        ({"resize": "sideways"}, "sideways"),
    ],
)
def test_bad_load_options_fail_before_any_weights_are_read(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    """An empty home and downloads off: the option, not the missing file, is what is refused."""
    with pytest.raises(ValueError, match=message):
        U2NetPredictor.load("u2netp", home=tmp_path, allow_download=False, **options)
