"""Read the machine an ELF shared library is built for (the check before an RPC upload)."""

from __future__ import annotations

import struct
from pathlib import Path

from tvm_mpq.errors import MpqError

EM_X86_64 = 62
EM_AARCH64 = 183
EM_CUDA = 190
MACHINE_NAMES = {EM_X86_64: "x86-64", EM_AARCH64: "AArch64", EM_CUDA: "CUDA", 3: "x86", 40: "ARM", 243: "RISC-V"}
"""``e_machine`` values of the ELF header and their usual names."""

ARCH_MACHINES = {"x86_64": EM_X86_64, "amd64": EM_X86_64, "aarch64": EM_AARCH64, "arm64": EM_AARCH64}
"""LLVM triple / ``uname -m`` architecture names -> ``e_machine``."""


def machine_name(machine: int) -> str:
    """A readable name for an ``e_machine`` value (``"machine 42"`` when unknown)."""
    return MACHINE_NAMES.get(machine, f"machine {machine}")


def read_elf_machine(path: str | Path) -> int:
    """The ``e_machine`` field of the ELF file at ``path`` (MpqError if it is not an ELF file)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError as err:
        raise MpqError(f"cannot read library {path}: {err.strerror}") from None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise MpqError(f"{path} is not an ELF shared library")
    order = "<" if header[5] == 1 else ">"
    return struct.unpack_from(order + "H", header, 18)[0]


def embedded_elf_machines(data: bytes) -> list[int]:
    """``e_machine`` of every ELF image embedded in ``data`` after offset 0 (e.g. CUDA cubins)."""
    found = []
    start = data.find(b"\x7fELF", 1)
    while start >= 0:
        if start + 20 <= len(data) and data[start + 4] in (1, 2) and data[start + 5] in (1, 2):
            order = "<" if data[start + 5] == 1 else ">"
            found.append(struct.unpack_from(order + "H", data, start + 18)[0])
        start = data.find(b"\x7fELF", start + 1)
    return found


def arch_machine(arch: str) -> int | None:
    """``e_machine`` for an architecture name or LLVM triple (``aarch64-unknown-linux-gnu``)."""
    return ARCH_MACHINES.get(arch.split("-", 1)[0].lower())
