"""The import graph runs one way: from the top floor (cli, benchmarks) down to the ground.

Every module of ``tvm_mpq``, ``relay_passes``, ``targets`` and ``benchmarks/benchkit`` is read with
``ast`` (nothing is imported), each import (at module level or inside a function, ``TYPE_CHECKING``
ones included) is resolved to the module it names, and the test fails on

* a cycle between modules,
* a cycle between units (the sub-packages and modules of :data:`FLOORS`),
* an import from a floor to a higher one.

Modules on one floor may import each other as long as no cycle forms. The floors are those of
docs/design.md ("Floors of the import graph"); a new sub-package is added to one of them here.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = {"tvm_mpq": ROOT / "tvm_mpq", "relay_passes": ROOT / "relay_passes", "targets": ROOT / "targets",
            "benchkit": ROOT / "benchmarks" / "benchkit"}

# Ground first. A unit is a module or package name; a module belongs to the longest unit that
# prefixes it.
FLOORS: list[tuple[str, list[str]]] = [
    ("ground", ["tvm_mpq.errors", "tvm_mpq.types", "tvm_mpq.registry", "tvm_mpq.output_files",
                "tvm_mpq.vm_call_timer"]),
    ("numerics and platform", ["tvm_mpq.quantization", "tvm_mpq.metrics", "tvm_mpq.kernels", "tvm_mpq.data",
                               "targets.elf", "targets.aarch64_sysroot", "targets.cuda_driver_stub", "targets.rpc"]),
    ("import", ["tvm_mpq.frontends"]),
    ("layer table", ["tvm_mpq.graph"]),
    ("decisions and execution", ["tvm_mpq.allocation", "tvm_mpq.config", "tvm_mpq.runtime"]),
    ("graph passes", ["relay_passes"]),
    ("target build passes", ["tvm_mpq.target_build"]),
    ("models", ["tvm_mpq.zoo", "tvm_mpq.corpus"]),
    ("calibration", ["tvm_mpq.calibration"]),
    ("analysis and compilation", ["tvm_mpq.sensitivity", "tvm_mpq.compiler", "tvm_mpq.ptq"]),
    ("export and targets", ["tvm_mpq.export", "targets"]),
    ("public entry point and evaluation", ["tvm_mpq.api", "tvm_mpq.evaluation"]),
    ("sweep", ["tvm_mpq.sweep"]),
    ("command line", ["tvm_mpq.cli", "tvm_mpq"]),
    ("benchmarks", ["benchkit"]),
]


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a module's attribute) denotes, if any."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts)
        parts.pop()
    return None


def imports_of(module: str) -> dict[str, int]:
    """``{imported module: line}`` of every import statement in ``module``."""
    path = modules()[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            # ``from a import b``: the submodule a.b when there is one, else module a
            names = [f"{base}.{alias.name}" if resolve(f"{base}.{alias.name}") == f"{base}.{alias.name}" else base
                     for alias in node.names]
        for name in names:
            target = resolve(name)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


@lru_cache(maxsize=None)
def graph() -> dict[str, dict[str, int]]:
    return {module: imports_of(module) for module in modules()}


def unit_of(module: str) -> str:
    units = [unit for _, floor in FLOORS for unit in floor if module == unit or module.startswith(unit + ".")]
    if not units:
        raise AssertionError(f"module {module} is on no floor: add it (or its package) to FLOORS")
    return max(units, key=len)


def floor_of(unit: str) -> int:
    return next(i for i, (_, floor) in enumerate(FLOORS) if unit in floor)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_on_a_floor():
    for module in modules():
        unit_of(module)
    for _, floor in FLOORS:
        for unit in floor:
            assert unit in modules(), f"FLOORS names {unit}, which is no module"


def test_no_module_cycle():
    found = cycles({module: set(targets) for module, targets in graph().items()})
    assert not found, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_unit_cycle():
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        for target in targets:
            if unit_of(target) != unit_of(module):
                edges.setdefault(unit_of(module), set()).add(unit_of(target))
    found = cycles(edges)
    witnesses = []
    for component in found:
        for module, targets in sorted(graph().items()):
            for target, line in targets.items():
                if unit_of(module) in component and unit_of(target) in component and unit_of(module) != unit_of(target):
                    witnesses.append(f"  {modules()[module].relative_to(ROOT)}:{line} imports {target}")
    assert not found, ("import cycles between packages: " + "; ".join(" <-> ".join(c) for c in found)
                       + "\n" + "\n".join(witnesses))


def test_no_import_upwards():
    wrong = []
    for module, targets in sorted(graph().items()):
        here = floor_of(unit_of(module))
        for target, line in sorted(targets.items()):
            there = floor_of(unit_of(target))
            if there > here:
                wrong.append(f"{modules()[module].relative_to(ROOT)}:{line} ({FLOORS[here][0]}) imports {target} "
                             f"({FLOORS[there][0]})")
    assert not wrong, "imports from a lower floor to a higher one:\n" + "\n".join(wrong)


def test_the_graph_is_read():
    """The walk sees both module-level and function-level imports (a guard against a silent parser)."""
    edges = graph()
    assert "tvm_mpq.errors" in edges["tvm_mpq.registry"]
    assert any(target.startswith("relay_passes") for target in edges["tvm_mpq.compiler.pipeline"])
    assert sum(len(targets) for targets in edges.values()) > 200
