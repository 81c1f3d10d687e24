"""Vector-friendly float32 ``exp``, ``tanh`` and ``log`` as expressions, for loop bodies and TE computes.

``topi.fast_exp`` (Cephes' ``expf``: range reduction ``exp(x) = 2^n exp(f)``, a degree-7
polynomial) and ``topi.fast_tanh`` (Eigen's rational approximation) are arithmetic, ``floor`` and
a bit reinterpretation, which LLVM vectorizes; ``tirx.exp`` / ``tirx.tanh`` become one libm call
per element on x86 and aarch64 (``relay_passes.fast_exp`` says more). TVM exposes them only as
``te.compute`` over a whole tensor (C++ ``topi/elemwise.h``), and a loop kernel built with the IR
builder (:mod:`tvm_mpq.kernels.recurrence`) needs an expression of one element: these are the same
formulas with the same constants, written for one ``PrimExpr`` (a test checks them against
``topi.fast_exp`` / ``topi.fast_tanh`` bit for bit). TVM has no vector form of ``log``:
:func:`fast_log` is Cephes' ``logf`` (the exponent and mantissa read from the bits, a degree-9
polynomial), the way MLAS and Eigen compute it.
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
_LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
             -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
"""Cephes ``logf``'s polynomial in the reduced mantissa, highest power first."""
_FLT_MIN = 1.17549435e-38


def f32(value: float) -> tirx.PrimExpr:
    """A float32 constant."""
    return tirx.const(value, F32)


def fast_exp(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``topi.fast_exp`` of one float32 element."""
    x = tirx.max(tirx.min(value, f32(88.3762626647950)), f32(-88.3762626647949))
    n = tirx.floor(x * f32(1.44269504088896341) + f32(0.5))
    f = x - n * f32(0.6931471805599453)
    poly = f32(_EXP_POLY[0])
    for coefficient in _EXP_POLY[1:]:
        poly = poly * f + f32(coefficient)
    y = poly * f * f + f + f32(1.0)
    two_n = tirx.reinterpret(F32, tirx.Cast("int32", n + f32(127.0)) << 23)
    return tirx.max(two_n * y, value)


def fast_tanh(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``topi.fast_tanh`` of one float32 element."""
    x = tirx.max(tirx.min(value, f32(9.0)), f32(-9.0))
    x2 = x * x
    p = f32(_TANH_ALPHA[0])
    for coefficient in _TANH_ALPHA[1:]:
        p = x2 * p + f32(coefficient)
    p = x * p
    q = f32(_TANH_BETA[0])
    for coefficient in _TANH_BETA[1:]:
        q = x2 * q + f32(coefficient)
    return p / q


def fast_log(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """Natural logarithm of one float32 element (Cephes' ``logf``: relative error about 1e-7):
    ``x = m 2^e`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` from the bits, ``log(m)`` a polynomial in
    ``m - 1``, ``e ln 2`` added in two parts. Denormals are scaled by ``2^23`` first; ``log(0) =
    -inf``, ``log(inf) = inf``, a negative or NaN input gives NaN, as libm's ``logf``."""
    tiny = value < f32(_FLT_MIN)
    scaled = tirx.Select(tiny, value * f32(8388608.0), value)
    bits = tirx.reinterpret("int32", scaled)
    exponent = tirx.Cast(F32, (bits >> 23) - 126) - tirx.Select(tiny, f32(23.0), f32(0.0))
    mantissa = tirx.reinterpret(F32, (bits & tirx.const(0x007FFFFF, "int32")) | tirx.const(0x3F000000, "int32"))
    low = mantissa < f32(0.707106781186547524)
    e = exponent - tirx.Select(low, f32(1.0), f32(0.0))
    x = tirx.Select(low, mantissa + mantissa, mantissa) - f32(1.0)
    z = x * x
    poly = f32(_LOG_POLY[0])
    for coefficient in _LOG_POLY[1:]:
        poly = poly * x + f32(coefficient)
    y = poly * x * z + e * f32(-2.12194440e-4) - z * f32(0.5)
    result = x + y + e * f32(0.693359375)
    # Special inputs told apart by their bits (LLVM's fast-math flags fold ``x != x`` to false);
    # the scaling keeps 0, infinities and NaN as they are.
    magnitude = bits & tirx.const(0x7FFFFFFF, "int32")
    inf = f32(float("inf"))
    result = tirx.Select(magnitude == tirx.const(0x7F800000, "int32"), inf, result)
    result = tirx.Select(magnitude == tirx.const(0, "int32"), -inf, result)
    nan = f32(float("nan"))
    result = tirx.Select(value < f32(0.0), nan, result)
    return tirx.Select(magnitude > tirx.const(0x7F800000, "int32"), nan, result)


def fast_sigmoid(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``1 / (1 + fast_exp(-x))``: the sigmoid ``relay_passes.fast_exp`` builds."""
    return f32(1.0) / (f32(1.0) + fast_exp(-value))


__all__ = ["F32", "f32", "fast_exp", "fast_log", "fast_sigmoid", "fast_tanh"]
