"""Every exception that reaches the CLI as one line: which stage failed, what, where, what to do.

Commands run their steps inside :func:`stage` (``import``, ``calibrate``, ``analyze``,
``compile``, ``export``, ``write``, ...). An unexpected exception there (from TVM, a frontend,
onnx, numpy, the OS) becomes a :class:`StageFailure` naming the stage and, when the message
mentions one, the model layer; :class:`~tvm_mpq.errors.MpqError` (input the user can fix) passes
through unchanged. :func:`error_line` is what ``tvm-mpq`` prints before it exits 2; with
``--debug`` it prints the full traceback instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from tvm_mpq.errors import MpqError

STAGE_HINTS = {
    "startup": "check the installation (TVM and the tvm-mpq package import)",
    "import": "check that the model is a complete ONNX / torch.export (.pt2) export and its --input-shape",
    "config": "check the --config file (write one with `tvm-mpq analyze --rate R`)",
    "calibrate": "check that --calib holds inputs the model accepts",
    "analyze": "try another --method or --observer, or check the model's weights",
    "compile": "try --no-kernels, or a lower --rate, to narrow it down",
    "export": "check the target's toolchain and free disk space",
}
"""What to try when a stage fails unexpectedly (stages not listed get only the --debug hint)."""
OS_HINT = "check the path, its permissions and free disk space"
"""What to try when the operating system refused (an OSError), in any stage."""

DEBUG_HINT = "rerun with --debug for the full traceback"
MAX_DETAIL_CHARS = 300
"""Longest exception message kept in the line (TVM messages can print whole functions)."""


class StageFailure(Exception):
    """An unexpected exception (``__cause__``) raised in a named stage of a command."""

    def __init__(self, stage: str, cause: BaseException, layer: str | None = None) -> None:
        super().__init__(stage, cause, layer)
        self.stage = stage
        self.cause = cause
        self.layer = layer

    def __str__(self) -> str:
        where = f" (layer {self.layer})" if self.layer else ""
        return f"{self.stage}: {describe(self.cause)}{where}"


@contextmanager
def stage(name: str, layers: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run a block as stage ``name``: unexpected exceptions leave it as :class:`StageFailure`.

    ``layers`` maps names an error message may mention (weight parameters, layer names) to the
    layer the user knows; the first one found in the message is named in the failure.
    """
    try:
        yield
    except (MpqError, StageFailure):
        raise
    except Exception as err:
        raise StageFailure(name, err, mentioned_layer(str(err), layers or {})) from err


def describe(err: BaseException) -> str:
    """``Type: first meaningful line of the message`` (shortened), e.g. ``ValueError: Mismatched ...``."""
    detail = message_line(err)
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def message_line(err: BaseException) -> str:
    """The line of an exception's message that says what went wrong.

    Skips an embedded ``Traceback`` (the last line is the error then), joins a heading that ends
    in ``:`` with the line after it (``Compilation error: ld: cannot open output file ...``) and
    shortens TVM's printed ``ir.Op(...)`` to the op's name.
    """
    text = str(err)
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        text = err.args[0]  # str(KeyError) is the repr of its key
        if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]  # TVM's FFI hands a Python KeyError back with its repr as the message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        lines = lines[-1:]
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    line = re.sub(r'ir\.Op\(.*?name="([^"]+)".*?support_level=\d+\)', r"\1", line)
    return line if len(line) <= MAX_DETAIL_CHARS else line[:MAX_DETAIL_CHARS - 3] + "..."


def mentioned_layer(message: str, layers: Mapping[str, str]) -> str | None:
    """The layer of the name in ``layers`` that ``message`` mentions first (whole names only;
    of two names found at the same place, the longer)."""
    first: tuple[int, int, str] | None = None
    for name, layer in layers.items():
        match = re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w/-])", message)
        if match and (first is None or (match.start(), -len(name)) < first[:2]):
            first = (match.start(), -len(name), layer)
    return first[2] if first else None


def error_line(err: BaseException) -> str:
    """The one line ``tvm-mpq`` prints for ``err`` (no newline inside)."""
    if isinstance(err, MpqError):
        line = f"tvm-mpq: error: {err}"
    elif isinstance(err, StageFailure):
        hint = OS_HINT if isinstance(err.cause, OSError) else STAGE_HINTS.get(err.stage)
        line = f"tvm-mpq: error: {err}; {hint + '; ' if hint else ''}{DEBUG_HINT}"
    else:
        line = f"tvm-mpq: error: {describe(err)}; {DEBUG_HINT}"
    return re.sub(r"\s*\n\s*", " ", line).strip()
