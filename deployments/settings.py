"""The service's settings: one typed place, read once when the app is built.

Values come, highest priority first, from the app builder's arguments (the
`args:` block of a Serve config file), then `BG_REMOVAL_*` environment
variables, then a `.env` file (the migration guide's way to configure the
service: `./.env` where the settings are read, or the file `BG_REMOVAL_ENV_FILE`
names), then the defaults. The resulting object is passed to every
deployment's constructor, so replicas never read the environment or the file
themselves (they may run elsewhere, in another directory) and a `serve deploy`
with changed args is the whole rollout.

What `bgremove` and batch jobs share with the service (the models, their loading, the
limits, the reading of the `.env` file) is `models.settings.RemovalSettings`, below all
three; `ServiceSettings` adds the service's own settings to it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from deployments.url_fetch import FetchConfig, UrlPolicy
from models.registry import (
    FALLBACK,
    RMBG,
    TIERS,
    U2NET,
    RMBGLoadConfig,
    U2NetLoadConfig,
    get_tier,
)

# re-exported: the service's modules and tests name them here
from models.settings import ModelName as ModelName
from models.settings import RemovalSettings
from models.settings_file import SettingsFileError as SettingsFileError


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


def timeout_setting(name: str) -> str:
    """The setting (and routing `user_config` key) of tier ``name``'s deadline share."""
    return f"{get_tier(name).settings_prefix}_timeout_s"


class ServiceSettings(RemovalSettings):
    """Everything an operator can set: the settings `bgremove` and batch jobs share
    (`models.settings.RemovalSettings`: models, loading, limits) and the service's own;
    names map to `BG_REMOVAL_<NAME>` variables."""

    other_settings: ClassVar[frozenset[str]] = frozenset()  # the service's own are fields here

    # RMBG-2.0 group.
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
    rmbg_batch_wait_timeout_s: float = Field(
        0.01,
        ge=0,
        le=5,
        description="Default batch wait of RMBG-2.0, s (`user_config` in configs).",
    )
    rmbg_timeout_s: float = Field(30.0, gt=0, description="Per-request mask timeout.")
    rmbg_chaos_error_rate: float = Field(
        0.0, ge=0, le=1, description="Fail this share of batches on purpose (fallback drills)."
    )

    # U2-Net group.
    u2net_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per U2-Net replica.")
    u2net_num_replicas: int | None = Field(
        None, ge=0, description="Fixed replica count; None leaves it to the Serve config."
    )
    u2net_autoscaling: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config of the U2-Net group."
    )
    u2net_max_batch_size: int = Field(
        4, ge=1, le=64, description="Default max batch of U2-Net (`user_config` in the configs)."
    )
    u2net_batch_wait_timeout_s: float = Field(
        0.005, ge=0, le=5, description="Default batch wait of U2-Net, s (`user_config` in configs)."
    )
    u2net_timeout_s: float = Field(
        60.0, gt=0, description="U2-Net's share of a request's deadline; beyond it: 504."
    )
    u2net_int8_build: bool = Field(
        True,
        description="With u2net_precision auto on a CPU without native bf16: make the INT8 "
        "model in the background (checked against rembg on the shipped photos, kept beside "
        "the weights for every replica and restart) and serve it once it is faster.",
    )
    u2net_int8_build_threads: int = Field(
        1, ge=1, description="CPUs the background INT8 build may use (a low-priority process)."
    )
    u2net_int8_build_nice: int = Field(
        10, ge=0, le=19, description="Niceness of the INT8 build: requests in flight come first."
    )
    u2net_int8_build_idle: bool = Field(
        True,
        description="Run the INT8 build under Linux's SCHED_IDLE too: only on CPU time the "
        "replica leaves (slower under load, gentler on requests in flight).",
    )
    u2net_int8_build_timeout_s: float = Field(
        1800.0, gt=0, description="An INT8 build (or a wait for another one) gives up after this."
    )

    # Ingress.
    ingress_num_cpus: float = Field(
        1.0, ge=0, description="CPUs reserved per ingress replica (decode, compose, encode)."
    )
    ingress_num_replicas: int | None = Field(
        None, ge=1, description="Fixed ingress replica count; None leaves it to the Serve config."
    )
    ingress_autoscaling: dict[str, Any] | None = Field(
        None, description="Serve autoscaling_config of the ingress."
    )
    status_poll_interval_s: float = Field(2.0, gt=0, description="Replica state refresh.")
    status_poll_idle_after_s: float = Field(
        60.0,
        gt=0,
        description="An ingress that routed no request for this long stops the replica state "
        "refresh (each asks Serve for every app's status) until the next request, which waits "
        "for a fresh one; health refreshes on its own.",
    )

    # Budgets and backpressure.
    ingress_pixel_budget: int = Field(
        100_000_000,
        ge=1024,
        description="Pixels (input + output) one ingress replica holds at once; beyond: 503.",
    )
    ingress_max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one ingress replica takes at once."
    )
    ingress_max_queued_requests: int = Field(
        64, ge=1, description="Requests the proxy queues per ingress replica; beyond: 503."
    )
    rmbg_max_ongoing_requests: int = Field(
        16, ge=1, description="Masks one RMBG-2.0 replica takes at once."
    )
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

    @field_validator("api_keys", "cors_allow_origins", "url_fetch_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
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

    def rmbg_load_config(self) -> RMBGLoadConfig:
        """The shared load config; without `rmbg_threads`, as many threads as CPUs reserved
        (Ray does not pin CPUs: not every core of the node)."""
        config = super().rmbg_load_config()
        return replace(config, threads=config.threads or max(1, math.ceil(self.rmbg_num_cpus)))

    def u2net_load_config(self) -> U2NetLoadConfig:
        """The shared load config, with the background INT8 build a replica may run (the
        CLI and batch jobs only reuse a built model: they do not live long enough)."""
        config = super().u2net_load_config()
        if not self.u2net_int8_build:
            return config
        from models.u2net_int8_build import BuildBudget

        budget = BuildBudget(
            threads=self.u2net_int8_build_threads,
            nice=self.u2net_int8_build_nice,
            idle=self.u2net_int8_build_idle,
            timeout_s=self.u2net_int8_build_timeout_s,
        )
        return replace(config, int8_build=budget)

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
