"""ONNX Runtime side of the CPU-time comparison in BENCHMARKS.md ("Inference (models)").

Builds the same graph as ../shared/anchors/infer_anchor.py (2 x LSTM(64), window 60, 14
features, dense head; random weights) with ONE intra-op thread and reports CPU time per call,
which other processes on a shared machine do not inflate the way they inflate wall time.
Run from the repository root: python models/benches/ort_cpu_time.py (needs onnxruntime, onnx, numpy).
"""
import json
import os
import time

anchor = os.environ.get("ANCHOR", "../shared/anchors/infer_anchor.py")
os.environ["THREADS"] = "1"
os.environ["BATCHES"] = "1"
# The anchor's ONNX Runtime half defines the session `sess`, `rng` and the shapes T, F.
exec(compile(open(anchor).read().split("# Keras")[0], anchor, "exec"))
for b, n in [(1, 3000), (64, 100), (1024, 8)]:
    x = rng.standard_normal((b, T, F)).astype(np.float32)
    sess.run(None, {"x": x})
    c0 = time.process_time()
    for _ in range(n):
        sess.run(None, {"x": x})
    cpu = time.process_time() - c0
    print(json.dumps({"runtime": f"onnxruntime {ort.__version__}, 1 thread", "batch": b,
                      "cpu_ms_per_call": round(cpu / n * 1e3, 3),
                      "windows_per_cpu_s": round(b * n / cpu)}))
