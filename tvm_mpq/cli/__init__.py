"""``tvm-mpq`` command line (docs/design.md).

One module per subcommand; each has ``register(subparsers)`` which adds its parser and sets
``func``. Add a subcommand by writing a module and listing it in :data:`SUBCOMMANDS`.

No traceback reaches the user: errors the user can fix raise :class:`~tvm_mpq.errors.MpqError`,
any other exception leaves its stage as a :class:`~tvm_mpq.cli.failures.StageFailure`, a usage
error is one line too; each is printed as one line ``tvm-mpq: error: ...`` and the exit code is 2
(130 on Ctrl-C). ``--debug`` prints the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import traceback
from typing import NoReturn

from tvm_mpq.cli.failures import error_line, stage
from tvm_mpq.errors import MpqError

SUBCOMMANDS = ("analyze", "bops", "compile", "eval", "export-onnx", "rpc-server", "setup-aarch64", "sweep")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are an MpqError (one line) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tvm-mpq").strip()
        raise MpqError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tvm-mpq", description="Mixed-precision quantization for Apache TVM.")
    debug_help = "print the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"tvm_mpq.cli.{name.replace('-', '_')}").register(sub)
    for subparser in sub.choices.values():  # also accepted after the subcommand
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


class _Interrupts:
    """Records a Ctrl-C before Python's handler raises KeyboardInterrupt: one that arrives while
    TVM's C++ code runs comes back wrapped in another exception (a RuntimeError from the FFI),
    and must still end the command as interrupted (130), not as an error."""

    def __init__(self) -> None:
        self.seen = False

    def __enter__(self) -> "_Interrupts":
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
        self.seen = True
        signal.default_int_handler(signum, frame)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is not threading.main_thread():  # (signal handlers: main thread only)
        return _main(argv, None)
    with _Interrupts() as interrupts:
        return _main(argv, interrupts)


def _main(argv: list[str], interrupts: _Interrupts | None) -> int:
    debug = "--debug" in argv  # known before the parser exists (building it imports TVM)
    try:
        with stage("startup"):
            parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        with stage(args.command):
            return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("tvm-mpq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            traceback.print_exception(err)
        elif interrupts is not None and interrupts.seen:
            print("tvm-mpq: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        else:
            print(error_line(err), file=sys.stderr)
        return EXIT_ERROR
