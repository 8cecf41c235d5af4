#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what it needs,
# runs formatting check and every test, and cleans up after itself.
#
#   scripts/test.sh            # what CI runs (.ci/run)
#   scripts/test.sh --lint     # also cargo clippy and cargo doc, -D warnings
#
# Starts the nisshi test broker (a Kafka-compatible broker on crates.io;
# see README "Test broker") and an S3-compatible server (moto, PyPI) on
# 127.0.0.1, installing them first when they are missing, and stops them
# on exit, also when tests fail.
#
# Reuses a warm CARGO_TARGET_DIR, an installed nisshi (on PATH, in
# $NISSHI_ROOT/bin or .ci/.cache/nisshi/bin) and an existing Python venv
# when present, but never depends on them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

lint=0
for arg in "$@"; do
  case "$arg" in
    --lint) lint=1 ;;
    *) echo "usage: scripts/test.sh [--lint]" >&2; exit 2 ;;
  esac
done

log() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
# A cold run needs about 10 GB (the test build and the broker's); a full
# disk shows up as a linker error, so say how much there is.
log "free disk space: $(df -h --output=avail "$root" | tail -1 | tr -d ' ')"

# Python with pyarrow + duckdb: the Parquet files must read outside Vigil;
# with ocsf-json-schema + jsonschema (the OCSF schema as JSON Schema) and
# cefp (a CEF parser): the SIEM encodings must pass validators not Vigil's;
# kubernetes-validate (it ships the Kubernetes schemas) and pyyaml: the
# offline checks of deploy/ (scripts/check-deploy.py).
venv="${VIGIL_VENV:-$root/.ci/.cache/venv}"
if ! "$venv/bin/python" -c 'import pyarrow, duckdb, ocsf_json_schema, jsonschema, cefp, kubernetes_validate, yaml' >/dev/null 2>&1; then
  log "installing pyarrow, duckdb, ocsf-json-schema, jsonschema, cefp, kubernetes-validate and pyyaml into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pyarrow duckdb \
    ocsf-json-schema==1.2.0 jsonschema cefp==0.0.2 kubernetes-validate pyyaml
fi
export VIGIL_PYTHON="$venv/bin/python"
# The ECS field definitions (npm @elastic/ecs, matching ecs.version of the
# ecs encoding), read by tests/interop/check_ecs.js with the machine's node.
ecs_dir="$root/.ci/.cache/ecs"
if [ ! -f "$ecs_dir/node_modules/@elastic/ecs/package.json" ]; then
  log "installing @elastic/ecs 8.11.5 into $ecs_dir"
  npm install --silent --no-audit --no-fund --prefix "$ecs_dir" @elastic/ecs@8.11.5
fi
export VIGIL_ECS_MODULE="$ecs_dir/node_modules/@elastic/ecs"
export VIGIL_REQUIRE_INTEROP=1

# promtool (PromQL of the alerts and the dashboard, alert unit tests): the
# static binary out of Debian's prometheus package, extracted, not
# installed (installing would start a Prometheus server).
promtool="${VIGIL_PROMTOOL:-$root/.ci/.cache/promtool/promtool}"
if [ ! -x "$promtool" ]; then
  log "extracting promtool from Debian's prometheus package into $(dirname "$promtool")"
  deb_dir=$(mktemp -d)
  (cd "$deb_dir" && { apt-get download prometheus >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; } \
   && dpkg-deb -x prometheus_*.deb x)
  mkdir -p "$(dirname "$promtool")"
  cp "$deb_dir/x/usr/bin/promtool" "$promtool"
  rm -rf "$deb_dir"
fi
export VIGIL_PROMTOOL="$promtool"
export VIGIL_REQUIRE_PROMTOOL=1

# rsyslog (the syslog receiver of the `vigil export` tests, plain TCP and
# TLS through its OpenSSL driver): Debian's rsyslog and rsyslog-openssl
# with the libraries they need, extracted, not installed (installing would
# start the machine's syslog daemon). The tests run it with -M (module
# directory) and LD_LIBRARY_PATH pointing into the extracted tree, and
# use the openssl command-line tool for their throwaway CA.
rsyslog_root="${VIGIL_RSYSLOG_ROOT:-$root/.ci/.cache/rsyslog}"
if [ ! -x "$rsyslog_root/usr/sbin/rsyslogd" ] || ! ls "$rsyslog_root"/usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1; then
  log "extracting rsyslog and rsyslog-openssl from Debian's packages into $rsyslog_root"
  deb_dir=$(mktemp -d)
  rsyslog_debs="rsyslog rsyslog-openssl libestr0 libfastjson4 liblognorm5"
  (cd "$deb_dir" && { apt-get download $rsyslog_debs >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null && apt-get download $rsyslog_debs >/dev/null; }; } \
   && for d in ./*.deb; do dpkg-deb -x "$d" x; done)
  rm -rf "$rsyslog_root"
  mkdir -p "$(dirname "$rsyslog_root")"
  mv "$deb_dir/x" "$rsyslog_root"
  rm -rf "$deb_dir"
fi
export VIGIL_RSYSLOG_ROOT="$rsyslog_root"
export VIGIL_REQUIRE_SYSLOG=1
# The openssl command-line tool (Debian's openssl) makes the tests'
# throwaway CA and certificates.
if ! command -v openssl >/dev/null 2>&1; then
  log "installing openssl"
  apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null
fi

# A headless browser (the HTML report must load without console errors
# and draw its charts): Debian's chromium-headless-shell, installed when
# no chromium-headless-shell or chromium is on PATH (VIGIL_BROWSER names
# another one).
if [ -z "${VIGIL_BROWSER:-}" ] && ! command -v chromium-headless-shell >/dev/null 2>&1 \
   && ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium-headless-shell"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null \
         && apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null; }
fi
export VIGIL_REQUIRE_BROWSER=1

log "cargo fmt --check"
cargo fmt --all -- --check

# Kubernetes manifests, compose file, Dockerfile, alerts and dashboard:
# offline, a few seconds.
log "deploy checks (scripts/check-deploy.py)"
"$venv/bin/python" scripts/check-deploy.py

# The test broker: nisshi, pinned. Not tansu: tansu 0.6.0's memory engine
# returns a wrong high watermark and skips records when a fetch starts
# inside a batch, so a consumer resuming mid-batch would lose data.
NISSHI_VERSION=0.8.1
nisshi_root="${NISSHI_ROOT:-$root/.ci/.cache/nisshi}"
nisshi="$nisshi_root/bin/nisshi"
if [ ! -x "$nisshi" ] && command -v nisshi >/dev/null 2>&1 \
   && nisshi --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
  nisshi=$(command -v nisshi)
fi
install_pid=""
cleanup() {
  if [ -n "$install_pid" ]; then kill "$install_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
# The storage engines the tests use and no more: dynostore (memory://, the
# shared broker) and libsql (sqlite://, the outage and chaos tests' brokers,
# which must keep their data across a kill); not postgres. Built in its own target
# directory on the project's disk (not CARGO_TARGET_DIR, not /tmp), so a
# retry after a failure reuses what was compiled; removed once installed.
nisshi_build="$root/.ci/.cache/nisshi-build"
install_log="$root/.ci/.cache/nisshi-install.log"
# --ignore-rust-version: one dependency declares a newer rustc than the
# toolchain here; it builds and works without error.
install_nisshi() {
  CARGO_TARGET_DIR="$nisshi_build" cargo install nisshi --version "$NISSHI_VERSION" \
    --locked --ignore-rust-version --no-default-features --features dynostore,libsql \
    --root "$nisshi_root" >"$install_log" 2>&1
}
# why_failed: the lines of the install log that say why (the linker's
# command line alone runs to pages), and the free disk space.
why_failed() {
  grep -E 'error|warning: .*(space|memory)|ld:|collect2|No space|Killed|signal' "$install_log" \
    | cut -c1-400 | tail -20 >&2 || true
  df -h "$root" "${TMPDIR:-/tmp}" >&2 || true
}
if [ ! -x "$nisshi" ]; then
  # In the background, while the tests build: the two builds have serial
  # phases that leave a core idle, so together they take less than apart.
  log "installing nisshi $NISSHI_VERSION into $nisshi_root in the background (about 15 minutes on 2 cores, once)"
  mkdir -p "$root/.ci/.cache"
  install_nisshi &
  install_pid=$!
fi

if [ "$lint" = 1 ]; then
  log "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  log "cargo doc (intra-doc links)"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
fi

log "cargo test --no-run (building)"
cargo test --workspace --no-run

if [ -n "$install_pid" ]; then
  log "waiting for the nisshi install"
  if ! wait "$install_pid"; then
    install_pid=""
    echo "installing nisshi failed; retrying once, alone:" >&2
    why_failed
    if ! install_nisshi; then
      echo "installing nisshi failed again:" >&2
      why_failed
      exit 1
    fi
  fi
  install_pid=""
  rm -rf "$nisshi_build"
fi

# wait_listening NAME PID PORT LOG: waits up to 10 s for PORT on 127.0.0.1
# to accept connections; fails with LOG when the process PID has died.
wait_listening() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $3), 0.2)" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  if ! kill -0 "$2" 2>/dev/null; then
    echo "$1 did not start:" >&2
    cat "$4" >&2
    exit 1
  fi
}

broker_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "starting nisshi on 127.0.0.1:$port"
# An empty working directory: nisshi reads a .env file from it.
(cd "$broker_dir" && exec "$nisshi" broker --storage-engine memory://nisshi/ \
   --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
   --group-initial-rebalance-delay 0s >"$broker_dir/nisshi.log" 2>&1) &
broker_pid=$!
stop_broker() {
  cleanup
  kill -TERM "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
wait_listening nisshi "$broker_pid" "$port" "$broker_dir/nisshi.log"
export VIGIL_TEST_BROKERS="127.0.0.1:$port"
export VIGIL_REQUIRE_BROKER=1
# Tests that stop and restart a broker (the outage test) start their own,
# on a port and sqlite file of their own, and kill it when they end.
export VIGIL_TEST_NISSHI="$nisshi"

# The S3-compatible test server: moto's server mode (PyPI, pinned), in a
# venv of its own. Chosen over s3s-fs (crates.io) because it installs from
# a wheel in about 20 seconds instead of a Rust build on a machine that
# already builds nisshi, and because its PutObject honours
# `If-None-Match: *` (412 when the key exists), the conditional PUT that
# object_store's PutMode::Create sends. In memory: nothing to clean up.
MOTO_VERSION=5.2.5
moto_venv="${VIGIL_MOTO_VENV:-$root/.ci/.cache/moto}"
if ! "$moto_venv/bin/python" -c "import moto, flask, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
  log "installing moto[server] $MOTO_VERSION into $moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
s3_dir=$(mktemp -d)
s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "starting moto (S3) on 127.0.0.1:$s3_port"
# Through the interpreter, not the moto_server script: a venv that was
# copied or moved keeps a script whose #! names its old place.
(cd "$s3_dir" && exec "$moto_venv/bin/python" -m moto.server -H 127.0.0.1 -p "$s3_port" >"$s3_dir/moto.log" 2>&1) &
s3_pid=$!
stop_services() {
  kill -TERM "$s3_pid" 2>/dev/null || true
  wait "$s3_pid" 2>/dev/null || true
  rm -rf "$s3_dir"
  stop_broker
}
trap stop_services EXIT
wait_listening moto "$s3_pid" "$s3_port" "$s3_dir/moto.log"
# The tests' bucket (each test works under a prefix of its own).
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$s3_port/vigil-test', method='PUT'), timeout=10)"
export VIGIL_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export VIGIL_TEST_S3_BUCKET=vigil-test
export VIGIL_REQUIRE_S3=1

log "cargo test"
testlog=$(mktemp)
trap 'rm -f "$testlog"; stop_services' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$testlog"
status=${PIPESTATUS[0]}
set -e

log "done"
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$testlog" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$testlog" | awk '{s+=$6} END {print s+0}')
echo "$passed passed, $failed failed"
exit "$status"
