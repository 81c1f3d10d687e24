"""``tvm-mpq setup-aarch64``: install the cross g++ and QEMU, build the arm64 Python sysroot (cached)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``setup-aarch64`` subcommand."""
    p = sub.add_parser("setup-aarch64", help="set up the aarch64 cross toolchain and QEMU sysroot (idempotent, cached)")
    p.add_argument("--sysroot", type=Path, help="sysroot directory (default $TVM_MPQ_SYSROOT or ~/.cache/tvm-mpq/aarch64-sysroot)")
    p.add_argument("--force", action="store_true", help="rebuild the sysroot even if a ready one exists")
    p.set_defaults(func=cmd_setup_aarch64)


def cmd_setup_aarch64(args: argparse.Namespace) -> int:
    """Run :func:`targets.aarch64_sysroot.setup_aarch64` and print what is ready."""
    from targets.aarch64_sysroot import setup_aarch64

    toolchain, sysroot = setup_aarch64(args.sysroot, force=args.force)
    stamp = sysroot.stamp() or {}
    versions = ", ".join(f"{k} {v}" for k, v in stamp.get("installed", {}).items())
    print(f"cross compiler: {toolchain.cxx}\nqemu: {toolchain.qemu}\nsysroot: {sysroot.root} ({versions})")
    return 0
