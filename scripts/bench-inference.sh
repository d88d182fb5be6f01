#!/usr/bin/env bash
# Side-by-side CPU inference benchmark: maintcast's kernels against ONNX Runtime on the default
# model shape (2 x LSTM(64), window 60, 14 features), alternated in one invocation.
#
#   scripts/bench-inference.sh            # 5 rounds, batches 1,64,1024, 2 threads
#   ROUNDS=7 BATCHES=1,64 THREADS=2 MIN_S=2 KERNELS="avx512 avx512-bf16" scripts/bench-inference.sh
#
# Each round runs ONNX Runtime (the ORT half of ../shared/anchors/infer_anchor.py, unchanged) and
# then each of our kernels, each for MIN_S seconds per batch; the order alternates between rounds
# so that a slow phase of a shared machine does not fall on one side only. Prints every
# measurement, then per batch the median windows/s of each runtime and its ratio to ORT's, in
# wall-clock time and in CPU time of the process (which other processes on the machine inflate
# far less).
# The Python environment (onnxruntime 1.32.0, onnx, numpy from PyPI) is set up once under
# ~/.cache/maintcast/ort-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BATCHES=${BATCHES:-1,64,1024}
THREADS=${THREADS:-2}
MIN_S=${MIN_S:-2}
KERNELS=${KERNELS:-avx512 avx512-bf16 portable}
ANCHOR=${ANCHOR:-../shared/anchors/infer_anchor.py}
VENV=${ORT_VENV:-$HOME/.cache/maintcast/ort-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then
  echo "[bench] setting up $VENV (onnxruntime 1.32.0, onnx, numpy)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet onnxruntime==1.32.0 onnx numpy
fi
# NO_BUILD=1 reuses an infer_bench already built (e.g. while another cargo command holds the lock).
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release --quiet -p maintcast-models --example infer_bench
ours="$CARGO_TARGET_DIR/release/examples/infer_bench"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_ort() {
  THREADS=$THREADS BATCHES=$BATCHES MIN_S=$MIN_S ANCHOR=$ANCHOR "$VENV/bin/python" - <<'PY'
import json, os, time
anchor = os.environ["ANCHOR"]
# The anchor's ORT half up to its measuring loop: imports, weights, graph and the session with
# THREADS intra-op threads. The loop below times it like the anchor does (two warm-up runs, then
# runs for MIN_S seconds) and also records the process's CPU time.
src = open(anchor).read().split("# Keras")[0]
setup = src[: src.index("for b in batches:")]
exec(compile(setup, anchor, "exec"))
min_s = float(os.environ["MIN_S"])
for b in batches:
    x = rng.standard_normal((b, T, F)).astype(np.float32)
    sess.run(None, {"x": x}); sess.run(None, {"x": x})
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < min_s:
        sess.run(None, {"x": x}); n += 1
    s = (time.perf_counter() - t0) / n
    cpu = (time.process_time() - c0) / n
    print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "batch": b,
                      "latency_ms": round(s * 1e3, 3), "windows_per_s": round(b / s),
                      "cpu_ms_per_call": round(cpu * 1e3, 3), "windows_per_cpu_s": round(b / cpu)}))
PY
}
run_ours() { RAYON_NUM_THREADS=$THREADS MIN_S=$MIN_S "$ours" "$1" "$BATCHES"; }

echo "[bench] $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds, $THREADS threads, ${MIN_S}s per figure" >&2
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    run_ort | tee -a "$log"
    for k in $KERNELS; do run_ours "$k" | tee -a "$log"; done
  else
    for k in $KERNELS; do run_ours "$k" | tee -a "$log"; done
    run_ort | tee -a "$log"
  fi
  echo "[bench] round $r done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

"$VENV/bin/python" - "$log" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
batches = sorted({r["batch"] for r in rows})
ort = next(rt for rt in runtimes if rt.startswith("onnxruntime"))
def med(rt, b, key):
    return statistics.median(r[key] for r in rows if r["runtime"] == rt and r["batch"] == b)
rounds = len([r for r in rows if r["runtime"] == ort]) // len(batches)
print()
print(f"medians of {rounds} alternated rounds; 'vs ORT' = our median / ORT's median")
print("| batch | runtime | latency ms | windows/s | vs ORT | CPU ms per call | windows per CPU-s | vs ORT |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for b in batches:
    base, base_cpu = med(ort, b, "windows_per_s"), med(ort, b, "windows_per_cpu_s")
    for rt in runtimes:
        w, c = med(rt, b, "windows_per_s"), med(rt, b, "windows_per_cpu_s")
        print(f"| {b} | {rt} | {med(rt, b, 'latency_ms'):.3f} | {w:,.0f} | {w / base:.2f}x "
              f"| {med(rt, b, 'cpu_ms_per_call'):.3f} | {c:,.0f} | {c / base_cpu:.2f}x |")
PY
