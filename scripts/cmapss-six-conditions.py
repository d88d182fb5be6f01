#!/usr/bin/env python3
"""FD001 rewritten at six operating conditions (subset name FD9R6), to check per-regime scaling
without FD002/FD004: every row of FD001's train and test files gets one of FD002's six (altitude,
Mach, TRA) settings at random, with FD002-like noise on the settings, and each sensor becomes
gain[c] * x + shift[c] for its condition c (gains 0.7-1.3, shifts up to 5 times the sensor's FD001
range). The true RULs are FD001's.

    python3 scripts/cmapss-six-conditions.py ../shared/data/cmapss /tmp/synth
    maintcast train --format cmapss --data /tmp/synth --subset FD9R6 ...
"""
import os
import random
import shutil
import sys

CONDITIONS = [(0, 0, 100), (10, 0.25, 100), (20, 0.7, 100), (25, 0.62, 60), (35, 0.84, 100),
              (42, 0.84, 100)]


def load(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def main(src, out):
    train = load(os.path.join(src, "train_FD001.txt"))
    test = load(os.path.join(src, "test_FD001.txt"))
    ncol = len(train[0])  # unit, cycle, 3 settings, 21 sensors
    lo = [min(float(r[c]) for r in train) for c in range(ncol)]
    hi = [max(float(r[c]) for r in train) for c in range(ncol)]
    rng = random.Random(7)
    gain = [[rng.uniform(0.7, 1.3) for _ in range(ncol)] for _ in CONDITIONS]
    shift = [[rng.uniform(-5, 5) * max(hi[c] - lo[c], 1e-3) for c in range(ncol)]
             for _ in CONDITIONS]

    def rewrite(rows, seed):
        r2 = random.Random(seed)
        lines = []
        for r in rows:
            k = r2.randrange(len(CONDITIONS))
            alt, mach, tra = CONDITIONS[k]
            v = [r[0], r[1], "%.4f" % (alt + r2.uniform(-0.005, 0.005)),
                 "%.4f" % (mach + r2.uniform(-0.0005, 0.0005)), "%.1f" % tra]
            v += ["%.4f" % (float(r[j]) * gain[k][j] + shift[k][j]) for j in range(5, ncol)]
            lines.append(" ".join(v))
        return "\n".join(lines) + "\n"

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "train_FD9R6.txt"), "w") as f:
        f.write(rewrite(train, 1))
    with open(os.path.join(out, "test_FD9R6.txt"), "w") as f:
        f.write(rewrite(test, 2))
    shutil.copy(os.path.join(src, "RUL_FD001.txt"), os.path.join(out, "RUL_FD9R6.txt"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
