"""The ``bgremove`` command: rembg's ``i`` and ``p`` on the service's pipeline, and more.

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``: it registers
the subcommand with its arguments and sets ``func``, a function of the parsed arguments that
returns the exit status (or raises a `bgremove.errors.CLIError`, whose type sets it). `main`
only builds the parser from `SUBCOMMANDS` and maps errors to messages and statuses:

- 0: everything was done (or was up to date);
- 1: some input failed (the others were processed);
- 2: nothing could run: bad arguments or options, a model that cannot load, a service that
  refuses the key or cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bgremove import batch_command, fetch, folder, quantize, single
from bgremove.errors import CLIError

AddParser = Callable[[argparse._SubParsersAction], None]

#: every subcommand, in the order ``--help`` lists them
SUBCOMMANDS: list[AddParser] = [
    single.add_parser,
    folder.add_parser,
    fetch.add_parser,
    quantize.add_parser,
    batch_command.add_parser,
]

DESCRIPTION = """\
Remove image backgrounds from the shell: the service's models and output options, run
in-process (no Ray, no server) or sent to a running service with --url.

examples:
  bgremove fetch                                  # fetch the u2net weights once
  bgremove quantize --images photos/              # INT8 u2net for this CPU, if in tolerance
  bgremove i photo.jpg cutout.png                 # one image
  bgremove p photos/ cutouts/ -r                  # a folder, resumable
  bgremove p photos/ listings/ --preset marketplace-white
  bgremove p photos/ cutouts/ --url http://localhost:8000
  bgremove batch s3://bucket/photos s3://bucket/cutouts --preset marketplace-white

Settings of the in-process model are the service's BG_REMOVAL_* variables (e.g.
BG_REMOVAL_U2NET_MODEL=u2netp, U2NET_HOME). `bgremove COMMAND --help` for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand of `SUBCOMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="bgremove",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log model loading and retries (stderr)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bgremove`` with ``argv`` (default: the process's); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"bgremove {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status


if __name__ == "__main__":
    sys.exit(main())
