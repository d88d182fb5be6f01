"""Reference values for services/planner/src/risk.rs: the standard normal CDF and its inverse from
Python's standard library (statistics.NormalDist), independent of the libm erfc the planner uses.

    python3 services/planner/reference/normal_cdf.py
"""
from statistics import NormalDist

n = NormalDist()
for z in [0.0, 1.0, -1.959963985, 1.2815515655446005, -3.0]:
    print(f"cdf({z!r}) = {n.cdf(z)!r}")
print(f"inv_cdf(0.9) = {n.inv_cdf(0.9)!r}")
