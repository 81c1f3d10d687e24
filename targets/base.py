"""A deployment target: its TVM target, how its library is exported and where it runs.

Every target is a small :class:`DeployTarget` registered by name (``x86``, ``aarch64``,
``aarch64-dotprod``, ``cuda``); :func:`get_target` builds one. A target knows

* ``tvm_target``: the ``tvm.target.Target`` (TVM 0.27 takes JSON dicts),
* ``fcompile()``: the compiler ``export_library`` uses (a cross compiler for aarch64),
* ``device_kind``: the RPC device the library runs on (``cpu`` or ``cuda``),
* ``elf_machine``: what the exported library's ELF header says (checked before an upload),
* ``check_toolchain()``: a one-line :class:`MpqError` naming the fix when a tool is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from collections.abc import Callable, Iterator

from tvm_mpq.errors import MpqError
from tvm_mpq.registry import Registry
from tvm_mpq.types import SOURCE_TO_FOLDED

from targets.elf import arch_machine, machine_name, read_elf_machine

if TYPE_CHECKING:
    import tvm

    from tvm_mpq.compiler import CompiledModel
    from tvm_mpq.compiler.build import TuningOptions
    from tvm_mpq.config.precision_config import PrecisionConfig
    from tvm_mpq.frontends.model_graph import ModelGraph

_TARGETS: Registry[DeployTarget] = Registry("--target")
register_target = _TARGETS.register
target_names = _TARGETS.names


def get_target(name: str, **options: Any) -> DeployTarget:
    """A new target by registered name (``x86``, ``aarch64``, ``aarch64-dotprod``, ``cuda``)."""
    return _TARGETS.make(name, **options)


class DeployTarget(ABC):
    """Base class of the registered targets (see the module docstring)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    device_kind: ClassVar[str] = "cpu"
    """The RPC device type the library runs on: ``cpu`` or ``cuda``."""
    elf_machine: ClassVar[int]
    """``e_machine`` of the exported shared library (the host CPU's for CUDA)."""
    server_arch: ClassVar[str]
    """The CPU architecture an RPC server for this target runs on (``x86_64``, ``aarch64``)."""

    @abstractmethod
    def target_dict(self) -> dict[str, Any]:
        """The target as the JSON dict ``tvm.target.Target`` takes."""

    @property
    def tvm_target(self) -> tvm.target.Target:
        """The ``tvm.target.Target`` to compile for."""
        import tvm

        return tvm.target.Target(self.target_dict())

    def fcompile(self) -> Callable | None:
        """The ``fcompile`` for ``export_library`` (None: TVM's default host compiler)."""
        return None

    def check_toolchain(self) -> None:
        """Raise :class:`MpqError` naming the fix when a tool this target needs is missing."""

    @contextmanager
    def build_context(self) -> Iterator[None]:
        """Everything the compiler needs around ``tvm.compile`` for this target."""
        yield

    def compile(self, graph: ModelGraph, config: PrecisionConfig | None = None, stage: str = SOURCE_TO_FOLDED,
                tuning: TuningOptions | None = None) -> CompiledModel:
        """Compile ``graph`` under ``config`` for this target: MpqError naming the fix when a tool
        is missing, then ``compile_model`` (``stage``, ``tuning``) in :meth:`build_context` (the
        one way the CLI, the API and the sweep compile for a target)."""
        from tvm_mpq.compiler import compile_model

        self.check_toolchain()
        with self.build_context():
            return compile_model(graph, config, self.tvm_target, stage=stage, tuning=tuning)

    def export(self, compiled: CompiledModel, path: str | Path) -> Path:
        """Write ``compiled`` as a shared library with this target's compiler; returns the path.

        The library's ELF machine is checked afterwards (an x86 library for aarch64 is an error
        here, not a crash on the device).
        """
        self.check_toolchain()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.matches(compiled.target):
            raise MpqError(f"model was compiled for {describe_target(compiled.target)}, "
                           f"not for target {self.name}")
        compiled.export_library(str(path), fcompile=self.fcompile())
        self.check_library(path)
        return path

    def matches(self, target: tvm.target.Target) -> bool:
        """Whether a module compiled for ``target`` can be exported as this target."""
        mine = self.tvm_target
        if target.kind.name != mine.kind.name:
            return False
        if target.kind.name == "llvm":
            return arch_machine(str(target.attrs.get("mtriple", ""))) == arch_machine(str(mine.attrs.get("mtriple", "")))
        return True

    def check_library(self, path: str | Path) -> None:
        """MpqError unless the library at ``path`` is an ELF for this target's machine."""
        machine = read_elf_machine(path)
        if machine != self.elf_machine:
            raise MpqError(f"{path} is built for {machine_name(machine)}, but target {self.name} "
                           f"needs {machine_name(self.elf_machine)}")

    def remote_device(self, session: Any, index: int = 0) -> Any:
        """The device this target runs on in an RPC ``session`` (``session.cpu()`` / ``.cuda()``)."""
        return session.cuda(index) if self.device_kind == "cuda" else session.cpu(index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target_dict()})"


def describe_target(target: tvm.target.Target) -> str:
    """``llvm aarch64-linux-gnu`` / ``cuda sm_90``: a short name for messages."""
    attrs = target.attrs
    detail = attrs.get("mtriple") if target.kind.name == "llvm" else attrs.get("arch")
    return f"{target.kind.name} {detail}" if detail else str(target.kind.name)
