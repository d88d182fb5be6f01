#!/usr/bin/env bash
# Sets up what examples/python/producer.py needs: a virtual environment with the pinned packages
# of requirements.txt (from PyPI) and the Protobuf classes generated from
# proto/maintcast/v1/telemetry.proto. Cached under $MAINTCAST_CACHE (default ~/.cache/maintcast)
# and rebuilt only when requirements.txt or the .proto change. Prints the directory; run the
# producer as  "$(bash examples/python/setup.sh)/bin/python" examples/python/producer.py ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MAINTCAST_CACHE:-$HOME/.cache/maintcast}
key=$(cat "$here/requirements.txt" "$repo/proto/maintcast/v1/telemetry.proto" | sha256sum | cut -c1-12)
venv=$cache/venv-producer-$key
if [ ! -f "$venv/.complete" ]; then
  command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
  echo "[producer] creating $venv" >&2
  rm -rf "$venv"
  # Debian's python3 needs python3-venv for ensurepip.
  python3 -m venv "$venv" >&2 || {
    apt_=""; [ "$(id -u)" -eq 0 ] || apt_=sudo
    $apt_ apt-get install -y -q python3-venv >/dev/null 2>&1 || { $apt_ apt-get update -q >/dev/null; $apt_ apt-get install -y -q python3-venv >/dev/null; }
    python3 -m venv "$venv" >&2
  }
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  # The classes a plant engineer generates once from the contract: maintcast/v1/telemetry_pb2.py.
  mkdir -p "$venv/gen"
  "$venv/bin/python" -m grpc_tools.protoc -I "$repo/proto" --python_out="$venv/gen" \
    "$repo/proto/maintcast/v1/telemetry.proto"
  # On the interpreter's path, so `from maintcast.v1 import telemetry_pb2` works.
  "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    | xargs -I{} sh -c "echo '$venv/gen' > {}/maintcast-gen.pth"
  touch "$venv/.complete"
fi
echo "$venv"
