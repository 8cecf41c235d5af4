#!/usr/bin/env python3
"""Check that every report section's SQL runs in DuckDB with DataFusion's answer.

Usage:
    check_report_sql.py DATA_DIR SECTIONS_JSON

SECTIONS_JSON is a list of {"name", "sql", "columns", "rows"}: the SQL of
one report section exactly as Vigil runs it, the names of the columns
DataFusion returned, in order, and its rows (Vigil's
JSON Lines rendering: timestamps as RFC 3339 strings, dates as
YYYY-MM-DD). Over DATA_DIR this creates a view for each of the datasets
`aggregates`, `alerts`, `status` and `security_events` that has files
(`read_parquet(..., hive_partitioning = true)`, as docs/reports.md tells
analysts to), runs each SQL in DuckDB and checks that it returns the same
columns and rows in the same order: integers, strings, booleans and nulls
equal, timestamps and dates the same instant or day, floats within 0.01
(the SQL rounds to two or three decimals, and the engines may add in
another order).

Prints one line per section and exits 0 when all agree, 1 on any
difference, 2 on bad usage. Needs `pip install duckdb`.
"""

import datetime as dt
import glob
import json
import sys

import duckdb


def same(want, got):
    """Whether DataFusion's JSON value `want` equals DuckDB's value `got`."""
    if want is None or got is None:
        return want is None and got is None
    if isinstance(got, bool) or isinstance(want, bool):
        return want is got
    if isinstance(got, dt.datetime):
        w = dt.datetime.fromisoformat(want.replace("Z", "+00:00"))
        return w == got
    if isinstance(got, dt.date):
        return want == got.isoformat()
    if isinstance(got, float) or isinstance(want, float):
        return abs(float(want) - float(got)) <= 0.01 + 1e-9 * abs(float(got))
    if isinstance(got, int):
        return want == got
    return want == str(got)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, spec = sys.argv[1], sys.argv[2]
    with open(spec) as f:
        sections = json.load(f)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for ds in ("aggregates", "alerts", "status", "security_events"):
        if not glob.glob(f"{root}/{ds}/*/*.parquet"):
            continue
        con.execute(
            f"CREATE VIEW {ds} AS SELECT * FROM "
            f"read_parquet('{root}/{ds}/*/*.parquet', hive_partitioning = true)"
        )
    failed = 0
    for s in sections:
        try:
            cur = con.execute(s["sql"])
        except duckdb.Error as e:
            print(f"{s['name']}: DuckDB refused the SQL: {e}")
            failed += 1
            continue
        columns = [d[0] for d in cur.description]
        got = cur.fetchall()
        want = s["rows"]
        problems = []
        if s["columns"] != columns:
            problems.append(f"columns {columns} in DuckDB, {s['columns']} in DataFusion")
        if len(got) != len(want):
            problems.append(f"{len(got)} rows in DuckDB, {len(want)} in DataFusion")
        for i, (w, g) in enumerate(zip(want, got)):
            for c, v in zip(columns, g):
                if not same(w.get(c), v):
                    problems.append(f"row {i} {c}: DataFusion {w.get(c)!r}, DuckDB {v!r}")
                    break
            if len(problems) > 3:
                break
        if problems:
            failed += 1
            print(f"{s['name']}: " + "; ".join(problems))
        else:
            print(f"{s['name']}: {len(got)} rows agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
