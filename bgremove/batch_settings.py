"""`bgremove batch`'s own settings (BG_REMOVAL_BATCH_* variables, or flags).

Apart from the job (`bgremove.batch`) so that building the command line, ``bgremove --help``
included, loads no pydantic: the flags' help is these fields' descriptions, looked up only
when help is shown.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from imaging.limits import Limits
from imaging.memory import DECODE_BASE_MEMORY, render_memory
from models.settings_file import FileBackedSettings, settings_file

if TYPE_CHECKING:
    from bgremove.storage import S3Config


class BatchSettings(FileBackedSettings):
    """The job's own settings: resources per stage, resume, where Ray and S3 are.

    Read once (BG_REMOVAL_BATCH_* variables; the S3 ones also from the usual AWS_*
    names), flags on top, then passed to the stages. Defaults are safe on a laptop and
    scale with the cluster: actor pools grow from one actor up to their maximum as Ray Data
    sees work queue up.
    """

    model_config = SettingsConfigDict(
        env_prefix="BG_REMOVAL_BATCH_", extra="forbid", frozen=True, populate_by_name=True
    )

    model: Literal["auto", "rmbg-2.0", "u2net"] = Field(
        "auto", description="auto: RMBG-2.0 when the cluster has GPUs, else U2-Net."
    )
    decode_num_cpus: float = Field(1.0, gt=0, description="CPUs per read + decode task.")
    finish_num_cpus: float = Field(1.0, gt=0, description="CPUs per compose + encode + write task.")
    io_batch_size: int = Field(4, ge=1, le=256, description="Images per decode/finish call.")
    decode_memory_mb: int | None = Field(
        None, ge=1, description="Memory per decode task; None: one photo at the pixel limit."
    )
    finish_memory_mb: int | None = Field(
        None, ge=1, description="Memory per finish task; None: as the service's ingress."
    )
    u2net_num_cpus: float = Field(1.0, gt=0, description="CPUs per U2-Net actor (its threads).")
    u2net_actors: int | None = Field(
        None,
        ge=1,
        description="Most U2-Net actors; None: 3/4 of the cluster's CPUs (1/16 "
        "as RMBG-2.0's fallback), as many as the job starts with.",
    )
    u2net_batch_size: int = Field(8, ge=1, le=256, description="Images per U2-Net call.")
    rmbg_num_gpus: float | None = Field(
        None, ge=0, description="GPUs per RMBG-2.0 actor; None: 1 with GPUs, else 0 (CPU)."
    )
    rmbg_num_cpus: float = Field(1.0, gt=0, description="CPUs per RMBG-2.0 actor.")
    rmbg_actors: int | None = Field(
        None,
        ge=1,
        description="Most RMBG-2.0 actors; None: one per GPU share the job starts with "
        "(1 on CPUs).",
    )
    rmbg_batch_size: int = Field(8, ge=1, le=256, description="Images per RMBG-2.0 call.")
    retry_failed: bool = Field(
        False, description="Retry inputs that failed for a reason of their own before."
    )
    manifest_flush_s: float = Field(
        30.0, gt=0, description="Manifest records reach DST at least this often."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster; None: RAY_ADDRESS, else a local one ('local': new)."
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("BG_REMOVAL_BATCH_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint, e.g. http://minio:9000.",
    )
    s3_region: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "BG_REMOVAL_BATCH_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"
        ),
        description="Region of the S3 bucket.",
    )
    s3_access_key_id: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("BG_REMOVAL_BATCH_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key ID (better from the environment or a secret).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "BG_REMOVAL_BATCH_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"
        ),
        description="S3 secret access key (better from the environment or a secret).",
    )
    s3_session_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("BG_REMOVAL_BATCH_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="S3 session token of temporary credentials (no flag: environment only).",
    )

    @classmethod
    def load(cls, **given: Any) -> BatchSettings:
        """Read once: ``given`` (flags), the environment, then the same `.env` file as the
        service's settings (`models.settings_file.settings_file`), then the defaults."""
        return cls(**given, _env_file=settings_file(None, os.environ))

    def decode_memory(self, limits: Limits) -> int:
        """Bytes Ray reserves per decode task: the photo it decodes at a time (3 bytes per
        pixel, at the service's pixel limit), plus the worker's own."""
        if self.decode_memory_mb is not None:
            return self.decode_memory_mb * 1024**2
        return DECODE_BASE_MEMORY + 3 * limits.max_pixels

    def finish_memory(self, limits: Limits) -> int:
        """Bytes Ray reserves per finish task: what the service's ingress reserves for the
        largest request (decoded photo, mask, edge refinement, canvas, encoder), by the one
        rule of `imaging.memory`."""
        if self.finish_memory_mb is not None:
            return self.finish_memory_mb * 1024**2
        return render_memory(limits.max_pixels + limits.max_output_pixels)

    def s3(self) -> S3Config:
        from bgremove.storage import S3Config

        return S3Config(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            session_token=self.s3_session_token,
        )
