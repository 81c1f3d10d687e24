"""Compilation targets (x86 / aarch64 / CUDA), toolchains and RPC helpers.

The foundation builds for the host CPU only (``tvm_mpq.runtime.host_target``); the target
registry with cross toolchains and RPC lands with the cross-target issue.
"""
