#!/usr/bin/env bash
# The whole test suite, from a clean checkout: installs what it needs,
# runs formatting check and every test, and cleans up after itself.
#
#   scripts/test.sh            # what CI runs (.ci/run)
#   scripts/test.sh --lint     # also cargo clippy -D warnings
#
# Reuses a warm CARGO_TARGET_DIR and an existing Python venv when present,
# but never depends on them.
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

# Python with pyarrow + duckdb: the Parquet files must read outside Vigil.
venv="${VIGIL_VENV:-$root/.ci/.cache/venv}"
if ! "$venv/bin/python" -c 'import pyarrow, duckdb' >/dev/null 2>&1; then
  log "installing pyarrow and duckdb into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
fi
export VIGIL_PYTHON="$venv/bin/python"
export VIGIL_REQUIRE_INTEROP=1

log "cargo fmt --check"
cargo fmt --all -- --check

if [ "$lint" = 1 ]; then
  log "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
fi

log "cargo test"
testlog=$(mktemp)
trap 'rm -f "$testlog"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$testlog"
status=${PIPESTATUS[0]}
set -e

log "done"
passed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$testlog" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$testlog" | awk '{s+=$6} END {print s+0}')
echo "$passed passed, $failed failed"
exit "$status"
