#!/usr/bin/env bash
# Installs the system packages maintcast's build needs beyond a stock Rust/Go/Java machine:
# librdkafka (built from source by rdkafka's cmake-build) wants cmake and curl's and OpenSSL's headers.
# Idempotent: a machine that has them installs nothing.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v curl >/dev/null || need+=(curl)
[ ${#need[@]} -eq 0 ] && exit 0
echo "[build-deps] installing: ${need[*]}" >&2
sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo_ apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
  $sudo_ apt-get update -q >/dev/null
  $sudo_ apt-get install -y -q "${need[@]}" >/dev/null
}
