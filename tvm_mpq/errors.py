"""User-facing errors: one line that names the problem, never a deep TVM traceback."""

import tvm_ffi


@tvm_ffi.register_error
class MpqError(Exception):
    """An error caused by the user's input (file, option, config, model); printed as one line.

    Registered with TVM's FFI so that an MpqError raised inside a pass (a ``tvm.transform``
    Python pass run by TVM's C++ pass manager) reaches the caller as an MpqError."""


def last_line(err: BaseException) -> str:
    """The last non-empty line of ``err``'s message (a TVM error's own line, without its C++
    context), or the exception's type name when the message is empty."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
