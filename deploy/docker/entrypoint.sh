#!/bin/sh
# Seeds an empty model registry volume with the pretrained model shipped in the image, so the
# ingest service has a model to serve before anyone has trained; then runs maintcast.
# A registry that already holds anything is never touched.
set -eu
registry=${MAINTCAST_REGISTRY:-/var/lib/maintcast/registry}
pretrained=${MAINTCAST_PRETRAINED:-/opt/maintcast/models/pretrained}
if [ -d "$pretrained" ] && [ -z "$(ls -A "$registry" 2>/dev/null)" ] && [ -n "$(ls -A "$pretrained" 2>/dev/null)" ]; then
  mkdir -p "$registry"
  cp -R "$pretrained"/. "$registry"/
  echo "maintcast-entrypoint: seeded $registry from $pretrained" >&2
fi
exec /usr/local/bin/maintcast "$@"
