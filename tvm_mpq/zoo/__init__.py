"""Model zoo: models that ship offline, each registered by its own module."""

from tvm_mpq.zoo.registry import Feed, ZooModel, get, names, register

# Each import registers its models.
from tvm_mpq.zoo import efficientnet_lite0 as _efficientnet_lite0  # noqa: E402,F401
from tvm_mpq.zoo import ppocr as _ppocr  # noqa: E402,F401
from tvm_mpq.zoo import mtcnn_rnet as _mtcnn_rnet  # noqa: E402,F401
from tvm_mpq.zoo import architectures as _architectures  # noqa: E402,F401
from tvm_mpq.zoo import minilm as _minilm  # noqa: E402,F401
from tvm_mpq.zoo.load import load_model  # noqa: E402

__all__ = ["Feed", "ZooModel", "get", "load_model", "names", "register"]
