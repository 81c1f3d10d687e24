"""``tvm-mpq`` command line (DESIGN "CLI contract").

One module per subcommand; each has ``register(subparsers)`` which adds its parser and sets
``func``. Add a subcommand by writing a module and listing it in :data:`SUBCOMMANDS`.
Errors the user can fix raise :class:`~tvm_mpq.errors.MpqError`: printed as one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tvm_mpq.errors import MpqError

SUBCOMMANDS = ("analyze", "bops", "compile", "eval", "export-onnx", "rpc-server", "setup-aarch64", "sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-mpq", description="Mixed-precision quantization for Apache TVM.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"tvm_mpq.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MpqError as err:
        print(f"tvm-mpq: error: {err}", file=sys.stderr)
        return 2
