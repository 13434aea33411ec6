"""INT8 u2net: made by the tier itself (the background build a replica runs: a child
process, the check photos the package ships) on the real u2net, then checked against rembg's
own masks, offered to the runtime choice, switched to between calls, reused by later starts,
`bgremove quantize` and other replicas, and refused when the file, the CPU or the weights are
not the ones it was checked with.

Quantizing takes about a minute on 2 cores (once for the module)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bgremove.cli import main as bgremove
from models.errors import Int8UnavailableError
from models.hardware import usable_cpus
from models.u2net import U2NetPredictor
from models.u2net_int8 import (
    RECIPES,
    GuardedInt8,
    int8_files,
    int8_status,
    soft_share,
    usable_int8,
)
from models.u2net_int8_build import PHOTOS, BuildBudget, Int8Builder, build_lock, shipped_photos
from models.u2net_tuning import cpu_has_native_bf16, plan_candidates
from models.u2net_weights import resolve_u2net_weights
from tests.support.http import wait_for
from tests.support.shared import IMAGES, U2NETP
from tests.support.u2net_parity import (
    FAR_FRACTION_MAX,
    MAD_MAX,
    REAL_CASE_IDS,
    REAL_CASES,
    RembgMasks,
    mask_diff,
    require_real_u2net,
)

#: Upper bound of a wait on a build, a switch or a lock: generous, since this module may run
#: under SCHED_IDLE beside the Ray tests (tests/support/workers.py); the suite's timeout is 600 s.
WAIT_S = 400
#: Timed runs per candidate in this module's timed loads: what is under test is which
#: candidates are timed and that the fastest is kept, not the figure's precision.
TIMING_RUNS = 1

pytestmark = pytest.mark.usefixtures("no_network", "shared_data")


def _home_with_u2net(folder: Path) -> Path:
    """A U2-Net home of its own holding (a link to) the real u2net.onnx."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u2net.onnx").symlink_to(require_real_u2net() / "u2net.onnx")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Int8Builder]:
    """A home where a replica's background build ran (in its child process, with the shipped
    photos), and the builder: the INT8 model every test here uses."""
    home = _home_with_u2net(tmp_path_factory.mktemp("int8") / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    # the build's result is under test here, not its yielding (in `scripts/test.sh` this
    # worker, and so the child, runs under SCHED_IDLE anyway: tests/support/workers.py)
    builder = Int8Builder(weights, BuildBudget(threads=usable_cpus(), nice=0, idle=False))
    builder.run()
    return home, builder


@pytest.fixture(scope="module")
def int8_home(built: tuple[Path, Int8Builder]) -> Iterator[Path]:
    """The home with the INT8 model. Where the recipe is out of tolerance on this CPU's
    INT8 kernels (found within on AVX2 EPYCs and AVX-512 Xeons), the build refuses it, as it
    must (checked by test_the_build_keeps_only_what_is_within_tolerance), and there is no
    INT8 model to test: the tests that need one say so as skips, like bf16 on a CPU
    without it."""
    home, builder = built
    if builder.state != "ready":
        pytest.skip(f"no INT8 u2net on this CPU: {builder.state} ({builder.reason})")
    yield home


@pytest.fixture(scope="module")
def int8_predictor(int8_home: Path) -> U2NetPredictor:
    return U2NetPredictor.load(
        "u2net", home=int8_home, precision="int8", threads=usable_cpus(), allow_download=False
    )


def test_the_build_keeps_only_what_is_within_tolerance(built: tuple[Path, Int8Builder]) -> None:
    home, builder = built
    assert builder.builds == 1 and builder.state in ("ready", "refused"), builder.as_dict()
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    xml, report_path = int8_files(weights)
    report = json.loads(report_path.read_text())
    assert [p["name"] for p in report["photos"]] == [name for name, _ in shipped_photos()]
    within = all(p["mean_diff"] <= 1.0 and p["off_percent"] <= 0.5 for p in report["photos"])
    assert report["within_tolerance"] is within
    assert (builder.state == "ready") is within
    assert xml.is_file() is within and xml.with_suffix(".bin").is_file() is within
    path, why = usable_int8(weights)
    assert (path is not None) is within, why


def test_the_build_writes_the_model_and_a_report_beside_the_weights(int8_home: Path) -> None:
    weights = resolve_u2net_weights("u2net", home=int8_home, allow_download=False)
    xml, report_path = int8_files(weights)
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert xml.name.startswith("u2net.int8-")  # one per CPU flag set on a shared volume
    report = json.loads(report_path.read_text())
    assert report["within_tolerance"] is True
    assert len(report["photos"]) == len(list(PHOTOS.glob("*.jpg"))) == 8
    assert report["recipe"]["float_ops"] and report["versions"]["nncf"]
    assert usable_int8(weights) == (xml, "")


@pytest.mark.parametrize(("image", "width"), REAL_CASES, ids=REAL_CASE_IDS)
def test_int8_masks_are_within_rembgs_tolerance(
    int8_predictor: U2NetPredictor,
    rembg_masks: RembgMasks,
    image: str,
    width: int | None,
) -> None:
    assert int8_predictor.info.precision == "int8"
    assert int8_predictor.info.resize == "fast"
    rgb, reference = rembg_masks("u2net", image, width)
    (ours,) = int8_predictor.predict([rgb])
    mad, far = mask_diff(ours, reference)
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX, (mad, far)


def test_a_soft_mask_is_made_again_in_f32(
    int8_predictor: U2NetPredictor, rembg_masks: RembgMasks
) -> None:
    """A blurred photo leaves U2-Net unsure (10.6% of the mask soft, against 3.5% sharp):
    INT8 alone is then far out of tolerance (mean |diff| 3.9, 3.6% off by > 32 on the
    AVX2 EPYC), so the guard runs it in f32; a sharp photo stays INT8."""
    sharp = np.asarray(Image.open(IMAGES / "horse.jpg").convert("RGB"))
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(12)))
    guard = int8_predictor.int8_guard
    assert guard is not None and guard["max_soft_share"] == RECIPES["u2net"].max_soft_share
    (mask,) = int8_predictor.predict([sharp])
    assert int8_predictor.int8_guard["redone_f32"] == guard["redone_f32"]
    (mask,) = int8_predictor.predict([blurred])
    after = int8_predictor.int8_guard
    assert after["redone_f32"] == guard["redone_f32"] + 1
    assert after["images"] == guard["images"] + 2
    mad, far = mask_diff(mask, rembg_masks.mask("u2net", blurred))
    assert mad <= MAD_MAX and far <= FAR_FRACTION_MAX, (mad, far)


def test_soft_share_and_the_guard() -> None:
    sharp = np.zeros((1, 1, 40, 40), np.float32)
    sharp[..., 10:30, 10:30] = 1.0
    soft = np.broadcast_to(np.linspace(0, 1, 40, dtype=np.float32), (1, 1, 40, 40))
    assert soft_share(sharp[0, 0]) == 0.0
    assert soft_share(np.full((8, 8), 0.5, np.float32)) == 0.0  # constant: nothing to scale
    assert 0.8 < soft_share(soft[0, 0]) < 0.9  # the values strictly between 16 and 239

    f32_calls: list[int] = []

    def f32(x: np.ndarray) -> np.ndarray:
        f32_calls.append(x.shape[0])
        return np.full((x.shape[0], 1, 40, 40), 7.0, np.float32)

    guard = GuardedInt8(lambda x: np.concatenate([sharp, soft, sharp]), f32, 0.06)
    out = guard(np.zeros((3, 3, 40, 40), np.float32))
    assert f32_calls == [1]  # only the soft image, alone
    assert (out[1] == 7.0).all() and (out[0] == sharp[0]).all() and (out[2] == sharp[0]).all()
    assert (guard.images, guard.redone) == (3, 1)


def test_auto_times_int8_against_the_other_runtimes(int8_home: Path) -> None:
    predictor = U2NetPredictor.load(
        "u2net", home=int8_home, allow_download=False, timing_runs=TIMING_RUNS
    )
    labels = set(predictor.info.timings_ms)
    assert any(label.startswith("openvino/int8/") for label in labels), labels
    assert any(label.startswith("openvino/f32/") for label in labels), labels
    assert "openvino/int8" not in predictor.info.excluded
    fastest = min(predictor.info.timings_ms, key=predictor.info.timings_ms.__getitem__)
    assert predictor.info.label == fastest


def _copy_int8_files(int8_home: Path, home: Path) -> None:
    """The INT8 model and report (``u2net.int8-<cpu>.xml/.bin/.json``) into ``home``."""
    for path in int8_home.iterdir():
        if ".int8-" in path.name and path.suffix != ".lock":
            shutil.copy(path, home / path.name)


def _copy_home(int8_home: Path, to: Path) -> Path:
    home = _home_with_u2net(to)
    _copy_int8_files(int8_home, home)
    return home


def test_a_changed_int8_file_is_not_offered(int8_home: Path, tmp_path: Path) -> None:
    home = _copy_home(int8_home, tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    assert usable_int8(weights)[0] is not None
    binary = int8_files(weights)[0].with_suffix(".bin")
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    path, why = usable_int8(weights)
    assert path is None and "not the file that was checked" in why


def test_a_model_checked_on_another_cpu_is_not_offered(int8_home: Path, tmp_path: Path) -> None:
    home = _copy_home(int8_home, tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    report_path = int8_files(weights)[1]
    report = json.loads(report_path.read_text())
    report["cpu_flags_sha256"] = "0" * 64
    report_path.write_text(json.dumps(report))
    path, why = usable_int8(weights)
    assert path is None and "another CPU" in why
    # OpenVINO's candidates only (INT8 is one of them): ONNX Runtime's timing adds nothing here
    predictor = U2NetPredictor.load(
        "u2net", home=home, runtime="openvino", allow_download=False, timing_runs=TIMING_RUNS
    )
    assert predictor.info.precision != "int8"
    assert "another CPU" in predictor.info.excluded["openvino/int8"]


def test_without_an_int8_model_auto_says_how_to_make_one(tmp_path: Path) -> None:
    home = _home_with_u2net(tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    path, why = usable_int8(weights)
    assert path is None and "bgremove quantize" in why
    assert int8_status(weights).state == "missing"


def test_a_later_start_loads_the_built_model_and_builds_nothing(int8_home: Path) -> None:
    weights = resolve_u2net_weights("u2net", home=int8_home, allow_download=False)
    builder = Int8Builder(weights, BuildBudget())
    assert builder.run() == "ready" and builder.builds == 0
    # the operator's ahead-of-time step keeps it too (an init container runs it every start)
    assert bgremove(["quantize", "--home", str(int8_home)]) == 0
    assert int8_status(weights).state == "usable"


def test_a_replica_waits_for_the_one_building_instead_of_building_again(
    int8_home: Path, tmp_path: Path
) -> None:
    home = _home_with_u2net(tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    builder = Int8Builder(weights, BuildBudget(timeout_s=WAIT_S))
    with build_lock(weights):  # another replica (or pod on the volume) is building
        builder.start()
        deadline = time.monotonic() + 30
        while builder.state != "waiting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builder.state == "waiting", builder.as_dict()
        _copy_int8_files(int8_home, home)  # ... and writes its model
    builder.join(WAIT_S)
    assert builder.state == "ready" and builder.builds == 0, builder.as_dict()


def test_a_refusal_is_kept_and_pinned_int8_fails_saying_why(
    int8_home: Path, tmp_path: Path
) -> None:
    home = _copy_home(int8_home, tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    report_path = int8_files(weights)[1]
    report = json.loads(report_path.read_text())
    report["within_tolerance"] = False
    report["photos"][0].update(mean_diff=3.5, within=False)
    report_path.write_text(json.dumps(report))
    status = int8_status(weights)
    assert status.state == "refused" and "1 of 8 check photos" in status.reason
    builder = Int8Builder(weights, BuildBudget())
    assert builder.run() == "refused" and builder.builds == 0  # not built again
    assert bgremove(["quantize", "--home", str(home)]) == 2
    with pytest.raises(Int8UnavailableError, match="out of rembg's tolerance"):
        U2NetPredictor.load("u2net", home=home, precision="int8", allow_download=False)
    # other tool versions may do better: then it is stale, and built again
    report["versions"] = {"nncf": "0.0", "openvino": "0.0"}
    report_path.write_text(json.dumps(report))
    assert int8_status(weights).state == "stale"


def test_auto_on_a_cpu_without_bf16_switches_to_int8_between_calls(
    int8_home: Path,
    tmp_path: Path,
    rembg_masks: RembgMasks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica with the service's load config, on a CPU without native bf16 (OpenVINO's
    answer replaced: the build, the checks, the timing and the switch are real): it serves
    f32 at once, finds the model another replica is making, and moves to INT8 while two
    clients keep calling it; no call fails or gets another mask than rembg's (tolerance)."""
    monkeypatch.setattr("models.u2net.cpu_has_native_bf16", lambda: False)
    home = _home_with_u2net(tmp_path / "home")
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    rgb, reference = rembg_masks("u2net", "bike.jpg", None)
    lock = build_lock(weights)
    lock.acquire()  # another replica is making it: this one waits, serving f32
    try:
        predictor = U2NetPredictor.load(
            "u2net",
            home=home,
            allow_download=False,
            int8_build=BuildBudget(timeout_s=WAIT_S),
            timing_runs=TIMING_RUNS,
        )
    except BaseException:
        lock.release()
        raise
    assert predictor.info.precision == "f32"
    assert predictor.int8_build is not None
    serving_f32 = predictor._run
    errors: list[BaseException] = []
    diffs: list[tuple[float, float]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                (mask,) = predictor.predict([rgb])
                diffs.append(mask_diff(mask, reference))
            except BaseException as exc:  # a failed call is what this test looks for
                errors.append(exc)
                return

    clients = [threading.Thread(target=client) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        _copy_int8_files(int8_home, home)
    finally:
        lock.release()
    predictor.int8_build.join(WAIT_S)
    calls_before = len(diffs)
    while len(diffs) < calls_before + 4 and not errors:  # some calls after the switch
        time.sleep(0.05)
    stop.set()
    for thread in clients:
        thread.join()
    assert not errors, errors
    assert all(mad <= MAD_MAX and far <= FAR_FRACTION_MAX for mad, far in diffs), diffs
    state = predictor.int8_state()
    assert state["state"] == "ready", state
    int8_label = next(k for k in predictor.info.timings_ms if k.startswith("openvino/int8"))
    if predictor.info.precision == "int8":
        assert state["guard"] is not None and state["guard"]["images"] > 0
        # the guard runs soft masks on the f32 runtime that served: no second copy compiled
        assert isinstance(predictor._run, GuardedInt8) and predictor._run._f32 is serving_f32
    else:  # timed slower than f32 here: kept f32, and says so
        assert "not faster" in state["reason"], (state, predictor.info.timings_ms, int8_label)


def test_no_build_where_bf16_serves_or_precision_is_pinned(tmp_path: Path) -> None:
    """f32 is strict rembg precision: nothing is built; `auto` builds only where the CPU
    lacks native bf16 (on one with it, bf16 is the fast candidate: nothing changes)."""
    home = _home_with_u2net(tmp_path / "home")
    pinned = U2NetPredictor.load(
        "u2net",
        home=home,
        allow_download=False,
        precision="f32",
        runtime="openvino",
        int8_build=BuildBudget(),
    )
    assert pinned.int8_build is None and "pinned" in pinned.int8_state()["reason"]
    if cpu_has_native_bf16():
        auto = U2NetPredictor.load(
            "u2net",
            home=home,
            runtime="openvino",  # precision auto: bf16 against f32 decides, not ONNX Runtime
            allow_download=False,
            int8_build=BuildBudget(),
            timing_runs=TIMING_RUNS,
        )
        assert auto.int8_build is None and "bf16" in auto.int8_state()["reason"]
    assert not any(".int8" in p.name for p in home.iterdir())


def test_u2netp_has_no_recipe_and_quantize_refuses_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(U2NETP, home / "u2netp.onnx")
    weights = resolve_u2net_weights("u2netp", home=home, allow_download=False)
    path, why = usable_int8(weights)
    assert path is None and "no INT8 recipe" in why
    old = os.environ.get("BG_REMOVAL_U2NET_MODEL")
    os.environ["BG_REMOVAL_U2NET_MODEL"] = "u2netp"
    try:
        assert bgremove(["quantize", "--images", str(IMAGES), "--home", str(home)]) == 2
    finally:
        if old is None:
            del os.environ["BG_REMOVAL_U2NET_MODEL"]
        else:
            os.environ["BG_REMOVAL_U2NET_MODEL"] = old
    assert not any(".int8-" in p.name for p in home.iterdir())


def test_plan_offers_int8_only_when_usable() -> None:
    common = {
        "model_name": "u2net",
        "rembg_file": True,
        "runtime": "auto",
        "threads": None,
        "resize": "auto",
        "cpus": 2,
        "openvino_installed": True,
        "cpu_bf16": lambda: False,
    }
    offered = plan_candidates(precision="auto", int8_exclusion=None, **common)
    assert "openvino/int8/2t" in [c.label for c in offered.candidates]
    refused = plan_candidates(precision="auto", int8_exclusion="no INT8 model", **common)
    assert all(c.precision != "int8" for c in refused.candidates)
    assert refused.excluded["openvino/int8"] == "no INT8 model"


#: A replica that starts the background build and prints its pid (then waits for it).
_REPLICA = """
import os, sys, time
from pathlib import Path
from models.u2net_int8_build import BuildBudget, Int8Builder
from models.u2net_weights import resolve_u2net_weights
weights = resolve_u2net_weights("u2net", home=Path(sys.argv[1]), allow_download=False)
Int8Builder(weights, BuildBudget(threads=1, nice=0, idle=False)).start()
print(os.getpid(), flush=True)
time.sleep(600)
"""


def _stat(path: Path) -> list[str] | None:
    """A /proc/<pid>/stat's fields after the command name (state, parent pid, ...); None
    when the process is gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(path)
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(path.parent.name))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_replica_killed_mid_build_takes_its_build_with_it(tmp_path: Path) -> None:
    """SIGKILL (nothing of the replica's own runs) ends its build child too: the lock it held
    goes with it and no build goes on unlocked to race the next replica's."""
    home = _home_with_u2net(tmp_path / "home")
    replica = subprocess.Popen(
        [sys.executable, "-c", _REPLICA, str(home)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert replica.stdout is not None and int(replica.stdout.readline()) == replica.pid
        builds = wait_for(lambda: _children(replica.pid), timeout_s=60, interval_s=0.1)
        assert len(builds) == 1, builds
        (build,) = builds
        time.sleep(2)  # well into its start: the build has begun to import
    finally:
        replica.kill()
        replica.wait()
    # the build went on after its replica died if this times out
    wait_for(lambda: not _alive(build), timeout_s=30, interval_s=0.1)
    weights = resolve_u2net_weights("u2net", home=home, allow_download=False)
    assert not int8_files(weights)[0].exists()
