#!/usr/bin/env python3
"""Check that Vigil's Parquet datasets are readable as-is by pyarrow and DuckDB.

Usage:
    check_parquet.py DATA_DIR [--aggregates N] [--alerts N]

For each dataset (`aggregates/`, `alerts/`) under DATA_DIR this reads every
file twice -- with `pyarrow.dataset` (hive partitioning) and with DuckDB's
`read_parquet('DATA_DIR/<ds>/**/*.parquet', hive_partitioning = true)` -- and
checks that:

* both readers see the same number of rows, equal to N when given;
* the columns have the documented names and types, every timestamp being a
  UTC-adjusted timestamp (`timestamp[ms, tz=UTC]` in pyarrow,
  `TIMESTAMP WITH TIME ZONE` in DuckDB);
* the `date=YYYY-MM-DD` directory of every row is the UTC day of its
  partition time column (`window_start` for aggregates, `event_time` for
  alerts), in both readers;
* no in-progress `.tmp-*` file is left behind.

Prints a one-line JSON summary and exits 0 when everything holds, 1 on any
mismatch, 2 on bad usage. Needs `pip install pyarrow duckdb`.
"""

import argparse
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

TS = "timestamp"
# (column, pyarrow type, DuckDB type) in file order; the `date` partition
# column comes from the directory and is not listed here.
SCHEMAS = {
    "aggregates": {
        "time_column": "window_start",
        "columns": [
            ("tenant", pa.string(), "VARCHAR"),
            ("agent", pa.string(), "VARCHAR"),
            ("metric", pa.string(), "VARCHAR"),
            ("labels", pa.string(), "VARCHAR"),
            ("window_start", TS, "TIMESTAMP WITH TIME ZONE"),
            ("window_end", TS, "TIMESTAMP WITH TIME ZONE"),
            ("count", pa.uint64(), "UBIGINT"),
            ("sum", pa.float64(), "DOUBLE"),
            ("min", pa.float64(), "DOUBLE"),
            ("max", pa.float64(), "DOUBLE"),
            ("mean", pa.float64(), "DOUBLE"),
            ("last", pa.float64(), "DOUBLE"),
            ("last_ts", TS, "TIMESTAMP WITH TIME ZONE"),
        ],
    },
    "alerts": {
        "time_column": "event_time",
        "columns": [
            ("id", pa.string(), "VARCHAR"),
            ("fingerprint", pa.string(), "VARCHAR"),
            ("rule", pa.string(), "VARCHAR"),
            ("kind", pa.string(), "VARCHAR"),
            ("severity", pa.string(), "VARCHAR"),
            ("status", pa.string(), "VARCHAR"),
            ("suppressed", pa.bool_(), "BOOLEAN"),
            ("tenant", pa.string(), "VARCHAR"),
            ("agent", pa.string(), "VARCHAR"),
            ("hostname", pa.string(), "VARCHAR"),
            ("metric", pa.string(), "VARCHAR"),
            ("labels", pa.string(), "VARCHAR"),
            ("value", pa.float64(), "DOUBLE"),
            ("threshold", pa.float64(), "DOUBLE"),
            ("predicted_at", TS, "TIMESTAMP WITH TIME ZONE"),
            ("window_start", TS, "TIMESTAMP WITH TIME ZONE"),
            ("window_end", TS, "TIMESTAMP WITH TIME ZONE"),
            ("started_at", TS, "TIMESTAMP WITH TIME ZONE"),
            ("resolved_at", TS, "TIMESTAMP WITH TIME ZONE"),
            ("event_time", TS, "TIMESTAMP WITH TIME ZONE"),
            ("summary", pa.string(), "VARCHAR"),
            ("resolve_reason", pa.string(), "VARCHAR"),
            ("flaps", pa.uint32(), "UINTEGER"),
        ],
    },
}
UTC_TS = pa.timestamp("ms", tz="UTC")


def parquet_files(directory):
    """Published files and leftover temporaries under a dataset directory."""
    files, tmp = [], []
    for base, _dirs, names in os.walk(directory):
        for name in names:
            if name.startswith(".tmp-"):
                tmp.append(os.path.join(base, name))
            elif name.endswith(".parquet"):
                files.append(os.path.join(base, name))
    return sorted(files), sorted(tmp)


def check_pyarrow(directory, spec, errors):
    ds = pds.dataset(directory, format="parquet", partitioning="hive")
    table = ds.to_table()
    expected = [name for name, _, _ in spec["columns"]] + ["date"]
    if table.schema.names != expected:
        errors.append(f"pyarrow columns {table.schema.names} != {expected}")
    for name, typ, _ in spec["columns"]:
        if name not in table.schema.names:
            continue
        got = table.schema.field(name).type
        want = UTC_TS if typ == TS else typ
        if got != want:
            errors.append(f"pyarrow {name}: {got} != {want}")
    tcol = spec["time_column"]
    days = pc.strftime(table[tcol], format="%Y-%m-%d")
    dates = pc.cast(table["date"], pa.string())
    mismatches = table.num_rows - pc.sum(pc.equal(days, dates).cast(pa.int64())).as_py() if table.num_rows else 0
    if mismatches:
        errors.append(f"pyarrow: {mismatches} rows whose date directory is not the UTC day of {tcol}")
    return table.num_rows, mismatches


def check_duckdb(directory, spec, errors):
    con = duckdb.connect()
    glob = os.path.join(directory, "**", "*.parquet").replace("'", "''")
    src = f"read_parquet('{glob}', hive_partitioning = true)"
    types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    for name, _, want in spec["columns"]:
        if types.get(name) != want:
            errors.append(f"duckdb {name}: {types.get(name)} != {want}")
    if types.get("date") not in ("DATE", "VARCHAR"):
        errors.append(f"duckdb date partition type {types.get('date')}")
    tcol = spec["time_column"]
    rows, mismatches = con.execute(
        f"""SELECT count(*),
                   count(*) FILTER (WHERE CAST(date AS VARCHAR)
                       <> CAST(DATE '1970-01-01' + CAST(floor(epoch_ms({tcol}) / 86400000) AS INTEGER) AS VARCHAR))
            FROM {src}"""
    ).fetchone()
    if mismatches:
        errors.append(f"duckdb: {mismatches} rows whose date directory is not the UTC day of {tcol}")
    return rows, mismatches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--aggregates", type=int, help="expected row count of aggregates/")
    parser.add_argument("--alerts", type=int, help="expected row count of alerts/")
    args = parser.parse_args()
    if not os.path.isdir(args.data_dir):
        print(json.dumps({"ok": False, "errors": [f"{args.data_dir} is not a directory"]}))
        return 2

    summary = {"ok": True, "data_dir": args.data_dir, "datasets": {}, "errors": []}
    for name, spec in SCHEMAS.items():
        directory = os.path.join(args.data_dir, name)
        expected = getattr(args, name)
        errors = []
        files, tmp = parquet_files(directory) if os.path.isdir(directory) else ([], [])
        if tmp:
            errors.append(f"leftover temporary files: {tmp}")
        info = {"files": len(files), "expected_rows": expected}
        if files:
            try:
                info["pyarrow_rows"], info["pyarrow_date_mismatches"] = check_pyarrow(directory, spec, errors)
            except Exception as e:  # report, do not crash: the summary is the output
                errors.append(f"pyarrow failed: {e!r}")
            try:
                info["duckdb_rows"], info["duckdb_date_mismatches"] = check_duckdb(directory, spec, errors)
            except Exception as e:
                errors.append(f"duckdb failed: {e!r}")
            if info.get("pyarrow_rows") != info.get("duckdb_rows"):
                errors.append(f"row counts differ: pyarrow {info.get('pyarrow_rows')}, duckdb {info.get('duckdb_rows')}")
        else:
            info["pyarrow_rows"] = info["duckdb_rows"] = 0
        if expected is not None and info.get("pyarrow_rows") != expected:
            errors.append(f"expected {expected} rows, read {info.get('pyarrow_rows')}")
        info["ok"] = not errors
        summary["datasets"][name] = info
        summary["errors"] += [f"{name}: {e}" for e in errors]
    summary["ok"] = not summary["errors"]
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
