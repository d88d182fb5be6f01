#!/usr/bin/env bash
# Installs, starts and stops the local Kafka (KRaft, single node), InfluxDB 2 and Prometheus that
# maintcast's tests and benchmarks talk to. There is no Docker engine on the development machines,
# so all three run as plain processes on loopback. Everything is built or fetched once into
# $MAINTCAST_CACHE.
#
#   deploy/infra.sh install     fetch Kafka's jars (Maven), build influxd, prometheus and promtool
#                               (Go modules), once
#   deploy/infra.sh start       install if needed, start all three, wait until ready, onboard InfluxDB
#   deploy/infra.sh stop        stop all three
#   deploy/infra.sh status      say what runs
#   deploy/infra.sh wipe        stop all three and delete their data directories
#   deploy/infra.sh env         print the variables tests and services read (no secrets printed
#                               unless MAINTCAST_PRINT_TOKEN=1; the token lives in a 0600 file)
#   deploy/infra.sh promtool .. run the installed promtool (e.g. test rules deploy/prometheus/*.test.yml)
#   deploy/infra.sh gc          stop and delete private instances whose owner process has exited
#
# MAINTCAST_INFRA_INSTANCE=NAME selects a private Kafka and InfluxDB instead of the shared ones:
# its own $MAINTCAST_CACHE/run-NAME and data-NAME, token file and free ports (picked at its first
# start, kept in run-NAME/ports for restarts). Tests that stop or restart a server use one, so the
# tests beside them never see the outage; `wipe` deletes it whole. MAINTCAST_INFRA_OWNER=PID ties
# it to a process, so `gc` can delete what a killed test run left behind.
#
# Prometheus scrapes nothing of its own: a test drops scrape configs and rule files into
# $MAINTCAST_PROMETHEUS_DROPIN (scrape-*.yml, rules-*.yml) and POSTs /-/reload.
set -euo pipefail

CACHE=${MAINTCAST_CACHE:-$HOME/.cache/maintcast}
KAFKA_VERSION=${MAINTCAST_KAFKA_VERSION:-4.1.1}
INFLUXDB_VERSION=${MAINTCAST_INFLUXDB_VERSION:-v2.7.12}
PKG_CONFIG_VERSION=v0.2.7
KAFKA_PORT=${MAINTCAST_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${MAINTCAST_KAFKA_CONTROLLER_PORT:-19093}
INFLUX_PORT=${MAINTCAST_INFLUX_PORT:-18086}
INFLUX_ORG=${MAINTCAST_INFLUX_ORG:-maintcast}
INFLUX_BUCKET=${MAINTCAST_INFLUX_BUCKET:-maintcast}
# The release docker-compose.yml runs (prom/prometheus:v$PROMETHEUS_VERSION); Prometheus 3.x is
# published as the Go module version v0.3MM.P (tests/deploy_compose.rs checks the three agree).
PROMETHEUS_VERSION=${MAINTCAST_PROMETHEUS_VERSION:-3.5.0}
PROMETHEUS_MODULE_VERSION=${MAINTCAST_PROMETHEUS_MODULE_VERSION:-v0.305.0}
PROM_PORT=${MAINTCAST_PROMETHEUS_PORT:-19090}

KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
INFLUX_HOME=$CACHE/influxdb-$INFLUXDB_VERSION
PROM_HOME=$CACHE/prometheus-$PROMETHEUS_VERSION
RUN=$CACHE/run
DATA=$CACHE/data
KAFKA_HEAP=${MAINTCAST_KAFKA_HEAP:-768m}
INSTANCE=${MAINTCAST_INFRA_INSTANCE:-}

log() { printf '[infra%s] %s\n' "${INSTANCE:+ $INSTANCE}" "$*" >&2; }
die() { printf '[infra%s] error: %s\n' "${INSTANCE:+ $INSTANCE}" "$*" >&2; exit 1; }

port_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port below Linux's ephemeral range (32768+), so no client socket takes it between a stop and
# a restart, that nothing listens on and no other instance holds. Callers hold the ports lock,
# so two instances starting at once never pick the same one.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    port_listening "$p" && continue
    grep -qsx "[A-Z_]*=$p" "$CACHE"/run-*/ports "$RUN/ports.tmp" && continue
    printf '%s' "$p"; return 0
  done
  die "no free port found in 20000-32000"
}

if [ -n "$INSTANCE" ]; then
  case "$INSTANCE" in *[!A-Za-z0-9_.-]*|.*) die "instance name must be [A-Za-z0-9_.-]+: $INSTANCE" ;; esac
  RUN=$CACHE/run-$INSTANCE
  DATA=$CACHE/data-$INSTANCE
  # Beside the shared broker on a small machine: a test's broker holds a few topics.
  KAFKA_HEAP=${MAINTCAST_KAFKA_HEAP:-384m}
  if [ ! -f "$RUN/ports" ] && [[ "${1:-}" == start* ]]; then
    mkdir -p "$RUN"
    (
      flock 9
      : >"$RUN/ports.tmp"
      for var in KAFKA_PORT KAFKA_CONTROLLER_PORT INFLUX_PORT; do
        printf '%s=%s\n' "$var" "$(free_port)" >>"$RUN/ports.tmp"
      done
      mv "$RUN/ports.tmp" "$RUN/ports"
    ) 9>"$CACHE/ports.lock" || exit 1
  fi
  [ -f "$RUN/ports" ] || [[ "${1:-}" == wipe || "${1:-}" == stop* || "${1:-}" == status ]] \
    || die "instance $INSTANCE was never started"
  # shellcheck disable=SC1091
  [ -f "$RUN/ports" ] && . "$RUN/ports"
  if [ -n "${MAINTCAST_INFRA_OWNER:-}" ] && [ -d "$RUN" ]; then
    printf '%s' "$MAINTCAST_INFRA_OWNER" >"$RUN/owner"
  fi
fi
TOKEN_FILE=$RUN/influx-token
# One Prometheus, the shared one, whatever the instance.
PROM_DROPIN=$CACHE/run/prometheus.d

install_kafka() {
  [ -f "$KAFKA_HOME/.complete" ] && return 0
  command -v java >/dev/null || die "java is required for Kafka (install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "maven is required to fetch Kafka's jars (install maven)"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_HOME.tmp"; mkdir -p "$KAFKA_HOME.tmp"
  cat >"$KAFKA_HOME.tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.maintcast</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  (cd "$KAFKA_HOME.tmp" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=libs -DincludeScope=runtime) \
    || die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  cat >"$KAFKA_HOME.tmp/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
    Logger:
      - {name: kafka.server.KafkaRaftServer, level: INFO, additivity: false, AppenderRef: [{ref: STDOUT}]}
YAML
  touch "$KAFKA_HOME.tmp/.complete"
  rm -rf "$KAFKA_HOME"; mv "$KAFKA_HOME.tmp" "$KAFKA_HOME"
}

install_influxdb() {
  [ -x "$INFLUX_HOME/influxd" ] && return 0
  command -v go >/dev/null || die "go is required to build influxd"
  command -v cargo >/dev/null || die "cargo is required to build libflux"
  log "building influxd $INFLUXDB_VERSION from its Go module (one time, several minutes)"
  mkdir -p "$CACHE/gopath/bin"
  export GOPATH=$CACHE/gopath GOCACHE=$CACHE/gocache GOFLAGS=-buildvcs=false
  # pkg-config wrapper: compiles the Rust libflux that influxd links against.
  [ -x "$GOPATH/bin/pkg-config" ] || go install "github.com/influxdata/pkg-config@$PKG_CONFIG_VERSION"
  local dir
  dir=$(go mod download -json "github.com/influxdata/influxdb/v2@$INFLUXDB_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || die "go mod download gave no source for influxdb $INFLUXDB_VERSION"
  local src=$CACHE/src/influxdb-$INFLUXDB_VERSION
  rm -rf "$src"; mkdir -p "$(dirname "$src")"; cp -r "$dir" "$src"; chmod -R u+w "$src"
  # The flux sources pin an old Rust toolchain that cannot be installed here; the current stable builds it.
  local toolchain
  toolchain=$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')
  # The wrapper builds libflux from a writable copy of the flux module under $GOCACHE/pkgconfig.
  # Its crates deny(warnings) behind a default "strict" feature, and lints added to rustc since
  # then turn that into errors; we lay the copy out ourselves with "strict" off.
  local flux_version flux_dir flux_copy
  flux_version=$(awk '$1 == "github.com/influxdata/flux" {print $2; exit}' "$src/go.mod")
  [ -n "$flux_version" ] || die "cannot find the flux version in influxdb's go.mod"
  flux_dir=$(go mod download -json "github.com/influxdata/flux@$flux_version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  flux_copy=$(go env GOCACHE)/pkgconfig/github.com/influxdata/flux@$flux_version
  if [ ! -f "$flux_copy/.maintcast-patched" ]; then
    rm -rf "$flux_copy"; mkdir -p "$(dirname "$flux_copy")"
    cp -r "$flux_dir" "$flux_copy"; chmod -R u+w "$flux_copy"
    sed -i 's/^default = \["strict"\]/default = []/; s/^default = \["strict", "cffi"\]/default = ["cffi"]/' \
      "$flux_copy/libflux/flux-core/Cargo.toml" "$flux_copy/libflux/flux/Cargo.toml"
    touch "$flux_copy/.maintcast-patched"
  fi
  (cd "$src" && RUSTUP_TOOLCHAIN=${toolchain:-stable} PKG_CONFIG=$GOPATH/bin/pkg-config \
     CGO_ENABLED=1 go build -tags sqlite_foreign_keys,sqlite_json -o "$INFLUX_HOME.tmp/influxd" ./cmd/influxd) \
    || die "go build ./cmd/influxd failed"
  rm -rf "$INFLUX_HOME"; mv "$INFLUX_HOME.tmp" "$INFLUX_HOME"
  rm -rf "$src"
}

install_prometheus() {
  [ -x "$PROM_HOME/prometheus" ] && [ -x "$PROM_HOME/promtool" ] && return 0
  command -v go >/dev/null || die "go is required to build prometheus"
  log "building prometheus and promtool $PROMETHEUS_VERSION from their Go module (one time, a few minutes)"
  export GOPATH=$CACHE/gopath GOCACHE=$CACHE/gocache GOFLAGS=-buildvcs=false
  local dir src
  dir=$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || die "go mod download gave no source for prometheus $PROMETHEUS_MODULE_VERSION"
  grep -qx "$PROMETHEUS_VERSION" "$dir/VERSION" || die "module $PROMETHEUS_MODULE_VERSION is not prometheus $PROMETHEUS_VERSION"
  src=$CACHE/src/prometheus-$PROMETHEUS_VERSION
  rm -rf "$src"; mkdir -p "$(dirname "$src")"; cp -r "$dir" "$src"; chmod -R u+w "$src"
  # Tests scrape static targets only: dropping the cloud service-discovery plugins (Kubernetes,
  # AWS, Azure, GCE, ...) roughly halves what there is to compile. Without the builtinassets tag
  # the web UI is not embedded; the HTTP API, which is what tests use, is all there.
  printf 'package plugins\n' >"$src/plugins/plugins.go"
  local ldflags="-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$PROM_HOME.tmp/prometheus" ./cmd/prometheus \
     && CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$PROM_HOME.tmp/promtool" ./cmd/promtool) \
    || die "go build of prometheus $PROMETHEUS_VERSION failed"
  rm -rf "$PROM_HOME"; mv "$PROM_HOME.tmp" "$PROM_HOME"
  rm -rf "$src"
}

# A pid file from before a reboot can name an unrelated process: check what it runs too.
pid_alive() {
  [ -f "$1" ] || return 1
  local args
  args=$(ps -p "$(cat "$1")" -o args= 2>/dev/null) || return 1
  case "$args" in *kafka.Kafka*|*influxd*|*prometheus*) return 0 ;; *) return 1 ;; esac
}

wait_port() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

start_kafka() {
  mkdir -p "$RUN" "$DATA/kafka"
  if pid_alive "$RUN/kafka.pid"; then log "kafka already running"; return 0; fi
  if [ -n "$INSTANCE" ] && { port_listening "$KAFKA_PORT" || port_listening "$KAFKA_CONTROLLER_PORT"; }; then
    die "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is taken by another process"
  fi
  cat >"$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/kafka
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=2097152
log.retention.hours=168
PROPS
  local cp="$KAFKA_HOME/libs/*"
  local jvm=(-Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.yaml")
  if [ ! -f "$DATA/kafka/meta.properties" ]; then
    java "${jvm[@]}" -cp "$cp" org.apache.kafka.tools.StorageTool format -t "$(java -cp "$cp" org.apache.kafka.tools.StorageTool random-uuid 2>/dev/null || echo maintcast-local-0000001)" \
      -c "$RUN/server.properties" --standalone >/dev/null 2>"$RUN/kafka-format.err" \
      || java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "MaintcastLocalCluster1" -c "$RUN/server.properties" >/dev/null 2>>"$RUN/kafka-format.err" \
      || { cat "$RUN/kafka-format.err" >&2; die "kafka storage format failed"; }
  fi
  log "starting kafka on 127.0.0.1:$KAFKA_PORT"
  setsid nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$RUN/server.properties" >"$RUN/kafka.log" 2>&1 </dev/null &
  echo $! >"$RUN/kafka.pid"
  wait_port 127.0.0.1 "$KAFKA_PORT" 90 || { tail -30 "$RUN/kafka.log" >&2; die "kafka did not open port $KAFKA_PORT"; }
}

start_influxdb() {
  mkdir -p "$RUN" "$DATA/influxdb"
  if pid_alive "$RUN/influxd.pid"; then log "influxd already running"; else
    if [ -n "$INSTANCE" ] && port_listening "$INFLUX_PORT"; then
      die "port $INFLUX_PORT is taken by another process"
    fi
    log "starting influxd on 127.0.0.1:$INFLUX_PORT"
    INFLUXD_BOLT_PATH=$DATA/influxdb/influxd.bolt INFLUXD_ENGINE_PATH=$DATA/influxdb/engine \
      INFLUXD_SQLITE_PATH=$DATA/influxdb/influxd.sqlite INFLUXD_HTTP_BIND_ADDRESS=127.0.0.1:$INFLUX_PORT \
      INFLUXD_REPORTING_DISABLED=true INFLUXD_LOG_LEVEL=warn \
      setsid nohup "$INFLUX_HOME/influxd" >"$RUN/influxd.log" 2>&1 </dev/null &
    echo $! >"$RUN/influxd.pid"
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    curl -sf "http://127.0.0.1:$INFLUX_PORT/health" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$INFLUX_PORT/health" >/dev/null || { tail -30 "$RUN/influxd.log" >&2; die "influxd is not healthy"; }
  onboard_influxdb
}

onboard_influxdb() {
  local allowed
  allowed=$(curl -sf "http://127.0.0.1:$INFLUX_PORT/api/v2/setup" | grep -o '"allowed": *[a-z]*' | grep -o '[a-z]*$')
  if [ "$allowed" = "true" ]; then
    local token
    token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    umask 077
    printf '%s' "$token" >"$TOKEN_FILE"
    # The token travels in the request body from a file, never on a command line.
    printf '{"username":"maintcast","password":"maintcast-local-%s","org":"%s","bucket":"%s","token":"%s"}' \
      "${token:0:12}" "$INFLUX_ORG" "$INFLUX_BUCKET" "$token" >"$RUN/setup.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data @"$RUN/setup.json" \
      "http://127.0.0.1:$INFLUX_PORT/api/v2/setup" >/dev/null || die "influxdb onboarding failed"
    rm -f "$RUN/setup.json"
    log "influxdb onboarded (org $INFLUX_ORG, bucket $INFLUX_BUCKET)"
  fi
  [ -s "$TOKEN_FILE" ] || die "influxdb is set up but $TOKEN_FILE is missing: run '$0 wipe' and start again"
}

start_prometheus() {
  mkdir -p "$RUN" "$DATA/prometheus" "$PROM_DROPIN"
  if pid_alive "$RUN/prometheus.pid"; then log "prometheus already running"; else
    # Nothing to scrape until a test drops its targets in; rules and scrape configs are globs so
    # each test adds and removes its own file without touching another's.
    cat >"$RUN/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_config_files: ["$PROM_DROPIN/scrape-*.yml"]
rule_files: ["$PROM_DROPIN/rules-*.yml"]
YAML
    log "starting prometheus on 127.0.0.1:$PROM_PORT"
    setsid nohup "$PROM_HOME/prometheus" --config.file="$RUN/prometheus.yml" \
      --storage.tsdb.path="$DATA/prometheus" --storage.tsdb.retention.time=2d \
      --web.listen-address=127.0.0.1:$PROM_PORT --web.enable-lifecycle --log.level=warn \
      >"$RUN/prometheus.log" 2>&1 </dev/null &
    echo $! >"$RUN/prometheus.pid"
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    curl -sf "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && return 0
    sleep 0.2
  done
  tail -30 "$RUN/prometheus.log" >&2; die "prometheus is not ready"
}

stop_one() { # name
  local f=$RUN/$1.pid
  if pid_alive "$f"; then
    local p; p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
    log "stopped $1"
  fi
  rm -f "$f"
}

print_env() {
  echo "export MAINTCAST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export MAINTCAST_INFLUX_URL=http://127.0.0.1:$INFLUX_PORT"
  echo "export MAINTCAST_INFLUX_ORG=$INFLUX_ORG"
  echo "export MAINTCAST_INFLUX_BUCKET=$INFLUX_BUCKET"
  echo "export MAINTCAST_INFLUX_TOKEN_FILE=$TOKEN_FILE"
  echo "export MAINTCAST_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
  echo "export MAINTCAST_PROMETHEUS_DROPIN=$PROM_DROPIN"
  echo "export MAINTCAST_PROMTOOL=$PROM_HOME/promtool"
  if [ "${MAINTCAST_PRINT_TOKEN:-0}" = 1 ]; then echo "export MAINTCAST_INFLUX_TOKEN=$(cat "$TOKEN_FILE")"; fi
}

case "${1:-}" in
  install) install_kafka; install_influxdb; install_prometheus ;;
  start)
    install_kafka; install_influxdb; install_prometheus
    start_kafka; start_influxdb
    [ -n "$INSTANCE" ] || start_prometheus
    log "ready"; print_env ;;
  stop) stop_one kafka; stop_one influxd; stop_one prometheus ;;
  stop-kafka) stop_one kafka ;;
  stop-influxdb) stop_one influxd ;;
  start-kafka) start_kafka ;;
  start-influxdb) start_influxdb ;;
  install-prometheus) install_prometheus ;;
  start-prometheus) install_prometheus; start_prometheus ;;
  stop-prometheus) stop_one prometheus ;;
  promtool) shift; install_prometheus; exec "$PROM_HOME/promtool" "$@" ;;
  status)
    pid_alive "$RUN/kafka.pid" && echo "kafka: running (pid $(cat "$RUN/kafka.pid"))" || echo "kafka: stopped"
    pid_alive "$RUN/influxd.pid" && echo "influxd: running (pid $(cat "$RUN/influxd.pid"))" || echo "influxd: stopped"
    pid_alive "$RUN/prometheus.pid" && echo "prometheus: running (pid $(cat "$RUN/prometheus.pid"))" || echo "prometheus: stopped" ;;
  wipe)
    stop_one kafka; stop_one influxd
    if [ -n "$INSTANCE" ]; then rm -rf "$DATA" "$RUN"; else stop_one prometheus; rm -rf "$DATA" "$TOKEN_FILE"; fi
    log "data wiped" ;;
  gc)
    for dir in "$CACHE"/run-*; do
      [ -f "$dir/owner" ] || continue
      kill -0 "$(cat "$dir/owner")" 2>/dev/null && continue
      MAINTCAST_INFRA_INSTANCE=${dir##*/run-} MAINTCAST_INFRA_OWNER='' bash "$0" wipe
    done ;;
  env) print_env ;;
  *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
