"""Output files of a command: checked before the work, staged, and moved into place together.

A command checks its output paths first (:func:`check_output_file`, :func:`check_output_dir`),
so a bad ``-o`` fails in a second, not after minutes of analysis or compilation. It then writes
every file through :class:`StagedOutputs` (:func:`staged_outputs`): into a hidden staging
directory next to each final path (same filesystem), renamed into place only when the whole
command succeeded. A failed or interrupted command leaves no output file behind, not even a
half-written one; a directory it created for its outputs is removed again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tvm_mpq.errors import MpqError

STAGING_PREFIX = ".tvm-mpq-partial-"
"""Name prefix of the hidden staging directories (one is left only if the process is killed)."""


def check_output_file(path: Path, option: str = "-o") -> None:
    """MpqError unless a file can be written at ``path`` (its missing directories created)."""
    existing = check_output_dir(path.parent, option, shown=path)
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise MpqError(f"{option} {path}: the file name is longer than {name_max} bytes")
    if path.is_dir():
        raise MpqError(f"{option} {path} is a directory; name the file to write in it")


def check_output_dir(directory: Path, option: str, shown: Path | None = None) -> Path:
    """MpqError unless files can be written in ``directory`` (created if missing): the nearest
    existing ancestor, which is returned, must be a directory this process can write in (probed
    with a temporary file)."""
    shown = directory if shown is None else shown
    existing = directory.absolute()
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MpqError(f"{option} {shown}: '{existing}' is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise MpqError(f"{option} {shown}: cannot write in '{existing}' ({err.strerror or err})") from None
    return existing


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long for the filesystem: it cannot exist
        return False


class StagedOutputs:
    """Where a command writes its outputs until it has succeeded.

    :meth:`path` gives the staged location of a final path (same file name, in a hidden staging
    directory next to it); files written there move to their final directory on :meth:`commit`
    and are deleted on :meth:`discard`. Writers may add siblings next to a staged path (e.g.
    ``.with_suffix(".config.json")``); they move along with it.
    """

    def __init__(self) -> None:
        self._staging: dict[Path, Path] = {}  # final directory -> its staging directory
        self._created: list[Path] = []  # directories made for the outputs, parents first

    def path(self, final: Path | str) -> Path:
        """Where to write the file that ends up at ``final``."""
        final = Path(final)
        directory = final.parent.absolute()
        if directory not in self._staging:
            self._make_dirs(directory)
            self._staging[directory] = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        return self._staging[directory] / final.name

    def final(self, staged: Path | str) -> Path:
        """The final path of a file written at ``staged`` (a path not staged here is returned as is)."""
        staged = Path(staged)
        for directory, staging in self._staging.items():
            if staged.parent == staging:
                return directory / staged.name
        return staged

    def commit(self) -> None:
        """Move every staged file into its final directory (replacing older files of that name)."""
        for directory, staging in self._staging.items():
            for item in sorted(staging.iterdir()):
                os.replace(item, directory / item.name)
            staging.rmdir()
        self._staging.clear()
        self._created.clear()

    def discard(self) -> None:
        """Delete every staged file, and the directories made for them when they are empty."""
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        for directory in reversed(self._created):
            try:
                directory.rmdir()
            except OSError:
                pass
        self._staging.clear()
        self._created.clear()

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for made in reversed(missing):
            made.mkdir()
            self._created.append(made)


@contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """:class:`StagedOutputs` committed when the block succeeds, discarded when it raises
    (also on Ctrl-C)."""
    outputs = StagedOutputs()
    try:
        yield outputs
        outputs.commit()
    except BaseException:
        outputs.discard()
        raise


def write_atomically(path: Path, data: str | bytes) -> Path:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file beside it, renamed into
    place: a cache file another process reads at the same moment (two tvm-mpq commands, or the
    test suite's two workers) is the old one or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
