"""The polynomial for 2^f, |f| <= 1/2, in models/src/lstm_avx512.rs (`EXP2_POLY`).

Run with numpy installed (`pip install numpy`):
    python3 models/tests/reference/gen_exp2_poly.py

For degrees 5 to 7 it fits the polynomial that is minimax in relative error (least squares
reweighted by Lawson's rule on Chebyshev nodes), rounds the coefficients to float32, evaluates
them by Horner's rule with one rounding per step (as an FMA does) and reports the largest relative
error against float64's exp2 in ulps. The kernel takes degree 6 (1.9e-9 minimax, about 1.3 ulp in
float32); `vector_exp2_is_within_two_ulp` in the kernel's tests checks the vector code against it.
"""
import numpy as np
def fit(deg, iters=200):
    f = np.cos(np.linspace(0, np.pi, 4001)) * 0.5
    y = np.exp2(f)
    w = np.ones_like(f)
    A = np.vander(f, deg + 1, increasing=True)
    for _ in range(iters):
        W = np.sqrt(w) / y
        c, *_ = np.linalg.lstsq(A * W[:, None], y * W, rcond=None)
        e = np.abs(A @ c - y) / y
        w = w * e; w /= w.sum()
    return c, e.max()
for deg in (5, 6, 7):
    c, e = fit(deg)
    c32 = c.astype(np.float32)
    f = np.linspace(-0.5, 0.5, 200001).astype(np.float32)
    p = np.float32(c32[-1])
    for k in range(deg - 1, -1, -1):
        p = (p.astype(np.float64) * f + c32[k]).astype(np.float32)   # fma: one rounding
    rel = np.abs(p.astype(np.float64) - np.exp2(f.astype(np.float64))) / np.exp2(f.astype(np.float64))
    print(deg, "minimax", f"{e:.2e}", "f32 horner max rel", f"{rel.max():.2e}", "=", f"{rel.max()/2**-24:.2f}", "x 2^-24 (an ulp below 1, half an ulp above)")
    print("   ", [float(x) for x in c32])
