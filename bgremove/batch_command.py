"""``bgremove batch SRC DST``: the subcommand, its flags and help; the job is `bgremove.batch`.

Building this parser (``bgremove --help`` and every command line do) loads neither the job's
modules nor pydantic: a job flag's help is its `BatchSettings` field's description, read only
when help is printed, and the job is imported when it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from bgremove.errors import SetupError, UsageError
from bgremove.flags import add_option_flags, option_fields
from models.registry import TIERS

if TYPE_CHECKING:
    from bgremove.batch_settings import BatchSettings

#: flag -> (BatchSettings field, argparse keywords)
_JOB_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--model": ("model", {"choices": ["auto", *TIERS]}),
    "--decode-cpus": ("decode_num_cpus", {"type": float, "metavar": "N"}),
    "--finish-cpus": ("finish_num_cpus", {"type": float, "metavar": "N"}),
    "--io-batch-size": ("io_batch_size", {"type": int, "metavar": "N"}),
    "--decode-memory-mb": ("decode_memory_mb", {"type": int, "metavar": "MB"}),
    "--finish-memory-mb": ("finish_memory_mb", {"type": int, "metavar": "MB"}),
    "--u2net-actors": ("u2net_actors", {"type": int, "metavar": "N"}),
    "--u2net-cpus": ("u2net_num_cpus", {"type": float, "metavar": "N"}),
    "--u2net-batch-size": ("u2net_batch_size", {"type": int, "metavar": "N"}),
    "--rmbg-actors": ("rmbg_actors", {"type": int, "metavar": "N"}),
    "--rmbg-gpus": ("rmbg_num_gpus", {"type": float, "metavar": "N"}),
    "--rmbg-cpus": ("rmbg_num_cpus", {"type": float, "metavar": "N"}),
    "--rmbg-batch-size": ("rmbg_batch_size", {"type": int, "metavar": "N"}),
    "--retry-failed": ("retry_failed", {"action": "store_const", "const": True}),
    "--manifest-flush-s": ("manifest_flush_s", {"type": float, "metavar": "SECONDS"}),
    "--ray-address": ("ray_address", {"metavar": "ADDRESS"}),
}
_S3_FLAGS: dict[str, tuple[str, str]] = {
    "--s3-endpoint-url": ("s3_endpoint_url", "AWS_ENDPOINT_URL"),
    "--s3-region": ("s3_region", "AWS_REGION"),
    "--s3-access-key-id": ("s3_access_key_id", "AWS_ACCESS_KEY_ID"),
    "--s3-secret-access-key": ("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
}

DESCRIPTION = """\
Remove the background of every image under SRC into DST with Ray Data: the service's
decoding, limits, models (RMBG-2.0 on GPUs when the cluster has them, U2-Net on CPUs, U2-Net
for any image RMBG-2.0 cannot do) and output options. SRC and DST are folders or
s3://bucket/prefix. DST gets each result under its input's relative path with the output
format's extension, manifest.jsonl (one record per input) and summary.json. Running again
skips what is done; bad inputs are recorded, the job goes on (exit status 1).

Runs on a local Ray (started here) or on the cluster of RAY_ADDRESS (ray job submit).
Settings: BG_REMOVAL_BATCH_* variables or the flags below; models and limits: the service's
BG_REMOVAL_* variables; S3: AWS_* variables or the --s3-* flags.

examples:
  bgremove batch photos/ cutouts/ --preset marketplace-white
  bgremove batch s3://my-bucket/photos s3://my-bucket/cutouts --format webp
"""


#: a job flag's help until shown: its `BatchSettings` field's description (`_JobHelpFormatter`)
_SETTING_HELP = "<the BatchSettings field's description>"


class _JobHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a job flag's help from its `BatchSettings` field (one text for the flag, its
    variable and docs/), read only when help is printed: building the parser, as
    ``bgremove --help`` and every command line do, loads no pydantic."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help == _SETTING_HELP:
            from bgremove.batch_settings import BatchSettings

            return BatchSettings.model_fields[action.dest].description
        return super()._get_help_string(action)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``batch`` with its arguments, the API's option flags and the job's."""
    parser = subparsers.add_parser(
        "batch",
        help="a catalogue job on Ray Data: folders or S3 prefixes, resumable",
        description=DESCRIPTION,
        formatter_class=_JobHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="input folder or s3://bucket/prefix")
    parser.add_argument("dst", metavar="DST", help="output folder or s3://bucket/prefix")
    add_option_flags(parser)
    job = parser.add_argument_group("job resources and resume (BG_REMOVAL_BATCH_* variables)")
    for flag, (name, kwargs) in _JOB_FLAGS.items():
        job.add_argument(flag, dest=name, default=None, help=_SETTING_HELP, **kwargs)
    s3 = parser.add_argument_group("S3 (default: the AWS_* variables, then ~/.aws, IAM roles)")
    for flag, (name, env) in _S3_FLAGS.items():
        s3.add_argument(flag, dest=name, default=None, metavar="VALUE", help=f"default: ${env}")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> BatchSettings:
    """`BatchSettings` from the environment, with the flags that were given on top."""
    from pydantic import ValidationError

    from bgremove.batch_settings import BatchSettings
    from models.settings_file import SettingsFileError

    names = [name for name, _ in _JOB_FLAGS.values()] + [n for n, _ in _S3_FLAGS.values()]
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    try:
        return BatchSettings.load(**given)
    except (ValidationError, SettingsFileError) as exc:
        raise UsageError(f"invalid batch settings: {exc}", code="settings") from None


def run(args: argparse.Namespace) -> int:
    """The ``batch`` subcommand: run the job, print its summary, return the exit status."""
    from pydantic import ValidationError

    from bgremove.batch import run_batch
    from models.settings import RemovalSettings
    from models.settings_file import SettingsFileError

    settings = settings_from_args(args)
    try:
        service = RemovalSettings.load()
    except (ValidationError, SettingsFileError) as exc:
        raise SetupError(f"invalid BG_REMOVAL_* settings: {exc}", code="settings") from None
    summary = run_batch(
        args.src,
        args.dst,
        option_fields(args),
        settings,
        service,
        bg_image=args.bg_image,
        out=sys.stdout,
    )
    return summary.exit_status()
