#!/usr/bin/env bash
# Runs every maintcast test against a real Kafka and InfluxDB: installs what the build and the
# services need (once, cached under ~/.cache/maintcast), starts both on loopback, runs the suite.
# The services stay up afterwards so a second run starts in seconds; `deploy/infra.sh stop` ends them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build-deps.sh
bash deploy/infra.sh start >/dev/null
eval "$(bash deploy/infra.sh env)"
cargo test --workspace "$@"
