"""Typed errors for model weights and inference.

The service decides fallbacks on these types and shows their messages to the
operator, so every message says what to do next.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class for every error raised by `models`."""

    #: short machine-readable reason, used in health output and X-Fallback-Reason
    code: str = "model_error"
    #: whether the same load may succeed later without a change of configuration
    #: (a network blip, weights still being copied); replicas retry these with backoff
    transient: bool = False


class WeightsError(ModelError):
    """The weights could not be obtained or do not fit the network."""

    code = "weights_error"


class GatedRepoError(WeightsError):
    """The hub refused access: licence not accepted, or token missing or invalid."""

    code = "weights_gated"


class NetworkUnavailableError(WeightsError):
    """The weights are not cached and the host that serves them cannot be reached."""

    code = "weights_network"
    transient = True


class WeightsNotFoundError(WeightsError):
    """The path, repository, revision or file named by the configuration does not exist."""

    code = "weights_not_found"
    #: a volume still being filled or a download by another job: worth another look later
    transient = True


class CorruptWeightsError(WeightsError):
    """The file exists but cannot be read as the expected format."""

    code = "weights_corrupt"


class ChecksumMismatchError(CorruptWeightsError):
    """A file under a known model name does not have the checksum that model pins."""

    code = "weights_checksum"


class StateDictMismatchError(WeightsError):
    """The checkpoint's keys or shapes do not match the network built from the config."""

    code = "weights_mismatch"


class InvalidModelError(WeightsError):
    """A model file loads but its inputs or outputs are not what the backend needs."""

    code = "weights_invalid_model"


class DeviceUnavailableError(ModelError):
    """The configured device (e.g. `cuda`) is not present on this machine."""

    code = "device_unavailable"


class OutOfMemoryError(ModelError):
    """The device ran out of memory for this batch (CUDA OOM); smaller batches may fit."""

    code = "out_of_memory"


class Int8UnavailableError(ModelError):
    """INT8 U2-Net cannot be made or used for these weights here (no recipe, no nncf)."""

    code = "int8_unavailable"
