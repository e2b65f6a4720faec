"""The 4×4×4 tap sum of cubic B-spline slicing, written as one LLVM intrinsic with explicit AVX vectors.

numba builds with LLVM's SLP vectoriser off, so the 64 complex taps of a cubic stencil compile to 128
scalar FMAs per pixel. Here each of the 16 rows of 4 complex taps (8 contiguous float64) is two
<4 x double> loads and two vector FMAs with the row weight wa·wb; the weights along the row are
applied once at the end. Two accumulator pairs (even and odd rows) shorten the dependency chains.
Summation order is fixed by the code, so results do not depend on the thread count.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F64 = ir.DoubleType()
_V4 = ir.VectorType(_F64, 4)


@intrinsic
def tap_sum(typingctx, g, i0, i1, k, wa, wb, wc):
    """(re, im) of Σ_abc wa[a]·wb[b]·wc[c]·G[i0 + a, i1 + b, k + c], a, b, c = 0..3.

    G is a complex128 (n, n, n) grid passed as its float64 view `g` (n, n, 2n) whose last axis is
    contiguous; `wa`, `wb`, `wc` are 4-tuples of float64. No bounds checks: the caller guarantees
    0 ≤ i0, i1, k and i0 + 3, i1 + 3, k + 3 < n.
    """
    if not (isinstance(g, types.Array) and g.ndim == 3 and g.dtype == types.float64):
        return None
    for w in (wa, wb, wc):
        if not (isinstance(w, types.UniTuple) and w.count == 4 and w.dtype == types.float64):
            return None
    sig = types.UniTuple(types.float64, 2)(g, i0, i1, k, wa, wb, wc)

    def codegen(context, builder, signature, args):
        garr = context.make_array(signature.args[0])(context, builder, args[0])
        ia, ib, kc = (context.cast(builder, args[m], signature.args[m], types.int64) for m in (1, 2, 3))
        s0, s1, s2 = cgutils.unpack_tuple(builder, garr.strides, 3)
        base = builder.ptrtoint(garr.data, _I64)
        off = builder.add(builder.add(builder.mul(ia, s0), builder.mul(ib, s1)), builder.mul(kc, builder.add(s2, s2)))
        wa_, wb_, wc_ = ([builder.extract_value(args[m], j) for j in range(4)] for m in (4, 5, 6))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V4, [_V4, _V4, _V4]), "llvm.fma.v4f64")

        def vector(xs):
            v = ir.Constant(_V4, ir.Undefined)
            for j, x in enumerate(xs):
                v = builder.insert_element(v, x, ir.Constant(_I32, j))
            return v

        zero = ir.Constant(_V4, [ir.Constant(_F64, 0.0)] * 4)
        acc = [zero, zero, zero, zero]  # (taps 0–1, taps 2–3) of even rows, then of odd rows
        for a in range(4):
            for b in range(4):
                w = builder.fmul(wa_[a], wb_[b])
                wv = vector([w, w, w, w])
                row = builder.add(
                    builder.add(base, off),
                    builder.add(builder.mul(ir.Constant(_I64, a), s0), builder.mul(ir.Constant(_I64, b), s1)),
                )
                lo = builder.load(builder.inttoptr(row, _V4.as_pointer()), align=8)
                hi = builder.load(builder.inttoptr(builder.add(row, ir.Constant(_I64, 32)), _V4.as_pointer()), align=8)
                j = 2 * (b % 2)
                acc[j] = builder.call(fma, [wv, lo, acc[j]])
                acc[j + 1] = builder.call(fma, [wv, hi, acc[j + 1]])
        lo = builder.fadd(acc[0], acc[2])  # (re0, im0, re1, im1)
        hi = builder.fadd(acc[1], acc[3])  # (re2, im2, re3, im3)
        r = builder.fmul(lo, vector([wc_[0], wc_[0], wc_[1], wc_[1]]))
        r = builder.call(fma, [hi, vector([wc_[2], wc_[2], wc_[3], wc_[3]]), r])
        e = [builder.extract_element(r, ir.Constant(_I32, j)) for j in range(4)]
        return context.make_tuple(builder, signature.return_type, [builder.fadd(e[0], e[2]), builder.fadd(e[1], e[3])])

    return sig, codegen
