"""From parsed flags to a ready `Remover`, in two steps: check everything, then load.

Every subcommand that removes backgrounds (``i``, ``p``, batch jobs) goes through here, so the
rules are the same everywhere: `prepare` validates the options (presets are the service's:
built-in plus ``BG_REMOVAL_PRESETS_FILE``) and flags without loading anything, so a typo costs
nothing and a folder with nothing left to do never loads a model; `Prepared.open` then loads
the model or opens the client. ``--url`` excludes the in-process flags instead of silently
ignoring them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bgremove.errors import SetupError, UsageError
from bgremove.flags import API_KEY_ENV, ResolvedOptions, option_fields, resolve_options
from bgremove.remover import Remover
from bgremove.settings import cli_settings
from imaging.errors import InvalidOptionError
from imaging.presets import load_presets, preset_fields
from models.settings import RemovalSettings


@dataclass(frozen=True)
class Engine:
    """A ready remover, and where it runs (for messages)."""

    remover: Remover
    where: str


@dataclass(frozen=True)
class Prepared:
    """Checked flags: the options to apply and how to build the remover."""

    resolved: ResolvedOptions
    settings: RemovalSettings
    instances: int
    background: bytes | None
    url: str | None
    api_key: str | None
    retries: int
    timeout_s: float

    @property
    def remote(self) -> bool:
        """Whether the work goes to a service (parallel requests cost this machine little)."""
        return self.url is not None

    @contextmanager
    def open(self) -> Iterator[Engine]:
        """The remover: the model loaded here (`SetupError` if it cannot), or a client."""
        if self.url is not None:
            from bgremove.remote import RemoteRemover  # httpx: only with --url

            with RemoteRemover(
                url=self.url,
                fields=self.resolved.fields,
                api_key=self.api_key,
                background=self.background,
                retries=self.retries,
                timeout_s=self.timeout_s,
            ) as client:
                yield Engine(client, f"the service at {self.url}")
            return
        # validated by `prepare`: only a preset known to a remote service stays unchecked
        assert self.resolved.options is not None
        from bgremove.local import LocalRemover, load_masker, warm_up_edges  # not with --url

        warm_up_edges(self.resolved.options)  # numba compiles while the model loads
        masker = load_masker(self.settings, self.instances)
        remover = LocalRemover(
            masker, self.resolved.options, self.settings.limits(), self.background
        )
        yield Engine(remover, f"{masker.model}, in-process")


def _read_background(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--bg-image {path}: {exc.strerror or exc}", code="bad_bg_image") from None


def prepare(args: argparse.Namespace, *, format_hint: str | None = None) -> Prepared:
    """Check the flags of `bgremove.flags` (``format_hint``, from an output file name,
    applies when ``--format`` is not given); `UsageError` or `SetupError` if they are wrong."""
    remote = args.url is not None
    if remote and (args.model is not None or args.threads is not None or args.instances):
        raise UsageError(
            "--model, --threads and --instances choose the in-process model; with --url the "
            "service routes to its own models (each result's model is reported)"
        )
    instances = args.instances or 1
    settings = cli_settings(args.model, args.threads, instances)
    try:
        presets = preset_fields(load_presets(settings.presets_file))
    except (OSError, ValueError) as exc:
        raise SetupError(f"presets cannot load: {exc}", code="bad_presets") from None
    fields = option_fields(args)
    if format_hint is not None and "format" not in fields:
        fields["format"] = format_hint
    background = _read_background(args.bg_image)
    try:
        resolved = resolve_options(fields, presets, bg_image=background is not None, remote=remote)
    except InvalidOptionError as exc:
        raise UsageError(exc.message, code=exc.code) from None
    return Prepared(
        resolved=resolved,
        settings=settings,
        instances=instances,
        background=background,
        url=args.url,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        retries=args.retries,
        timeout_s=args.timeout,
    )
