#!/usr/bin/env bash
# Soak test of the ingest service (not run in CI): the real `maintcast ingest` binary on a private
# Kafka and InfluxDB (deploy/infra.sh instances, deleted at the end) under a steady stream, with
# faults on a schedule: kill -9, InfluxDB stopped 30 s, the broker stopped 20 s, a burst of bad
# messages. Prints forecasts and RSS every 10 s, then lost/duplicate counts and RSS over time;
# exits non-zero if a forecast or a bad message was lost.
#
#   scripts/soak.sh [MINUTES] [MACHINES] [FAULT_EVERY_S]     defaults: 30 20 60
#
# MAINTCAST_SOAK_PROFILE=release soaks the release binary the images ship; the default is the
# dev build the tests use, which a test machine has already. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}; machines=${2:-20}; every=${3:-60}
profile=${MAINTCAST_SOAK_PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
bash deploy/infra.sh install
# --workspace, as the tests build, so that the dependencies' features (and builds) are shared.
cargo build --workspace --profile "$profile" --bin maintcast --example soak
target=${CARGO_TARGET_DIR:-target}
# The example runs the binary beside its own directory ($target/$dir/maintcast).
exec "$target/$dir/examples/soak" "$minutes" "$machines" "$every"
