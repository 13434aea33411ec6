"""The model tiers: each one's name, load config, predictor and model input, in one table.

Everything that runs a model (the service's replica groups, the CLI in-process, batch
jobs) looks a tier up here and builds its predictor with `load_predictor`, so they load
the same weights the same way. A tier's load config is a frozen dataclass whose fields are
its loader's arguments; the service builds it from its settings, the CLI from its flags.
Adding a tier is its model module plus one `ModelTier` entry (and, for the service, its
`<prefix>_*` settings and a Serve deployment class that binds its load config).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # numpy and Pillow load with a model, not with the table of tiers
    import numpy as np

    from imaging.resize import ModelInputSpec
    from models.u2net_int8_build import BuildBudget


class MaskPredictor(Protocol):
    """What every tier's predictor offers: RGB uint8 images in, uint8 alpha masks out, each
    at its image's size (however the model resizes inside)."""

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RMBGLoadConfig:
    """What RMBG-2.0 needs to load; `models.rmbg.load_rmbg_predictor`'s arguments."""

    source: str
    arch: str = "rmbg-2.0"
    resolution: int = 1024
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    revision: str | None = None
    runtime: str = "auto"
    cache_dir: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class U2NetLoadConfig:
    """What U2-Net needs to load; `models.u2net.U2NetPredictor.load`'s arguments."""

    model_name: str = "u2net"
    path: str | None = None
    home: str | None = None
    runtime: str = "auto"
    threads: int | None = None
    allow_download: bool = True
    precision: str = "auto"
    resize: str = "auto"
    tuning_cache_dir: str | None = None
    #: make the INT8 model in the background with this budget (None: only use a built one)
    int8_build: BuildBudget | None = None
    #: timed runs per candidate when the runtime is chosen by timing
    timing_runs: int = 3


def _load_rmbg(config: RMBGLoadConfig) -> MaskPredictor:
    from models.rmbg import load_rmbg_predictor

    predictor = load_rmbg_predictor(**asdict(config))
    predictor.warmup(1)
    return predictor


def _load_u2net(config: U2NetLoadConfig) -> MaskPredictor:
    from models.u2net import U2NetPredictor

    # fields one by one: asdict would turn the build budget into a dict
    return U2NetPredictor.load(**{f.name: getattr(config, f.name) for f in fields(config)})


def _rmbg_input(config: RMBGLoadConfig, predictor: MaskPredictor) -> ModelInputSpec:
    from imaging.resize import ModelInputSpec

    r = config.resolution
    return ModelInputSpec(width=r, height=r, downscale="bilinear", upscale="bilinear")


def _u2net_input(config: U2NetLoadConfig, predictor: Any) -> ModelInputSpec:
    from PIL import Image

    from imaging.resize import ModelInputSpec
    from models.u2net_transforms import resize_filters

    info = predictor.info
    reducing_gap, upscale = resize_filters(info.resize)
    return ModelInputSpec(
        width=info.input_size[0],
        height=info.input_size[1],
        downscale=Image.Resampling.LANCZOS.name.lower(),
        reducing_gap=reducing_gap,
        upscale=Image.Resampling(upscale).name.lower(),
    )


def _pin_u2net(config: U2NetLoadConfig, predictor: Any) -> U2NetLoadConfig:
    info = predictor.info
    return replace(
        config,
        runtime=info.runtime,
        precision=info.precision,
        threads=info.threads,
        resize=info.resize,
    )


@dataclass(frozen=True)
class ModelTier:
    """One model tier: what `X-Model-Used` says, where it runs, how it loads.

    The service reads everything it needs per tier from here (deployment, settings, role),
    so its app builder, router and health report loop over `TIERS` instead of naming tiers.
    """

    name: str
    #: the Serve deployment of its replica group
    deployment: str
    summary: str
    config_type: type
    load: Callable[[Any], MaskPredictor]
    #: the input the model works at, known once loaded (the service sends no more)
    input_size: Callable[[Any, Any], ModelInputSpec]
    #: the model in operators' messages ("RMBG-2.0 cannot serve ...")
    label: str
    #: prefix of the tier's service settings: `<prefix>_num_cpus`, `BG_REMOVAL_<PREFIX>_...`
    settings_prefix: str
    #: the replica group's Serve deployment class as `module:attribute`, a string so that
    #: `models` stays free of Ray (the service imports it)
    replica_class: str
    #: its replicas may claim a GPU (then `<prefix>_num_gpus` sets the share)
    uses_gpu: bool = False
    #: the tier that always answers: deployed in every mode, asked when the primary cannot
    fallback: bool = False
    #: the load config with what a load chose (runtime, precision, ...) fixed, so that other
    #: processes load the same model without choosing again; None: the config says it all
    #: (and the tier's input is known without loading it)
    pin: Callable[[Any, Any], Any] | None = None


RMBG = "rmbg-2.0"
U2NET = "u2net"

TIERS: dict[str, ModelTier] = {
    RMBG: ModelTier(
        name=RMBG,
        deployment="RMBG2",
        summary="BRIA RMBG-2.0 (BiRefNet): the best cut-outs; GPUs, or OpenVINO on CPUs.",
        config_type=RMBGLoadConfig,
        load=_load_rmbg,
        input_size=_rmbg_input,
        label="RMBG-2.0",
        settings_prefix="rmbg",
        replica_class="deployments.rmbg:RMBGDeployment",
        uses_gpu=True,
    ),
    U2NET: ModelTier(
        name=U2NET,
        deployment="U2Net",
        summary="rembg's U2-Net models on OpenVINO or ONNX Runtime: fast on CPUs, the fallback.",
        config_type=U2NetLoadConfig,
        load=_load_u2net,
        input_size=_u2net_input,
        label="U2-Net",
        settings_prefix="u2net",
        replica_class="deployments.u2net:U2NetDeployment",
        fallback=True,
        pin=_pin_u2net,
    ),
}

#: The tier that serves when the primary cannot (exactly one tier is marked `fallback`).
(FALLBACK,) = [name for name, tier in TIERS.items() if tier.fallback]


def get_tier(name: str) -> ModelTier:
    """The tier called ``name``; ValueError naming the known ones otherwise."""
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(TIERS)}") from None


def load_predictor(name: str, config: Any) -> MaskPredictor:
    """Build tier ``name``'s predictor from its load config (weights resolved, runtime
    chosen, warmed up); raises the typed errors of `models.errors`."""
    tier = get_tier(name)
    if not isinstance(config, tier.config_type):
        raise TypeError(f"{name} loads from a {tier.config_type.__name__}, got {config!r}")
    return tier.load(config)
