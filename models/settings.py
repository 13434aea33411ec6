"""The settings every entry point that removes backgrounds shares: one typed place.

Which model and how it loads (built into `models.registry`'s load configs) and what one
image may cost (`imaging.limits.Limits`), as `BG_REMOVAL_*` variables and lines of the `.env`
file (`models.settings_file`). The service's settings (`deployments.settings.ServiceSettings`)
are these plus its own (Serve resources, admission, access, image URLs); `bgremove` and
batch jobs read these alone, so they load neither Ray Serve nor the service's validation,
yet take the same names from the same file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from imaging.limits import Limits
from models.registry import RMBGLoadConfig, U2NetLoadConfig, get_tier
from models.settings_file import FileBackedSettings, settings_file

ModelName = Literal["rmbg-2.0", "u2net"]
Device = Literal["cuda", "cpu", "auto"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
U2NetRuntime = Literal["auto", "onnxruntime", "openvino"]
RMBGRuntime = Literal["auto", "torch", "openvino"]

#: Names of batch jobs' own settings (`bgremove batch`), which a settings file may hold too.
BATCH_PREFIX = "BG_REMOVAL_BATCH_"

#: The service's own settings (`deployments.settings.ServiceSettings` adds them): a settings
#: file may hold them, and `RemovalSettings` leaves those lines to the service rather than
#: call them typos. tests/deployments/test_settings_file.py checks the list against the class.
SERVICE_SETTINGS = frozenset(
    {
        "rmbg_num_gpus",
        "rmbg_num_cpus",
        "rmbg_num_replicas",
        "rmbg_autoscaling",
        "rmbg_max_batch_size",
        "rmbg_batch_wait_timeout_s",
        "rmbg_timeout_s",
        "rmbg_chaos_error_rate",
        "rmbg_max_ongoing_requests",
        "rmbg_max_queued_requests",
        "u2net_num_cpus",
        "u2net_num_replicas",
        "u2net_autoscaling",
        "u2net_max_batch_size",
        "u2net_batch_wait_timeout_s",
        "u2net_timeout_s",
        "u2net_int8_build",
        "u2net_int8_build_threads",
        "u2net_int8_build_nice",
        "u2net_int8_build_idle",
        "u2net_int8_build_timeout_s",
        "u2net_max_ongoing_requests",
        "u2net_max_queued_requests",
        "ingress_num_cpus",
        "ingress_num_replicas",
        "ingress_autoscaling",
        "ingress_pixel_budget",
        "ingress_max_ongoing_requests",
        "ingress_max_queued_requests",
        "status_poll_interval_s",
        "status_poll_idle_after_s",
        "retry_after_s",
        "load_retry_initial_s",
        "load_retry_max_s",
        "load_failure_grace_s",
        "api_keys",
        "health_details",
        "cors_allow_origins",
        "url_fetch",
        "url_fetch_allowlist",
        "url_fetch_timeout_s",
    }
)

_DEFAULT_LIMITS = Limits()

SettingsT = TypeVar("SettingsT", bound="RemovalSettings")


class RemovalSettings(FileBackedSettings):
    """The models, their loading and the limits; names map to `BG_REMOVAL_<NAME>` variables."""

    other_prefix: ClassVar[str] = BATCH_PREFIX  # a batch job's lines of the same file
    other_settings: ClassVar[frozenset[str]] = SERVICE_SETTINGS

    model_config = SettingsConfigDict(
        env_prefix="BG_REMOVAL_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    # Where settings come from.
    env_file: str = Field(
        "",
        description="The .env file these settings were read from (`BG_REMOVAL_ENV_FILE`; "
        "default ./.env where it exists; empty: none). Real environment variables and "
        "config args win over its lines.",
    )

    # Routing.
    model: ModelName = Field("rmbg-2.0", description="Primary model for masks.")
    fallback: bool = Field(True, description="Serve with U2-Net when RMBG-2.0 cannot.")
    device: Device = Field("auto", description="Device of the RMBG-2.0 replicas.")

    # RMBG-2.0: what loads and how.
    rmbg_path: str | None = Field(None, description="Local checkpoint dir or .safetensors file.")
    rmbg_repo: str = Field("briaai/RMBG-2.0", description="Hub repo used when no path is set.")
    rmbg_revision: str | None = Field(None, description="Pinned hub revision (commit or tag).")
    rmbg_arch: str = Field("rmbg-2.0", description="BiRefNet preset of the checkpoint.")
    rmbg_resolution: int = Field(1024, ge=32, le=4096, description="Model input side, px.")
    rmbg_dtype: DType = Field("auto", description="auto: float16 on CUDA, float32 on CPU.")
    rmbg_compile: bool = Field(False, description="torch.compile the network at start.")
    rmbg_runtime: RMBGRuntime = Field(
        "auto", description="auto: OpenVINO on CPU devices (if installed), PyTorch on CUDA."
    )
    rmbg_cache_dir: str | None = Field(
        None, description="Converted OpenVINO models; default ~/.cache/bg-removal/openvino."
    )
    rmbg_threads: int | None = Field(
        None, ge=1, description="OpenVINO threads per RMBG-2.0 replica; None: rmbg_num_cpus."
    )

    # U2-Net: what loads and how.
    u2net_model: str = Field("u2net", description="rembg model name (u2net, u2netp, ...).")
    u2net_path: str | None = Field(None, description="Operator's own U2-Net ONNX file.")
    u2net_home: str | None = Field(
        None,
        validation_alias=AliasChoices("u2net_home", "U2NET_HOME"),
        description="rembg's model directory (default ~/.u2net).",
    )
    u2net_runtime: U2NetRuntime = Field(
        "auto", description="auto: the faster of ONNX Runtime and OpenVINO, measured at start."
    )
    u2net_precision: Literal["auto", "f32", "bf16", "int8"] = Field(
        "auto",
        description="auto: the fastest measured (bf16 on CPUs with native bf16, for rembg's "
        "u2net with exact resizing; INT8 once made beside the weights: the service makes it "
        "itself, see u2net_int8_build); f32: rembg's precision, no INT8; int8: require it "
        "(made at start when missing, fails when out of rembg's tolerance).",
    )
    u2net_resize: Literal["auto", "fast", "exact"] = Field(
        "auto", description="auto: exact with bf16, fast with f32; exact+ORT = rembg's bits."
    )
    u2net_threads: int | None = Field(
        None, ge=1, description="Intra-op threads per replica; None: measured (all, half from 4)."
    )
    u2net_allow_download: bool = Field(True, description="Fetch missing weights on first use.")
    u2net_tuning_cache_dir: str = Field(
        "~/.cache/bg-removal/tuning",
        description="Measured runtime choices, reused by restarts on the same CPU, threads, "
        "model and runtimes, and which weights files passed their MD5 check (not hashed "
        "again while unchanged); empty: measure and hash at every start.",
    )

    u2net_timing_runs: int = Field(
        3,
        ge=1,
        le=20,
        description="Timed runs per candidate when U2-Net's runtime is chosen by timing (the "
        "median counts, after one untimed run): fewer start faster on a noisier figure.",
    )

    # What one image may cost, and the output presets.
    max_upload_bytes: int = Field(
        _DEFAULT_LIMITS.max_bytes, ge=1024, description="Largest upload; beyond it: 413."
    )
    max_pixels: int = Field(
        _DEFAULT_LIMITS.max_pixels, ge=1024, description="Refused before decoding."
    )
    max_output_pixels: int = Field(
        _DEFAULT_LIMITS.max_output_pixels,
        ge=1024,
        description="Largest result; refused before the model runs.",
    )
    presets_file: str | None = Field(
        None, description="YAML file of extra output presets (added to the built-in ones)."
    )

    @classmethod
    def load(
        cls: type[SettingsT], environ: Mapping[str, str] | None = None, **args: Any
    ) -> SettingsT:
        """Read the settings once: ``args`` (config args, CLI flags), then the environment,
        then the settings file (checked line by line first), then the defaults.

        Every entry point (the app builder, `bgremove`, batch jobs) reads them through here.
        """
        environ = os.environ if environ is None else environ
        path = settings_file(args.get("env_file"), environ)
        if path is None:
            return cls(**{**args, "env_file": ""})
        lines = cls.read_file(path)
        log = logging.getLogger(cls.__module__)  # the reading class's: the service's, the CLI's
        log.info("settings: read %s from %s", ", ".join(lines.values) or "nothing", path)
        if lines.ignored:
            log.warning(
                "%s: %s not settings of this service, ignored (set them in the environment)",
                path,
                ", ".join(lines.ignored),
            )
        return cls(**{**args, "env_file": str(path)}, _env_file=path)

    @field_validator("rmbg_resolution")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError("rmbg_resolution must be a multiple of 32")
        return value

    def limits(self) -> Limits:
        """What one request may cost: the same limits in the service, the CLI and batch jobs."""
        return Limits(self.max_upload_bytes, self.max_pixels, self.max_output_pixels)

    def load_config(self, name: str) -> Any:
        """Tier ``name``'s load config, built by this class's `<prefix>_load_config`."""
        tier = get_tier(name)
        config = getattr(self, f"{tier.settings_prefix}_load_config")()
        if not isinstance(config, tier.config_type):
            raise TypeError(f"{name} loads from a {tier.config_type.__name__}, got {config!r}")
        return config

    def rmbg_load_config(self) -> RMBGLoadConfig:
        """RMBG-2.0's load config; without `rmbg_threads`, the loader's own thread count."""
        return RMBGLoadConfig(
            source=self.rmbg_path or self.rmbg_repo,
            arch=self.rmbg_arch,
            resolution=self.rmbg_resolution,
            device=self.device,
            dtype=self.rmbg_dtype,
            compile=self.rmbg_compile,
            revision=self.rmbg_revision,
            runtime=self.rmbg_runtime,
            cache_dir=self.rmbg_cache_dir,
            threads=self.rmbg_threads,
        )

    def u2net_load_config(self) -> U2NetLoadConfig:
        return U2NetLoadConfig(
            model_name=self.u2net_model,
            path=self.u2net_path,
            home=self.u2net_home,
            runtime=self.u2net_runtime,
            threads=self.u2net_threads,
            allow_download=self.u2net_allow_download,
            precision=self.u2net_precision,
            resize=self.u2net_resize,
            tuning_cache_dir=self.u2net_tuning_cache_dir or None,
            timing_runs=self.u2net_timing_runs,
        )
