#!/usr/bin/env bash
# CUDA 13 compiler, headers and the libraries candle links (cuBLAS, cuRAND, NVRTC), from NVIDIA's
# PyPI wheels, for building the `cuda` feature on a machine without a GPU or a system CUDA.
#
#   deploy/cuda-toolkit.sh install   # once; cached under $MAINTCAST_CUDA_PREFIX
#   eval "$(deploy/cuda-toolkit.sh env)"
#   cargo clippy -p maintcast-models --features cuda
#
# The driver's libcuda.so is not on PyPI: `env` points the linker at the stub the runtime wheel
# does not carry either, so a link stub is generated from the driver API's symbol list (a binary
# linked against it runs only where a real driver is installed, which is what a GPU host has).
# cudarc 0.19.10 knows CUDA up to 13.4, hence CUDARC_CUDA_VERSION=13040 with the 13.5 compiler.
set -euo pipefail
VERSION=13.5.37
PREFIX=${MAINTCAST_CUDA_PREFIX:-$HOME/.cache/maintcast/cuda-$VERSION}
ROOT=$PREFIX/nvidia/cu13
WHEELS=(
  "nvidia-cuda-nvcc==$VERSION" "nvidia-nvvm==$VERSION" "nvidia-cuda-runtime==$VERSION"
  "nvidia-cuda-crt==$VERSION" "nvidia-cuda-nvrtc==$VERSION" "nvidia-cuda-cccl==13.3.5.0.6"
  "nvidia-cublas==13.10.0.20" "nvidia-curand==10.4.5.25"
)

install() {
  [ -f "$PREFIX/.complete" ] && return 0
  echo "[cuda-toolkit] installing CUDA $VERSION wheels into $PREFIX" >&2
  rm -rf "$PREFIX"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$PREFIX" "${WHEELS[@]}"
  # Unversioned names for the linker (the wheels ship only libfoo.so.N).
  for lib in "$ROOT"/lib/lib*.so.*; do
    base=${lib%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
  done
  stub
  touch "$PREFIX/.complete"
}

# libcuda.so link stub: every cu* symbol that cudarc may reference, as an empty function. cudarc
# loads the driver with dlopen at run time, so the stub only has to satisfy the linker.
stub() {
  mkdir -p "$ROOT/lib/stubs"
  local src="$ROOT/lib/stubs/cuda_stub.c"
  grep -ho 'cu[A-Z][A-Za-z0-9_]*' "$ROOT"/include/cuda.h | sort -u | sed 's/.*/void &(void) {}/' > "$src"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/stubs/libcuda.so" "$src"
}

case "${1:-}" in
  install) install ;;
  env)
    echo "export CUDA_ROOT=$ROOT CUDA_PATH=$ROOT CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13040"
    echo "export PATH=$ROOT/bin:\$PATH"
    echo "export LIBRARY_PATH=$ROOT/lib:$ROOT/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
    ;;
  *) echo "usage: $0 install|env" >&2; exit 2 ;;
esac
