"""``bgremove i INPUT OUTPUT``: one image, a file or ``-`` for stdin/stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bgremove.errors import FileError
from bgremove.flags import add_engine_flags, add_option_flags, format_from_suffix
from bgremove.output import write_atomic

STDIO = "-"

DESCRIPTION = """\
Remove the background of one image. INPUT and OUTPUT are files, or - for standard
input / output. The result's format is --format, else OUTPUT's extension (.png, .webp,
.jpg), else the preset's, else PNG.

examples:
  bgremove i photo.jpg cutout.png
  bgremove i photo.jpg white.jpg --bg-color white
  bgremove i photo.jpg listing.jpg --preset marketplace-white
  cat photo.jpg | bgremove i - - --crop --crop-margin 5% > cutout.png
  bgremove i photo.jpg cutout.png --url http://localhost:8000
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``i``."""
    parser = subparsers.add_parser(
        "i",
        help="remove the background of one image (file or stdin/stdout)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="image file, or - for stdin")
    parser.add_argument("output", metavar="OUTPUT", help="result file, or - for stdout")
    add_option_flags(parser)
    add_engine_flags(parser)
    parser.set_defaults(func=run)


def _read_input(name: str) -> bytes:
    if name == STDIO:
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {name}: {exc.strerror or exc}", code="read_error") from None


def run(args: argparse.Namespace) -> int:
    """Process INPUT into OUTPUT; exit 0, or raise a typed error (see `bgremove.errors`)."""
    from bgremove.engine import prepare  # the pipeline and a client: not for --help

    hint = None if args.output == STDIO else format_from_suffix(args.output)
    prepared = prepare(args, format_hint=hint)
    # read before loading: a missing file should not wait for a model
    data = _read_input(args.input)
    label = "stdin" if args.input == STDIO else Path(args.input).name
    with prepared.open() as engine:
        outcome = engine.remover(data, label)
    if args.output == STDIO:
        sys.stdout.buffer.write(outcome.body)
        sys.stdout.buffer.flush()
    else:
        try:
            write_atomic(Path(args.output), outcome.body)
        except OSError as exc:
            raise FileError(
                f"cannot write {args.output}: {exc.strerror or exc}", code="write_error"
            ) from None
    return 0
