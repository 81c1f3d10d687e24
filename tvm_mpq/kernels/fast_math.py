"""TVM's vector-friendly float32 ``exp`` and ``tanh`` as expressions, for loop bodies.

``topi.fast_exp`` (Cephes' ``expf``: range reduction ``exp(x) = 2^n exp(f)``, a degree-7
polynomial) and ``topi.fast_tanh`` (Eigen's rational approximation) are arithmetic, ``floor`` and
a bit reinterpretation, which LLVM vectorizes; ``tirx.exp`` / ``tirx.tanh`` become one libm call
per element on x86 and aarch64 (``relay_passes.fast_exp`` says more). TVM exposes them only as
``te.compute`` over a whole tensor (C++ ``topi/elemwise.h``), and a loop kernel built with the IR
builder (:mod:`tvm_mpq.kernels.recurrence`) needs an expression of one element: these are the same
formulas with the same constants, written for one ``PrimExpr`` (a test checks them against
``topi.fast_exp`` / ``topi.fast_tanh`` bit for bit).
"""

from __future__ import annotations

from tvm import tirx

F32 = "float32"
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_TANH_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
               1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
"""Numerator (odd) coefficients, highest power first (alpha_13 .. alpha_1)."""
_TANH_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
"""Denominator (even) coefficients, highest power first (beta_6 .. beta_0)."""


def _c(value: float) -> tirx.PrimExpr:
    return tirx.const(value, F32)


def fast_exp(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``topi.fast_exp`` of one float32 element."""
    x = tirx.max(tirx.min(value, _c(88.3762626647950)), _c(-88.3762626647949))
    n = tirx.floor(x * _c(1.44269504088896341) + _c(0.5))
    f = x - n * _c(0.6931471805599453)
    poly = _c(_EXP_POLY[0])
    for coefficient in _EXP_POLY[1:]:
        poly = poly * f + _c(coefficient)
    y = poly * f * f + f + _c(1.0)
    two_n = tirx.reinterpret(F32, tirx.Cast("int32", n + _c(127.0)) << 23)
    return tirx.max(two_n * y, value)


def fast_tanh(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``topi.fast_tanh`` of one float32 element."""
    x = tirx.max(tirx.min(value, _c(9.0)), _c(-9.0))
    x2 = x * x
    p = _c(_TANH_ALPHA[0])
    for coefficient in _TANH_ALPHA[1:]:
        p = x2 * p + _c(coefficient)
    p = x * p
    q = _c(_TANH_BETA[0])
    for coefficient in _TANH_BETA[1:]:
        q = x2 * q + _c(coefficient)
    return p / q


def fast_sigmoid(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``1 / (1 + fast_exp(-x))``: the sigmoid ``relay_passes.fast_exp`` builds."""
    return _c(1.0) / (_c(1.0) + fast_exp(-value))


__all__ = ["fast_exp", "fast_sigmoid", "fast_tanh"]
