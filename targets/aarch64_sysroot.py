"""The aarch64 edge toolchain: cross g++, QEMU and an arm64 Python 3.11 sysroot with TVM.

``setup_aarch64()`` (CLI: ``tvm-mpq setup-aarch64``) is idempotent and cached:

1. the host tools ``aarch64-linux-gnu-g++`` and ``qemu-aarch64`` come from apt
   (``g++-aarch64-linux-gnu``, ``qemu-user``, and ``debian-archive-keyring`` on non-Debian hosts
   such as Ubuntu; installing them needs root);
2. the sysroot is built once under ``~/.cache/tvm-mpq/aarch64-sysroot`` (``$TVM_MPQ_SYSROOT``):
   Debian bookworm arm64 ``python3.11-minimal`` + ``libpython3.11-stdlib`` and the libraries they
   load, fetched by ``apt-get download`` with a private apt configuration (arm64 only, no change to
   the host's apt sources, no root) and unpacked with ``dpkg -x``; then the aarch64 wheels of
   apache-tvm, apache-tvm-ffi and what TVM's RPC server imports, installed with
   ``pip install --target --platform manylinux_2_28_aarch64``; then the standard library is
   byte-compiled on the host (QEMU would otherwise recompile it at every start).
3. ``qemu-aarch64 -L SYSROOT SYSROOT/usr/bin/python3.11 -c "import tvm"`` must succeed before the
   sysroot is stamped as ready (a staging directory is renamed into place: a failed or
   interrupted set-up leaves nothing half-built behind).

The stamp records the recipe below; a changed recipe rebuilds the sysroot.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

from tvm_mpq.errors import MpqError

Log = Callable[[str], None]

CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU_NAMES = ("qemu-aarch64", "qemu-aarch64-static")
TOOLCHAIN_PACKAGES = ("g++-aarch64-linux-gnu", "qemu-user")
SETUP_COMMAND = "tvm-mpq setup-aarch64"

DEBIAN_SUITE = "bookworm"  # its python3.11 matches the host's Python 3.11 (one .pyc magic)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_PACKAGES = (
    "libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libffi8", "libexpat1", "libssl3", "libbz2-1.0",
    "liblzma5", "libzstd1", "libuuid1", "libcrypt1",
    "libpython3.11-minimal", "python3.11-minimal", "libpython3.11-stdlib",
)
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
WHEELS = (
    "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1",
    "numpy", "ml_dtypes", "psutil", "cloudpickle", "tornado",
)
RECIPE = {"version": 1, "suite": DEBIAN_SUITE, "debs": list(DEBIAN_PACKAGES),
          "wheels": list(WHEELS), "platform": WHEEL_PLATFORM}
STAMP = ".tvm-mpq-sysroot.json"
PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "opt/tvm-mpq/site-packages"
_DROP_ENV = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP",
             "VIRTUAL_ENV", "TVM_LIBRARY_PATH", "CONDA_PREFIX")


def _print(msg: str) -> None:
    print(f"[aarch64] {msg}", flush=True)


# ---------------------------------------------------------------------------------- host tools


@dataclass(frozen=True)
class Toolchain:
    """The host tools of the aarch64 path: the cross C++ compiler and the QEMU user emulator."""

    cxx: str
    qemu: str


def find_cross_compiler() -> str | None:
    """Path of ``aarch64-linux-gnu-g++``, or None."""
    return shutil.which(CROSS_CXX)


def find_qemu() -> str | None:
    """Path of ``qemu-aarch64`` (or ``qemu-aarch64-static``), or None."""
    for name in QEMU_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_cross_compiler() -> str:
    """``aarch64-linux-gnu-g++`` or a one-line MpqError naming the set-up command."""
    path = find_cross_compiler()
    if path is None:
        raise MpqError(f"{CROSS_CXX} not found: run `{SETUP_COMMAND}` "
                       f"(or `apt-get install -y {' '.join(TOOLCHAIN_PACKAGES)}`)")
    return path


def require_qemu() -> str:
    """``qemu-aarch64`` or a one-line MpqError naming the set-up command."""
    path = find_qemu()
    if path is None:
        raise MpqError(f"qemu-aarch64 not found (QEMU user emulation runs the aarch64 RPC server): "
                       f"run `{SETUP_COMMAND}` (or `apt-get install -y qemu-user`)")
    return path


def install_toolchain(log: Log = _print) -> Toolchain:
    """The cross g++ and QEMU, installed with apt when missing (needs root; MpqError otherwise)."""
    cxx, qemu = find_cross_compiler(), find_qemu()
    keyring = Path(DEBIAN_KEYRING).exists()
    if cxx and qemu and keyring:
        return Toolchain(cxx, qemu)
    missing = [pkg for pkg, have in zip(TOOLCHAIN_PACKAGES + ("debian-archive-keyring",), (cxx, qemu, keyring))
               if not have]
    if shutil.which("apt-get") is None:
        raise MpqError(f"{' and '.join(missing)} missing and apt-get is unavailable: install an "
                       f"aarch64-linux-gnu g++ cross compiler and qemu-aarch64 with this system's package manager")
    if os.geteuid() != 0:
        raise MpqError(f"{' and '.join(missing)} missing and installing needs root: "
                       f"run `sudo apt-get install -y {' '.join(missing)}`, then `{SETUP_COMMAND}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    start = time.monotonic()
    log(f"apt-get install {' '.join(missing)} ...")
    _run(["apt-get", "update", "-q"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], "apt-get install", env=env)
    log(f"installed {' '.join(missing)} in {time.monotonic() - start:.0f} s")
    if not Path(DEBIAN_KEYRING).exists():
        raise MpqError(f"{DEBIAN_KEYRING} still missing after installing debian-archive-keyring")
    return Toolchain(require_cross_compiler(), require_qemu())


# ------------------------------------------------------------------------------------- sysroot


@dataclass(frozen=True)
class Sysroot:
    """An arm64 root with Python 3.11 and TVM, run on this host under ``qemu-aarch64 -L root``."""

    root: Path

    @property
    def python(self) -> Path:
        """The arm64 interpreter (run it through :meth:`python_argv`)."""
        return self.root / PYTHON

    @property
    def site_packages(self) -> Path:
        """Where the aarch64 wheels are installed (the guest's ``PYTHONPATH``)."""
        return self.root / SITE_PACKAGES

    def python_argv(self, qemu: str | None = None) -> list[str]:
        """``[qemu-aarch64, -L, root, root/usr/bin/python3.11]``: prefix of a guest Python command."""
        return [qemu or require_qemu(), "-L", str(self.root), str(self.python)]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a guest Python: host library/Python paths removed, wheels on the path."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROP_ENV}
        env.update(PYTHONPATH=str(self.site_packages), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
        return env

    def write_python_wrapper(self, directory: Path, qemu: str | None = None) -> Path:
        """A host shell script that runs the guest Python with its arguments.

        TVM's RPC server starts its worker as ``sys.executable -m tvm.exec.popen_worker``; under
        QEMU ``sys.executable`` is the arm64 binary, which the host kernel cannot execute, so the
        server is started with ``sys.executable`` pointing at this wrapper instead.
        """
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "python3.11-aarch64"
        argv = " ".join(_sh_quote(a) for a in self.python_argv(qemu))
        path.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        path.chmod(0o755)
        return path

    def stamp(self) -> dict | None:
        """The stamp written by a completed set-up, or None."""
        try:
            return json.loads((self.root / STAMP).read_text())
        except (OSError, ValueError):
            return None

    def is_ready(self) -> bool:
        """Whether a set-up with the current recipe completed here."""
        stamp = self.stamp()
        return bool(stamp) and stamp.get("recipe") == RECIPE and self.python.exists()


def sysroot_dir() -> Path:
    """The sysroot's cache directory: ``$TVM_MPQ_SYSROOT`` or ``~/.cache/tvm-mpq/aarch64-sysroot``."""
    env = os.environ.get("TVM_MPQ_SYSROOT")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tvm-mpq" / "aarch64-sysroot"


def load_sysroot(path: str | Path | None = None) -> Sysroot:
    """The ready sysroot at ``path`` (default :func:`sysroot_dir`), or an MpqError naming the set-up."""
    sysroot = Sysroot(Path(path) if path else sysroot_dir())
    if not sysroot.is_ready():
        raise MpqError(f"no aarch64 sysroot at {sysroot.root}: run `{SETUP_COMMAND}`")
    return sysroot


def setup_aarch64(path: str | Path | None = None, log: Log = _print, force: bool = False) -> tuple[Toolchain, Sysroot]:
    """Everything the aarch64 path needs, set up once: :func:`install_toolchain` + :func:`setup_sysroot`."""
    toolchain = install_toolchain(log)
    return toolchain, setup_sysroot(path, log=log, force=force, qemu=toolchain.qemu)


def setup_sysroot(path: str | Path | None = None, log: Log = _print, force: bool = False,
                  qemu: str | None = None) -> Sysroot:
    """Build the arm64 Python + TVM sysroot at ``path`` unless a ready one is there (cached)."""
    sysroot = Sysroot(Path(path) if path else sysroot_dir())
    if sysroot.is_ready() and not force:
        return sysroot
    qemu = qemu or require_qemu()
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise MpqError(f"{tool} not found: the arm64 sysroot is built from Debian packages (needs apt-get and dpkg)")
    if not Path(DEBIAN_KEYRING).exists():
        raise MpqError(f"{DEBIAN_KEYRING} missing: install the debian-archive-keyring package")
    sysroot.root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(sysroot.root.parent / f".{sysroot.root.name}.lock"):
        if sysroot.is_ready() and not force:  # another process finished it while we waited
            return sysroot
        start = time.monotonic()
        log(f"building the arm64 Python 3.11 + TVM sysroot in {sysroot.root} (once; cached)")
        staging = sysroot.root.parent / f".{sysroot.root.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            versions = _build(Sysroot(staging), qemu, log)
            stamp = {"recipe": RECIPE, "installed": versions, "seconds": round(time.monotonic() - start, 1)}
            (staging / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
            if sysroot.root.exists():
                old = sysroot.root.parent / f".{sysroot.root.name}.old-{os.getpid()}"
                sysroot.root.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(sysroot.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"sysroot ready in {time.monotonic() - start:.0f} s: {sysroot.root}")
    return sysroot


def _build(sysroot: Sysroot, qemu: str, log: Log) -> dict[str, str]:
    root = sysroot.root
    apt_dir = root / ".apt"
    t = time.monotonic()
    debs = _download_debs(apt_dir, log)
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    shutil.rmtree(apt_dir)
    log(f"unpacked {len(debs)} Debian arm64 packages in {time.monotonic() - t:.0f} s")

    t = time.monotonic()
    log(f"pip install --platform {WHEEL_PLATFORM}: {' '.join(WHEELS)} ...")
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
          "--target", str(sysroot.site_packages), "--platform", WHEEL_PLATFORM, "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *WHEELS], "pip install (aarch64 wheels)")
    log(f"installed the aarch64 wheels in {time.monotonic() - t:.0f} s")

    t = time.monotonic()
    stdlib = root / "usr" / "lib" / "python3.11"
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", r"[/\\](test|tests|lib2to3)[/\\]",
                    str(stdlib)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    log(f"byte-compiled the standard library in {time.monotonic() - t:.0f} s")

    t = time.monotonic()
    log("checking `import tvm` under QEMU ...")
    probe = ("import importlib.metadata as m, tvm, numpy, tornado, psutil, cloudpickle, json; "
             "print(json.dumps({p: m.version(p) for p in ('apache-tvm', 'apache-tvm-ffi', 'numpy', "
             "'ml_dtypes', 'psutil', 'cloudpickle', 'tornado')}))")
    out = _run([*sysroot.python_argv(qemu), "-c", probe], "import tvm under qemu-aarch64", env=sysroot.env())
    versions = json.loads(out.strip().splitlines()[-1])
    log(f"apache-tvm {versions['apache-tvm']} imports under QEMU ({time.monotonic() - t:.0f} s)")
    return versions


def _download_debs(apt_dir: Path, log: Log) -> list[Path]:
    """``apt-get download`` of the arm64 packages with a private apt state (no root, host untouched)."""
    for sub in ("state/lists/partial", "cache/archives/partial", "parts", "prefs", "debs"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").touch()
    mirror = os.environ.get("TVM_MPQ_DEBIAN_MIRROR", DEBIAN_MIRROR)
    opts = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    lines = [f"deb {opts} {mirror} {DEBIAN_SUITE} main"]
    if mirror == DEBIAN_MIRROR:
        lines.append(f"deb {opts} {DEBIAN_SECURITY_MIRROR} {DEBIAN_SUITE}-security main")
    (apt_dir / "sources.list").write_text("\n".join(lines) + "\n")
    config = [
        f"Dir::State={apt_dir / 'state'}", f"Dir::State::status={apt_dir / 'status'}",
        f"Dir::Cache={apt_dir / 'cache'}", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
        f"Dir::Etc::SourceParts={apt_dir / 'parts'}", f"Dir::Etc::PreferencesParts={apt_dir / 'prefs'}",
        "APT::Architecture=arm64", "APT::Architectures::=arm64", "Debug::NoLocking=1",
    ]
    if os.geteuid() == 0:
        config.append("APT::Sandbox::User=root")  # the private dirs are root's
    apt = ["apt-get", "-q"] + [arg for c in config for arg in ("-o", c)]
    log(f"apt-get download (arm64, Debian {DEBIAN_SUITE}): {len(DEBIAN_PACKAGES)} packages ...")
    _run([*apt, "update"], "apt-get update (private arm64 index)")
    _run([*apt, "download", *DEBIAN_PACKAGES], "apt-get download (arm64 packages)", cwd=apt_dir / "debs")
    return sorted((apt_dir / "debs").glob("*.deb"))


def _run(argv: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a set-up step; a failure is an MpqError with the step's last output line."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    except OSError as err:
        raise MpqError(f"{what} failed: {err}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
        raise MpqError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return proc.stdout


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sh_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"
