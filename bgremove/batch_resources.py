"""What a batch job's model stages need from the cluster: each tier's actors (CPUs, GPU
share, how many), its load config and model input, and the memory its tasks reserve.

Read from the registry's tiers and the `<prefix>_*` batch settings, as the service builds its
replica groups from them, so a new tier needs its settings and no code here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bgremove.errors import SetupError, UsageError
from models.registry import FALLBACK, TIERS, ModelTier, get_tier

if TYPE_CHECKING:
    from bgremove.batch_settings import BatchSettings
    from imaging.resize import ModelInputSpec
    from models.settings import RemovalSettings

log = logging.getLogger(__name__)

#: most of the cluster's CPUs a CPU tier's pool (U2-Net's) may hold as the primary / as fallback
MASK_CPU_SHARE = 0.75
FALLBACK_CPU_SHARE = 1 / 16


@dataclass(frozen=True)
class ModelStage:
    """One model tier of the job and the actor pool that runs it."""

    tier: str
    config: Any
    spec: ModelInputSpec
    num_cpus: float
    num_gpus: float
    max_actors: int
    batch_size: int


def model_stages(
    settings: BatchSettings, service: RemovalSettings, resources: Mapping[str, float]
) -> list[ModelStage]:
    """The model tiers to try, in order, with their actors' resources and input sizes: the
    primary (`--model`; auto: the GPU tier when the cluster has GPUs, else the fallback
    tier), then the registry's fallback tier when it is another one and fallback is on.

    Each stage comes from its `ModelTier` and its `<prefix>_*` settings, as the service's
    replica groups do. A tier whose input depends on what its load chooses (`ModelTier.pin`:
    U2-Net) is loaded once in a Ray task, on a worker like its actors' (needs Ray).
    """
    gpus = float(resources.get("GPU", 0))
    primary = settings.model
    if primary == "auto":
        primary = next(t.name for t in TIERS.values() if t.uses_gpu) if gpus > 0 else FALLBACK
    names = [primary] + ([FALLBACK] if service.fallback and primary != FALLBACK else [])
    return [_stage(get_tier(name), name == primary, settings, service, resources) for name in names]


def _stage(
    tier: ModelTier,
    primary: bool,
    settings: BatchSettings,
    service: RemovalSettings,
    resources: Mapping[str, float],
) -> ModelStage:
    """One tier's stage: its actors' CPUs, GPU share and count, its load config, its input."""
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    prefix = tier.settings_prefix
    num_cpus: float = getattr(settings, f"{prefix}_num_cpus")
    threads = getattr(service, f"{prefix}_threads") or max(1, math.ceil(num_cpus))
    config = replace(service.load_config(tier.name), threads=threads)
    num_gpus = 0.0
    if tier.uses_gpu:
        num_gpus = _gpu_share(tier, getattr(settings, f"{prefix}_num_gpus"), service, gpus)
        config = replace(config, device=service.device if num_gpus > 0 else "cpu")
        # on GPUs as many actors as shares fit; on CPUs one (it takes all its threads)
        actors = max(1, int(gpus // num_gpus)) if num_gpus else 1
    else:
        # the most actors Ray Data may grow the pool to (it grows while work queues up):
        # U2-Net's mask is ~3/4 of an image's CPU time (u2net, marketplace preset, measured
        # in benchmarks/bench_batch.py); as the fallback it should rarely have work
        share = MASK_CPU_SHARE if primary else FALLBACK_CPU_SHARE
        actors = max(1, int(cpus * share / num_cpus))
    if tier.pin is None:
        spec = tier.input_size(config, None)
    else:
        spec, config = _resolve(tier, config, num_cpus)
    return ModelStage(
        tier.name,
        config,
        spec,
        num_cpus,
        num_gpus,
        getattr(settings, f"{prefix}_actors") or actors,
        getattr(settings, f"{prefix}_batch_size"),
    )


def _gpu_share(
    tier: ModelTier, asked: float | None, service: RemovalSettings, gpus: float
) -> float:
    """The GPU share of each of a GPU tier's actors (None asked: one GPU where the cluster
    has GPUs, else none); UsageError when the cluster cannot give it."""
    num_gpus = asked if asked is not None else (1.0 if gpus > 0 else 0.0)
    flag = f"--{tier.settings_prefix}-gpus"
    if num_gpus == 0 and service.device == "cuda":
        raise UsageError(
            f"BG_REMOVAL_DEVICE=cuda but {tier.label}'s actors get no GPU (the cluster has "
            f"{gpus:g}, {flag} {num_gpus:g})",
            code="resources",
        )
    if num_gpus > gpus:
        raise UsageError(
            f"each {tier.label} actor asks for {num_gpus:g} GPU(s) but the cluster has "
            f"{gpus:g}; set {flag} 0 to run it on CPUs, or --model {FALLBACK}",
            code="resources",
        )
    return num_gpus


def _resolve(tier: ModelTier, config: Any, num_cpus: float) -> tuple[ModelInputSpec, Any]:
    """`batch_stages.resolve_tier` in a Ray task with an actor's CPUs: the input and the
    pinned config; SetupError when the model cannot load there."""
    import ray
    from ray.exceptions import RayTaskError

    from bgremove.batch_stages import resolve_tier

    probe = ray.remote(resolve_tier).options(num_cpus=num_cpus)
    try:
        return ray.get(probe.remote(tier.name, config))
    except RayTaskError as exc:
        cause = exc.cause if exc.cause is not None else exc
        raise SetupError(f"{tier.label} cannot load: {cause}", code="model_unavailable") from None


def fit_memory(requested: int, node_memory: list[float], stage: str) -> int:
    """A reservation no node can hold would leave the stage's tasks waiting forever: cap it
    at half the largest node's memory (logged: lower the pixel limits instead)."""
    largest = max(node_memory, default=0.0)
    if largest and requested > largest / 2:
        log.warning(
            "%s tasks would reserve %.1f GiB (the pixel limits' worst case) but the largest "
            "node has %.1f GiB for Ray: reserving half of it; lower BG_REMOVAL_MAX_PIXELS / "
            "BG_REMOVAL_MAX_OUTPUT_PIXELS or set the stage's memory to be exact",
            stage,
            requested / 1024**3,
            largest / 1024**3,
        )
        return int(largest / 2)
    return requested
