#!/bin/sh
# Seeds an empty model registry volume with the pretrained model shipped in the image, so the
# ingest service has a model to serve before anyone has trained; then runs maintcast.
# A registry that already holds anything is never touched. (MAINTCAST_BIN: tests/deploy_stack.rs
# runs this script outside an image, with the binary it built.)
set -eu
registry=${MAINTCAST_REGISTRY:-/var/lib/maintcast/registry}
pretrained=${MAINTCAST_PRETRAINED:-/opt/maintcast/models/pretrained}
if [ -d "$pretrained" ] && [ -z "$(ls -A "$registry" 2>/dev/null)" ] && [ -n "$(ls -A "$pretrained" 2>/dev/null)" ]; then
  mkdir -p "$registry"
  cp -R "$pretrained"/. "$registry"/
  echo "maintcast-entrypoint: seeded $registry from $pretrained" >&2
fi
exec "${MAINTCAST_BIN:-/usr/local/bin/maintcast}" "$@"
