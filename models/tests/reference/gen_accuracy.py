"""Reference values for models/src/accuracy.rs (realized accuracy), computed independently in
NumPy (float64, vectorised, no shared code) from the definition in docs/LIVE_EVALUATION.md:

  truth   = min((event - t) / 1 day, cap of the forecast's model version)
  error   = forecast - truth,  abs error = |error|
  covered = p10 <= truth <= p90
  band    = [0, 7), [7, 30), [30, inf) days of truth
Forecasts at or before the previous event (`since`) or after the event are not scored. Sums and
means are reported per (version, role, band).

Run: python3 gen_accuracy.py > accuracy.json
"""
import json
import numpy as np

DAY = 86_400_000
BANDS = [("0-7d", 0.0, 7.0), ("7-30d", 7.0, 30.0), ("30d+", 30.0, np.inf)]


def case(name, rng, event, since, caps, n):
    versions = sorted(caps)
    lo = (since if since is not None else event - 80 * DAY) - 3 * DAY
    ts = rng.integers(lo, event + 3 * DAY, size=n, dtype=np.int64)
    # Exact boundaries: truth of 0, 7 and 30 days, a forecast at `since` and one a ms after.
    edges = [event, event - 7 * DAY, event - 30 * DAY, event - 60 * DAY]
    if since is not None:
        edges += [since, since + 1]
    ts = np.concatenate([ts, np.array(edges, dtype=np.int64)])
    m = len(ts)
    version = rng.choice(versions, size=m)
    role = rng.choice(["champion", "shadow"], size=m)
    days = np.round(rng.uniform(0.0, 35.0, size=m), 3)
    p10 = np.round(days - rng.uniform(0.0, 8.0, size=m), 3)
    p90 = np.round(days + rng.uniform(0.0, 8.0, size=m), 3)
    cap = np.array([caps[v] for v in version], dtype=np.float64)
    truth = np.minimum((event - ts).astype(np.float64) / DAY, cap)
    # A few intervals that touch the truth exactly: bounds are inclusive.
    p10[:3] = truth[:3]
    p90[3:6] = truth[3:6]
    scored = ts <= event
    if since is not None:
        scored &= ts > since
    err = days - truth
    cov = (p10 <= truth) & (truth <= p90)
    expected = []
    for v in versions:
        for r in ["champion", "shadow"]:
            for b, blo, bhi in BANDS:
                sel = scored & (version == v) & (role == r) & (truth >= blo) & (truth < bhi)
                k = int(sel.sum())
                if k == 0:
                    continue
                expected.append({
                    "version": v, "role": r, "band": b, "n": k,
                    "error_sum": float(err[sel].sum()),
                    "abs_error_sum": float(np.abs(err[sel]).sum()),
                    "covered": int(cov[sel].sum()),
                    "mae": float(np.abs(err[sel]).mean()),
                    "bias": float(err[sel].mean()),
                    "coverage": float(cov[sel].mean()),
                })
    forecasts = [
        {"ts_ms": int(ts[i]), "version": str(version[i]), "role": str(role[i]),
         "days": float(days[i]), "p10": float(p10[i]), "p90": float(p90[i])}
        for i in range(m)
    ]
    return {"name": name, "event_ms": int(event), "since_ms": None if since is None else int(since),
            "caps": caps, "forecasts": forecasts, "expected": expected}


def main():
    rng = np.random.default_rng(20261130)
    e = 1_700_000_000_000
    cases = [
        case("two_versions_two_caps", rng, e, e - 70 * DAY, {"v0001": 30.0, "v0002": 25.0}, 300),
        case("first_event_no_since", rng, e + 123_456, None, {"v0003": 45.0}, 200),
        case("short_life", rng, e, e - 5 * DAY, {"v0001": 30.0, "v0002": 30.0}, 60),
    ]
    print(json.dumps({"cases": cases}, indent=1))


if __name__ == "__main__":
    main()
