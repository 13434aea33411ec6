"""The service's settings: one typed place, read once when the app is built.

Values come, highest priority first, from the app builder's arguments (the
`args:` block of a Serve config file), then `BG_REMOVAL_*` environment
variables, then a `.env` file (the migration guide's way to configure the
service: `./.env` where the settings are read, or the file `BG_REMOVAL_ENV_FILE`
names), then the defaults below. The resulting object is passed to every
deployment's constructor, so replicas never read the environment or the file
themselves (they may run elsewhere, in another directory) and a `serve deploy`
with changed args is the whole rollout.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from dotenv.parser import parse_stream
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from deployments.url_fetch import FetchConfig, UrlPolicy
from imaging.pipeline import Limits
from models.registry import (
    FALLBACK,
    RMBG,
    TIERS,
    U2NET,
    RMBGLoadConfig,
    U2NetLoadConfig,
    get_tier,
)

log = logging.getLogger(__name__)

ModelName = Literal["rmbg-2.0", "u2net"]
Device = Literal["cuda", "cpu", "auto"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
U2NetRuntime = Literal["auto", "onnxruntime", "openvino"]
RMBGRuntime = Literal["auto", "torch", "openvino"]


@dataclass(frozen=True)
class RecoveryConfig:
    """How a model replica whose load failed on a transient cause heals itself."""

    retry_initial_s: float
    retry_max_s: float
    grace_s: float


@dataclass(frozen=True)
class GroupSettings:
    """One model group's options, the same for every tier, read from its `<prefix>_*` settings.

    The flat settings (`rmbg_num_cpus`, `BG_REMOVAL_U2NET_TIMEOUT_S`, ...) stay what operators
    write; this view lets the app builder and the router treat every tier alike.
    """

    name: str
    #: runs replicas in this mode: the primary model, or the fallback (which always runs)
    deployed: bool
    num_cpus: float
    #: GPUs per replica; None: half a GPU where the cluster has any (tiers with no GPU: 0)
    num_gpus: float | None
    num_replicas: int | None
    autoscaling: dict[str, Any] | None
    max_batch_size: int
    batch_wait_timeout_s: float
    #: the group's share of a request's deadline
    timeout_s: float
    max_ongoing_requests: int
    max_queued_requests: int
    #: share of batches failed on purpose; None where the tier has no such setting
    chaos_error_rate: float | None
    #: the tier's load config (`models.registry`), what its replicas are bound with
    load_config: Any

    def user_config(self) -> dict[str, float | int]:
        """Settings the group's replicas apply in `reconfigure`, without a restart."""
        config: dict[str, float | int] = {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }
        if self.chaos_error_rate is not None:
            config["chaos_error_rate"] = self.chaos_error_rate
        return config


#: The variable that names the settings file; empty: read none.
ENV_FILE_VARIABLE = "BG_REMOVAL_ENV_FILE"
#: The settings file read from the current directory when the variable is not set.
DEFAULT_ENV_FILE = ".env"
#: Names of batch jobs' own settings (`bgremove batch`), which a settings file may hold too.
BATCH_PREFIX = "BG_REMOVAL_BATCH_"


class SettingsFileError(ValueError):
    """The settings file cannot be used as it is: names the file and line, says what to do."""


def timeout_setting(name: str) -> str:
    """The setting (and routing `user_config` key) of tier ``name``'s deadline share."""
    return f"{get_tier(name).settings_prefix}_timeout_s"


class FileBackedSettings(BaseSettings):
    """Settings whose `.env` file (the ``_env_file`` argument) is read strictly
    (`read_settings_file`), in pydantic-settings' order: arguments, the environment, the
    file, the defaults. Lines under `other_prefix` belong to another such class."""

    other_prefix: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        file_settings = _StrictFileSource(settings_cls, dotenv_settings.env_file, cls.other_prefix)
        return init_settings, env_settings, file_settings, file_secret_settings


class ServiceSettings(FileBackedSettings):
    """Everything an operator can set; names map to `BG_REMOVAL_<NAME>` variables."""

    other_prefix: ClassVar[str] = BATCH_PREFIX  # a batch job's lines of the same file

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

    # RMBG-2.0 group.
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
    rmbg_num_gpus: float | None = Field(
        None, ge=0, le=8, description="GPUs per replica; None: 0.5 if the cluster has GPUs."
    )
    rmbg_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per RMBG-2.0 replica.")
    rmbg_num_replicas: int | None = Field(
        None, ge=0, description="Fixed replica count; None leaves it to the Serve config."
    )
    rmbg_autoscaling: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config of the RMBG-2.0 group."
    )
    rmbg_max_batch_size: int = Field(
        4, ge=1, le=64, description="10.3 GiB peak per replica on an H100 (fits 0.5 of 24 GiB)."
    )
    rmbg_batch_wait_timeout_s: float = Field(0.01, ge=0, le=5)
    rmbg_timeout_s: float = Field(30.0, gt=0, description="Per-request mask timeout.")
    rmbg_chaos_error_rate: float = Field(
        0.0, ge=0, le=1, description="Fail this share of batches on purpose (fallback drills)."
    )

    # U2-Net group.
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
        description="auto: measured; bf16 is a candidate only for rembg's u2net, exact "
        "resizing, on CPUs with native bf16; int8 once `bgremove quantize` made it here.",
    )
    u2net_resize: Literal["auto", "fast", "exact"] = Field(
        "auto", description="auto: exact with bf16, fast with f32; exact+ORT = rembg's bits."
    )
    u2net_threads: int | None = Field(
        None, ge=1, description="Intra-op threads per replica; None: measured (all, half from 4)."
    )
    u2net_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per U2-Net replica.")
    u2net_num_replicas: int | None = Field(None, ge=0)
    u2net_autoscaling: dict[str, Any] | None = Field(None)
    u2net_max_batch_size: int = Field(4, ge=1, le=64)
    u2net_batch_wait_timeout_s: float = Field(0.005, ge=0, le=5)
    u2net_timeout_s: float = Field(60.0, gt=0)
    u2net_allow_download: bool = Field(True, description="Fetch missing weights on first use.")
    u2net_tuning_cache_dir: str = Field(
        "~/.cache/bg-removal/tuning",
        description="Measured runtime choices, reused by restarts on the same CPU, threads, "
        "model and runtimes; empty: measure at every start.",
    )

    # Ingress.
    ingress_num_cpus: float = Field(1.0, ge=0)
    ingress_num_replicas: int | None = Field(None, ge=1)
    ingress_autoscaling: dict[str, Any] | None = Field(None)
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(50_000_000, ge=1024, description="Refused before decoding.")
    max_output_pixels: int = Field(
        50_000_000, ge=1024, description="Largest result; refused before the model runs."
    )
    status_poll_interval_s: float = Field(2.0, gt=0, description="Replica state refresh.")
    presets_file: str | None = Field(
        None, description="YAML file of extra output presets (added to the built-in ones)."
    )

    # Budgets and backpressure.
    ingress_pixel_budget: int = Field(
        100_000_000,
        ge=1024,
        description="Pixels (input + output) one ingress replica holds at once; beyond: 503.",
    )
    ingress_max_ongoing_requests: int = Field(32, ge=1)
    ingress_max_queued_requests: int = Field(
        64, ge=1, description="Requests the proxy queues per ingress replica; beyond: 503."
    )
    rmbg_max_ongoing_requests: int = Field(16, ge=1)
    rmbg_max_queued_requests: int = Field(
        32, ge=1, description="Queued masks per RMBG-2.0 group handle; beyond: fallback."
    )
    u2net_max_ongoing_requests: int = Field(
        8, ge=1, description="Per replica: two batches; more waits at the handle, not in a replica."
    )
    u2net_max_queued_requests: int = Field(
        64, ge=1, description="Queued masks per U2-Net group handle; beyond: 503."
    )
    retry_after_s: int = Field(2, ge=1, le=600, description="Retry-After of overload answers.")

    # Self-healing of model replicas.
    load_retry_initial_s: float = Field(5.0, gt=0, description="First retry of a failed load.")
    load_retry_max_s: float = Field(120.0, gt=0, description="Longest wait between load retries.")
    load_failure_grace_s: float = Field(
        600.0, gt=0, description="Transient load failure this long: replica replaced."
    )

    # Access.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys (from a secret); empty: no authentication.",
    )
    health_details: bool = Field(
        False, description="Show replica details in health without an API key."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty: off."
    )

    # Image URLs (rembg's `url`, remove.bg's `image_url` and `bg_image_url`).
    url_fetch: Literal["off", "public", "allowlist"] = Field(
        "off",
        description="Fetch images by URL: `off` refuses every URL (a fetcher sends requests "
        "from inside your network: opt in); `public`: public addresses only, every resolved "
        "address checked and the connection pinned to it; `allowlist`: only the hosts and "
        "networks in url_fetch_allowlist.",
    )
    url_fetch_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names, .suffixes (subdomains) and networks "
        "(CIDR; may be internal) that url_fetch=allowlist fetches from.",
    )
    url_fetch_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Whole fetch of one image URL, redirects included."
    )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **args: Any) -> ServiceSettings:
        """Read the settings once: ``args`` (config args, CLI flags), then the environment,
        then the settings file (checked line by line first), then the defaults.

        Every entry point (the app builder, `bgremove`, batch jobs) reads them through here.
        """
        environ = os.environ if environ is None else environ
        path = settings_file(args.get("env_file"), environ)
        if path is None:
            return cls(**{**args, "env_file": ""})
        lines = read_settings_file(path, cls, cls.other_prefix)
        log.info("settings: read %s from %s", ", ".join(lines.values) or "nothing", path)
        if lines.ignored:
            log.warning(
                "%s: %s not settings of this service, ignored (set them in the environment)",
                path,
                ", ".join(lines.ignored),
            )
        return cls(**{**args, "env_file": str(path)}, _env_file=path)

    @field_validator("api_keys", "cors_allow_origins", "url_fetch_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("rmbg_resolution")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError("rmbg_resolution must be a multiple of 32")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.ingress_pixel_budget < self.max_pixels + self.max_output_pixels:
            raise ValueError(
                f"ingress_pixel_budget ({self.ingress_pixel_budget}) must hold the largest "
                f"request: max_pixels + max_output_pixels = "
                f"{self.max_pixels + self.max_output_pixels}"
            )
        self.fetch_config()  # a bad allowlist entry fails here, when the settings load
        if self.model == "rmbg-2.0" and self.device == "cuda" and self.rmbg_num_gpus == 0:
            raise ValueError(
                "BG_REMOVAL_DEVICE=cuda but rmbg_num_gpus=0: the RMBG-2.0 replicas would get "
                "no GPU. Use a GPU config (configs/gpu.yaml) or set BG_REMOVAL_DEVICE=cpu."
            )
        return self

    @property
    def request_deadline_s(self) -> float:
        """The longest a request waits for masks: the primary's share, then the fallback's
        (the longest primary's, since `model` can change by a rollout in place)."""
        primaries = [self.group(name).timeout_s for name in TIERS if name != FALLBACK]
        return max(primaries, default=0.0) + self.group(FALLBACK).timeout_s

    def fetch_config(self) -> FetchConfig:
        """What image URLs may be fetched, with the upload's byte limit."""
        return FetchConfig(
            policy=UrlPolicy(self.url_fetch),
            allowlist=tuple(self.url_fetch_allowlist),
            max_bytes=self.max_upload_bytes,
            timeout_s=self.url_fetch_timeout_s,
        )

    def limits(self) -> Limits:
        """What one request may cost: the same limits in the service, the CLI and batch jobs."""
        return Limits(self.max_upload_bytes, self.max_pixels, self.max_output_pixels)

    def api_key_hashes(self) -> frozenset[str]:
        """SHA-256 of each key: what travels to the replicas (Serve stores init args)."""
        return frozenset(
            hashlib.sha256(key.get_secret_value().encode()).hexdigest() for key in self.api_keys
        )

    def recovery_config(self) -> RecoveryConfig:
        return RecoveryConfig(
            retry_initial_s=self.load_retry_initial_s,
            retry_max_s=self.load_retry_max_s,
            grace_s=self.load_failure_grace_s,
        )

    def deploys(self, name: str) -> bool:
        """Whether tier ``name``'s group runs replicas: the primary model's does, and so does
        the fallback's in every mode (it is the tier that always answers, and keeping it up
        lets `fallback` be switched by a rollout in place). Other groups run none and claim
        no GPU."""
        return name == self.model or get_tier(name).fallback

    @property
    def deploys_rmbg(self) -> bool:
        """`u2net` mode runs no RMBG-2.0 replica and claims no GPU."""
        return self.deploys(RMBG)

    def group(self, name: str) -> GroupSettings:
        """Tier ``name``'s group options, from its `<prefix>_*` settings (by the registry's
        prefix, so a new tier needs its settings fields and no code here)."""
        tier = get_tier(name)

        def value(option: str, *default: Any) -> Any:
            return getattr(self, f"{tier.settings_prefix}_{option}", *default)

        return GroupSettings(
            name=name,
            deployed=self.deploys(name),
            num_cpus=value("num_cpus"),
            num_gpus=value("num_gpus") if tier.uses_gpu else 0,
            num_replicas=value("num_replicas"),
            autoscaling=value("autoscaling"),
            max_batch_size=value("max_batch_size"),
            batch_wait_timeout_s=value("batch_wait_timeout_s"),
            timeout_s=value("timeout_s"),
            max_ongoing_requests=value("max_ongoing_requests"),
            max_queued_requests=value("max_queued_requests"),
            chaos_error_rate=value("chaos_error_rate", None),
            load_config=self.load_config(name),
        )

    def load_config(self, name: str) -> Any:
        """Tier ``name``'s load config, built by this class's `<prefix>_load_config`."""
        tier = get_tier(name)
        config = getattr(self, f"{tier.settings_prefix}_load_config")()
        if not isinstance(config, tier.config_type):
            raise TypeError(f"{name} loads from a {tier.config_type.__name__}, got {config!r}")
        return config

    def rmbg_load_config(self) -> RMBGLoadConfig:
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
            # Ray does not pin CPUs: without a setting, use as many threads as CPUs reserved,
            # not every core of the node
            threads=self.rmbg_threads or max(1, math.ceil(self.rmbg_num_cpus)),
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
        )

    def rmbg_user_config(self) -> dict[str, float | int]:
        """Settings the RMBG-2.0 replicas apply in `reconfigure`, without a restart."""
        return self.group(RMBG).user_config()

    def u2net_user_config(self) -> dict[str, float | int]:
        """Settings the U2-Net replicas apply in `reconfigure`, without a restart."""
        return self.group(U2NET).user_config()

    def routing_user_config(self) -> dict[str, str | bool | float]:
        """Routing settings the ingress applies in `reconfigure`, without a restart: the
        primary model, fallback on/off and each tier's `<prefix>_timeout_s`."""
        config: dict[str, str | bool | float] = {"model": self.model, "fallback": self.fallback}
        for name in TIERS:
            config[timeout_setting(name)] = self.group(name).timeout_s
        return config


def settings_file(given: str | None, environ: Mapping[str, str]) -> Path | None:
    """The settings file to read: ``given`` (the `env_file` arg), else `BG_REMOVAL_ENV_FILE`,
    else `./.env` where it exists; an empty name reads none. A named file must exist."""
    name = given if given is not None else environ.get(ENV_FILE_VARIABLE)
    if name is None:
        default = Path(DEFAULT_ENV_FILE)
        return default.resolve() if default.is_file() else None
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise SettingsFileError(
            f"{ENV_FILE_VARIABLE}={name}: no such file; point it at your .env file, "
            "or set it empty to read none"
        )
    return path.resolve()


def variable_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Each setting's environment variables (upper case) -> the setting's name: its prefixed
    name, and its upper-case alias where it has one (`U2NET_HOME`, rembg's)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for name, info in settings_cls.model_fields.items():
        names[f"{prefix}{name}".upper()] = name
        if isinstance(info.validation_alias, AliasChoices):
            choices = info.validation_alias.choices
            names.update({str(c): name for c in choices if str(c).isupper()})
    names.pop(ENV_FILE_VARIABLE, None)  # named outside the file, never inside it
    return names


@dataclass(frozen=True)
class SettingsFileLines:
    """What a settings file holds for one settings class: its values by variable name, and
    the names that are none of its settings (nor another class's)."""

    values: dict[str, str]
    ignored: tuple[str, ...]


def read_settings_file(
    path: Path, settings_cls: type[BaseSettings], other_prefix: str = ""
) -> SettingsFileLines:
    """The lines of a .env file that set ``settings_cls``'s settings.

    Strict where python-dotenv is lenient: a line it cannot parse, a name without a value
    and an unknown name with the class's prefix (`BG_REMOVAL_`: a typo would silently change
    nothing) are errors naming the file and line. Names under ``other_prefix`` belong to
    another class (a batch job's `BG_REMOVAL_BATCH_*`, which reads the same file), checked
    there. Other names (e.g. `HF_TOKEN`) are not settings: left alone, since secrets belong
    in the environment, not in settings Serve stores.
    """
    known = variable_names(settings_cls)
    prefix = settings_cls.model_config.get("env_prefix", "")
    values: dict[str, str] = {}
    ignored: list[str] = []
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            text = binding.original.string
            # a binding starts after the previous one, blank lines included: skip them
            line = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
            where = f"{path}:{line}"
            if binding.error:
                raise SettingsFileError(
                    f"{where}: cannot read {text.strip()[:60]!r}; "
                    "write NAME=value (quote values with spaces)"
                )
            if binding.key is None:
                continue  # a comment or a blank line
            name = binding.key.upper()
            if binding.value is None:
                raise SettingsFileError(f"{where}: {binding.key} has no value; write {name}=...")
            if name in known:
                values[name] = binding.value
            elif other_prefix and name.startswith(other_prefix):
                continue  # another settings class's line
            elif name.startswith(prefix):
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise SettingsFileError(f"{where}: {binding.key} is not a setting{hint}")
            else:
                ignored.append(binding.key)
    return SettingsFileLines(values, tuple(ignored))


class _StrictFileSource(DotEnvSettingsSource):
    """pydantic-settings' .env source, reading files through `read_settings_file`."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Any, other_prefix: str) -> None:
        self._other_prefix = other_prefix  # before the base class reads the file
        super().__init__(settings_cls, env_file=env_file)

    def _read_env_file(self, file_path: Path) -> Mapping[str, str | None]:
        lines = read_settings_file(file_path, self.settings_cls, self._other_prefix)
        return {name.lower(): value for name, value in lines.values.items()}
