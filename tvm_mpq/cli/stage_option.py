"""``--stage``: the IR stage by name (``source``, ``source->folded``, ``folded``) or by the paper's
letter (``A``, ``A->C``, ``C``); the parsed value is the letter, as configs and reports record it."""

from __future__ import annotations

import argparse

from tvm_mpq.errors import MpqError
from tvm_mpq.types import SOURCE, SOURCE_TO_FOLDED, STAGE_NAMES, parse_stage


def stage_type(text: str) -> str:
    try:
        return parse_stage(text)
    except MpqError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_stage_option(p: argparse.ArgumentParser, help: str, option: str = "--stage",
                     default: str = SOURCE_TO_FOLDED, measured_only: bool = False) -> None:
    """``option`` taking a stage name or letter; ``measured_only``: the two graphs (``source`` /
    ``folded``), not the ``source->folded`` pair."""
    names = [n for n, letter in STAGE_NAMES.items() if not (measured_only and letter == SOURCE_TO_FOLDED)]
    letters = [STAGE_NAMES[n] for n in names]
    p.add_argument(option, default=default, type=stage_type, choices=letters, metavar="{" + ",".join(names) + "}",
                   help=f"{help} (the letters {', '.join(letters)} work too)")


__all__ = ["SOURCE", "add_stage_option", "stage_type"]  # SOURCE: the --baseline-stage default
