"""Reference values for the interval metrics and conformal calibration in models/src/metrics.rs and
the window smoothing in models/src/smoothing.rs, computed independently in NumPy (float64) from
the definitions:

- coverage: share of truths with lo <= truth <= hi; mean width: mean(hi - lo).
- by third: truths in [0, cap/3), [cap/3, 2cap/3), [2cap/3, inf); the point forecast's RMSE there.
- split conformal (Vovk; Lei et al. 2018): residuals r = truth - pred sorted ascending, n of them;
  upper offset = r[ceil((n+1)*0.9)], lower offset = r[floor((n+1)*0.1)] (1-based, clipped to 1..n).
- Mondrian by forecast bin: sort by forecast, bin b holds positions [n*b/B, n*(b+1)/B) (ties at an
  edge moved into the lower bin), its upper edge is the forecast at its end; bins need n >= 50*B.
- EMA within a window: s_0 = x_0, s_t = a*x_t + (1-a)*s_{t-1}.
Data are drawn from a fixed seed and rounded to 1/8 so that float32 holds them exactly.
Run: python3 gen_intervals.py > intervals.json
"""
import json
import math
import numpy as np

rng = np.random.default_rng(14)
CAP = 125.0


def q8(v):
    return np.round(np.asarray(v, dtype=np.float64) * 8) / 8


def offsets(r, lq=0.1, uq=0.9):
    r = np.sort(r)
    n = len(r)
    hi = min(max(math.ceil((n + 1) * uq), 1), n)
    lo = min(max(math.floor((n + 1) * lq), 1), n)
    return r[lo - 1], r[hi - 1]


def binned(pred, truth, nbins):
    order = np.argsort(pred, kind="stable")
    p, r = pred[order], (truth - pred)[order]
    n = len(p)
    nbins = max(min(nbins, n // 50), 1)
    lo_all, hi_all = offsets(truth - pred)
    bins = []
    if nbins > 1:
        start = 0
        for b in range(nbins):
            end = n * (b + 1) // nbins
            while b + 1 < nbins and end < n and p[end] == p[end - 1]:
                end += 1
            if end <= start:
                continue
            lo, hi = offsets(r[start:end])
            bins.append({"upto": float(p[end]) if end < n else None,
                         "lower_offset": float(lo), "upper_offset": float(hi), "n": end - start})
            start = end
            if end == n:
                break
    return float(lo_all), float(hi_all), bins


def bounds(pred, lo_all, hi_all, bins):
    lo, hi = np.empty_like(pred), np.empty_like(pred)
    for i, p in enumerate(pred):
        lo_o, hi_o = lo_all, hi_all
        for b in bins:
            if b["upto"] is None or p < b["upto"]:
                lo_o, hi_o = b["lower_offset"], b["upper_offset"]
                break
        lo[i], hi[i] = max(p + lo_o, 0.0), max(p + hi_o, 0.0)
    return lo, hi


def stats(lo, hi, t):
    inside = (lo <= t) & (t <= hi)
    return {"n": int(len(t)),
            "coverage": float(inside.mean()) if len(t) else None,
            "mean_width": float((hi - lo).mean()) if len(t) else None}


# calibration set: heteroscedastic residuals, wider far from failure
n_cal = 400
cal_truth = q8(np.minimum(rng.uniform(0, 160, n_cal), CAP))
cal_pred = q8(np.maximum(cal_truth + rng.normal(0, 1, n_cal) * (3 + 0.1 * cal_truth), 0))
lo_all, hi_all, bins = binned(cal_pred, cal_truth, 3)

# test set: the calibrated interval applied to new forecasts
n_test = 90
test_truth = q8(np.minimum(rng.uniform(0, 150, n_test), CAP))
test_pred = q8(np.maximum(test_truth + rng.normal(0, 1, n_test) * (3 + 0.1 * test_truth), 0))
lo, hi = bounds(test_pred, lo_all, hi_all, bins)
thirds = []
for k in range(3):
    a, b = CAP * k / 3, CAP * (k + 1) / 3
    m = (test_truth >= a) & ((test_truth < b) | (k == 2))
    rmse = float(np.sqrt(((test_pred[m] - test_truth[m]) ** 2).mean()))
    thirds.append({"from": a, "to": b, "rmse": rmse, **stats(lo[m], hi[m], test_truth[m])})

# EMA
window, nf, alpha = 5, 2, 0.3
x = q8(rng.normal(0, 1, (3, window, nf)))
s = x.copy()
for t in range(1, window):
    s[:, t] = alpha * x[:, t] + (1 - alpha) * s[:, t - 1]

print(json.dumps({
    "cal_pred": cal_pred.tolist(), "cal_truth": cal_truth.tolist(),
    "lower_offset": lo_all, "upper_offset": hi_all, "bins": bins,
    "test_pred": test_pred.tolist(), "test_truth": test_truth.tolist(),
    "lo": lo.tolist(), "hi": hi.tolist(), "cap": CAP,
    "overall": stats(lo, hi, test_truth), "thirds": thirds,
    "ema": {"window": window, "nf": nf, "alpha": alpha,
            "x": x.ravel().tolist(), "y": s.ravel().tolist()},
}))
