"""Export a precision config as a model other runtimes run: ONNX QDQ (onnxruntime, TensorRT)."""

from tvm_mpq.export.onnx_qdq import QdqExport, build_qdq_onnx, export_qdq_onnx

__all__ = ["QdqExport", "build_qdq_onnx", "export_qdq_onnx"]
