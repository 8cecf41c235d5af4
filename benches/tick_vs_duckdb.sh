#!/bin/sh
# `vigil ingest` against DuckDB on a tick-shaped fleet: see tick_vs_duckdb.py.
# The python is $VIGIL_PYTHON, else python3 from PATH; it needs duckdb and pyarrow
# (the test venv has both: .ci/.cache/venv/bin/python).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec "${VIGIL_PYTHON:-python3}" "$here/tick_vs_duckdb.py" "$@"
