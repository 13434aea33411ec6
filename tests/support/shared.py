"""The shared test data beside the checkout (`../shared`): its paths, and one check of it.

The folder holds what this repository does not: real photos (`images/`), rembg's real u2netp
weights (`models/u2netp.onnx`), BiRefNet's parity vectors (`birefnet/`) and KubeRay's CRDs
(`kuberay/`). Test modules take their paths from here and read none of it at import time; a
test that reads it requests the `shared_data` fixture (tests/conftest.py), so that a missing
folder or file stops the run before any test with one message (`problem()`) saying what is
missing and where to get it, instead of collection errors, skips or a failure per test.
"""

from __future__ import annotations

from pathlib import Path

#: the folder beside the checkout
ROOT = Path(__file__).resolve().parents[2].parent / "shared"
IMAGES = ROOT / "images"
#: every photo of images/ (its README's eight), sorted: the parity tests' cases
PHOTO_NAMES = (
    "0002-01.jpg",
    "bike.jpg",
    "boat.jpg",
    "hockey.png",
    "horse.jpg",
    "im_14.png",
    "lamp2_meitu_1.jpg",
    "whisk.png",
)
U2NETP = ROOT / "models" / "u2netp.onnx"
BIREFNET = ROOT / "birefnet"
KUBERAY = ROOT / "kuberay"

#: what the tests read, relative to ROOT
REQUIRED = (
    *(f"images/{name}" for name in PHOTO_NAMES),
    "models/u2netp.onnx",
    "birefnet/keys-birefnet-lite.json",
    "birefnet/keys-rmbg-2.0.json",
    "birefnet/parity-birefnet-lite-256.npz",
    "birefnet/parity-rmbg-2.0-256.npz",
    "kuberay/ray.io_rayservices.yaml",
    "kuberay/ray.io_rayjobs.yaml",
)

WHERE = """\
It is the checkout's sibling folder (README.md, Tests), which these machines provide:
  images/    the eight photos of U-2-Net's test_data/test_images (github:xuebinqin/U-2-Net)
  models/    rembg's u2netp.onnx: python scripts/fetch_models.py --model u2netp --home DIR
  birefnet/  BiRefNet's key manifests and parity vectors (made from the original code)
  kuberay/   KubeRay's CRDs (github:ray-project/kuberay, ray-operator/config/crd/bases/)"""


def photo(name: str) -> Path:
    """One of the shared photos, by file name."""
    return IMAGES / name


def missing(root: Path = ROOT) -> list[str]:
    """The required files (relative to `root`) that are not there."""
    return [rel for rel in REQUIRED if not (root / rel).is_file()]


def problem(root: Path = ROOT) -> str | None:
    """None when everything the tests read is under `root`; else one message saying what is
    missing and where to get it."""
    absent = missing(root)
    if not absent:
        return None
    if not root.is_dir():
        what = f"the shared test data folder {root} does not exist."
    else:
        listed = "\n".join(f"  {rel}" for rel in absent)
        what = f"the shared test data in {root} lacks {len(absent)} file(s):\n{listed}"
    return f"{what}\n{WHERE}"
