"""`vigil ingest` against DuckDB on a tick-shaped fleet (issue 21 item 4).

Generates a fleet the way real RMM agents send it: every agent ticks every
10 s and sends one `vigil.v1.TelemetryBatch` per tick holding one point of
each of its series, with resends (the same bytes again, a few seconds
later) and late batches (held back 20-150 s; those past the allowed
lateness are late for Vigil). The same samples, in arrival order, are also
written as a Parquet table.

Then, in one run on the same machine, it times:

* `vigil ingest` of the batches file, the whole process (decode, operator
  chain, Parquet output, fsync), wall time and peak RSS;
* DuckDB computing the same one-minute windows (count, sum, min, max, mean,
  last) from the Parquet samples as one batch job: resends dropped, points
  late for Vigil's watermark (the agent's greatest timestamp so far minus
  30 s of allowed lateness, aligned to the window) dropped, windows written
  to Parquet, and the threshold rules' breach runs (`for` consecutive
  windows past `value`, the default rules' cpu, memory and disk rules)
  written as firing events; with one thread and with two.

Rates are samples in the input (every point of every record, resends
included) per second of each; the ratio of Vigil's rate to DuckDB's is the
figure to compare across machines. After the timed runs it checks that
both computed the same windows (row count, total count, total sum).

The fleet is generated once per parameter set into `--work` and reused.

Usage (the python needs `duckdb` and `pyarrow`):

    cargo build --release -p vigil
    VIGIL_PYTHON=/path/to/venv/bin/python benches/tick_vs_duckdb.sh [--agents 10000]

`VIGIL_BIN` (default `$CARGO_TARGET_DIR/release/vigil`, else
`target/release/vigil`) picks the binary.
"""

from __future__ import annotations

import argparse
import heapq
import random
import resource
from array import array
import glob
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

TICK_MS = 10_000
WINDOW_MS = 60_000
LATENESS_MS = 30_000  # Vigil's default `allowed_lateness`
T0 = 1_780_000_020_000  # a window boundary

# (metric, labels as (key, value) pairs sorted by key, canonical labels)
SERIES = [
    ("cpu_pct", [], ""),
    ("mem_pct", [], ""),
    ("disk_used_pct", [("mount", "C:")], "mount=C:"),
    ("disk_used_pct", [("mount", "D:")], "mount=D:"),
    ("net_rx_bytes_per_s", [("iface", "eth0")], "iface=eth0"),
    ("net_tx_bytes_per_s", [("iface", "eth0")], "iface=eth0"),
]

# The default rules' threshold rules on these metrics: name, metric, value, for.
RULES = [
    ("cpu_high", "cpu_pct", 90.0, 5),
    ("cpu_saturated", "cpu_pct", 98.0, 10),
    ("mem_high", "mem_pct", 90.0, 5),
    ("disk_high", "disk_used_pct", 90.0, 3),
    ("disk_critical", "disk_used_pct", 95.0, 3),
]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint6(n: int) -> bytes:
    """The varint of a timestamp of this era (2^35 <= n < 2^42 ms)."""
    return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
                  n >> 21 & 0x7F | 0x80, n >> 28 & 0x7F | 0x80, n >> 35))


def field_bytes(num: int, data: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(data)) + data


def series_prefix(metric: str, labels: list) -> bytes:
    p = field_bytes(1, metric.encode())
    for k, v in labels:
        p += field_bytes(2, field_bytes(1, k.encode()) + field_bytes(2, v.encode()))
    return p


def generate(work: str, agents: int, ticks: int, dup_rate: float, late_rate: float, seed: int):
    """Writes `batches.vpb` (length-delimited batches in arrival order) and
    `samples.parquet` (their points, one row each, with the arrival number
    of their batch) under `work`. Streams tick by tick: a batch is written
    once nothing generated later can arrive before it."""
    os.makedirs(work, exist_ok=True)
    rng = random.Random(seed)
    gauss = rng.gauss
    tenants = [f"tenant-{t:02d}" for t in range(10)]
    names = [f"agent-{a:06d}" for a in range(agents)]
    heads = [field_bytes(1, tenants[a % 10].encode()) + field_bytes(2, names[a].encode())
             for a in range(agents)]
    phase = [rng.randrange(TICK_MS) for _ in range(agents)]
    # per agent: cpu, memory, disk C:, disk D: levels; network scale;
    # the tick range of a cpu episode (4 % of agents) and memory (2 %)
    level = [[rng.uniform(5, 60), rng.uniform(30, 85), rng.uniform(20, 97), rng.uniform(20, 97),
              rng.uniform(1e4, 1e7)] for _ in range(agents)]
    cpu_ep = [rng.random() < 0.04 for _ in range(agents)]
    mem_ep = [rng.random() < 0.02 for _ in range(agents)]
    # Encoded series entries share everything but the timestamp and value:
    # field 6 key and length, metric, labels, packed timestamps key and
    # length (a timestamp of this era is a 6-byte varint).
    pre = []
    for m, ls, _ in SERIES:
        p = series_prefix(m, ls)
        n = len(p) + 2 + 6 + 2 + 8
        pre.append(b"\x32" + varint(n) + p + b"\x1a\x06")
    pack = struct.Struct("<d").pack
    cols = {"tenant": array("i"), "agent": array("i"), "seq": array("Q"), "arrival": array("q"),
            "ts": array("q"), "value": array("d")}
    dicts = {"tenant": pa.array(tenants), "agent": pa.array(names),
             "metric": pa.array(sorted({m for m, _, _ in SERIES})),
             "labels": pa.array(sorted({c for _, _, c in SERIES}))}
    metric_ix = array("i", [dicts["metric"].to_pylist().index(m) for m, _, _ in SERIES])
    label_ix = array("i", [dicts["labels"].to_pylist().index(c) for _, _, c in SERIES])
    schema = pa.schema([
        ("tenant", pa.string()), ("agent", pa.string()), ("seq", pa.uint64()),
        ("arrival", pa.int64()), ("metric", pa.string()), ("labels", pa.string()),
        ("ts", pa.int64()), ("value", pa.float64()),
    ])
    writer = pq.ParquetWriter(os.path.join(work, "samples.parquet"), schema)

    def flush():
        n = len(cols["ts"])
        if n == 0:
            return
        def col(name, typ):
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(cols[name])])
        def dict_col(name, ix):
            return pa.DictionaryArray.from_arrays(
                pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(ix)]), dicts[name]
            ).cast(pa.string())
        reps = n // len(SERIES)
        t = pa.table({
            "tenant": dict_col("tenant", cols["tenant"]), "agent": dict_col("agent", cols["agent"]),
            "seq": col("seq", pa.uint64()), "arrival": col("arrival", pa.int64()),
            "metric": dict_col("metric", metric_ix * reps), "labels": dict_col("labels", label_ix * reps),
            "ts": col("ts", pa.int64()), "value": col("value", pa.float64()),
        }, schema=schema)
        writer.write_table(t)
        for k in cols:
            cols[k] = array(cols[k].typecode)

    small = [varint(i) for i in range(max(ticks + 2, 1 << 14))]
    boot = [varint(1 + a) for a in range(agents)]
    heap = []
    arrival = 0
    batches = 0
    six = len(SERIES)
    with open(os.path.join(work, "batches.vpb"), "wb") as out:
        def emit(until):
            nonlocal arrival
            while heap and heap[0][0] < until:
                _, _, a, seq, ts, vals, rec = heapq.heappop(heap)
                out.write(rec)
                cols["tenant"].extend([a % 10] * six)
                cols["agent"].extend([a] * six)
                cols["seq"].extend([seq] * six)
                cols["arrival"].extend([arrival] * six)
                cols["ts"].extend([ts] * six)
                cols["value"].extend(vals)
                arrival += 1
            if len(cols["ts"]) >= 1_200_000:
                flush()
        order = 0
        for k in range(ticks):
            for a in range(agents):
                ts = T0 + phase[a] + k * TICK_MS
                lv = level[a]
                cpu = lv[0] + gauss(0, 4)
                if cpu_ep[a] and 40 <= k < 130:
                    cpu = 97 + 3 * rng.random()
                mem = lv[1] + gauss(0, 1)
                if mem_ep[a] and k >= 60:
                    mem = 91 + 5 * rng.random()
                lv[2] = min(lv[2] + 0.004 + gauss(0, 0.01), 100.0)
                lv[3] = min(lv[3] + 0.004 + gauss(0, 0.01), 100.0)
                vals = (min(max(cpu, 0.0), 100.0), min(max(mem, 0.0), 100.0), lv[2], lv[3],
                        float(int(lv[4] * rng.random())), float(int(lv[4] * rng.random())))
                if rng.random() < late_rate:
                    sent = ts + rng.randrange(20_000, 150_000)
                else:
                    sent = ts + rng.randrange(2_000)
                seq = k + 1
                tsb = varint6(ts)
                body = bytearray(heads[a])
                body += b"\x18" + small[seq] + b"\x20" + varint6(sent)
                for s in range(six):
                    body += pre[s] + tsb + b"\x22\x08" + pack(vals[s])
                body += b"\x48" + boot[a]
                rec = small[len(body)] + bytes(body)
                heapq.heappush(heap, (sent, order, a, seq, ts, vals, rec))
                order += 1
                batches += 1
                if rng.random() < dup_rate:
                    # a resend: the same bytes again, a little later
                    heapq.heappush(heap, (sent + rng.randrange(1_000, 30_000), order, a, seq, ts, vals, rec))
                    order += 1
                    batches += 1
            emit(T0 + (k + 1) * TICK_MS)
        emit(float("inf"))
    flush()
    writer.close()
    return {"batches": batches, "samples": batches * six}


def duckdb_job(parquet: str, out_dir: str, threads: int) -> dict:
    """The batch job: windows and breach runs from the samples, written to
    Parquet. Returns counts."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    rules = ", ".join(f"('{n}', '{m}', {v}, {f})" for n, m, v, f in RULES)
    con.execute(f"""
        CREATE TEMP TABLE w AS
        WITH s AS (
            -- a resend is the same batch again: keep its first arrival
            SELECT tenant, agent, seq, metric, labels, ts,
                   min(arrival) AS arrival, any_value(value) AS value
            FROM read_parquet('{parquet}')
            GROUP BY tenant, agent, seq, metric, labels, ts
        ), f AS (
            -- the agent's frontier when the batch arrived: its greatest
            -- timestamp before it, minus the lateness, aligned down
            SELECT *, floor((max(ts) OVER (PARTITION BY tenant, agent ORDER BY arrival
                        RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) - {LATENESS_MS})
                        / {WINDOW_MS}) * {WINDOW_MS} AS frontier
            FROM s
        )
        SELECT tenant, agent, metric, labels,
               (ts // {WINDOW_MS}) * {WINDOW_MS} AS window_start,
               count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
               avg(value) AS mean, arg_max(value, ts) AS last, max(ts) AS last_ts
        FROM f
        WHERE frontier IS NULL OR (ts // {WINDOW_MS}) * {WINDOW_MS} + {WINDOW_MS} > frontier
        GROUP BY ALL
    """)
    con.execute(f"COPY w TO '{out_dir}/aggregates.parquet' (FORMAT parquet)")
    con.execute(f"""
        COPY (
            WITH r(rule, metric, value, n) AS (VALUES {rules}),
            b AS (
                SELECT w.tenant, w.agent, w.metric, w.labels, r.rule, r.n, w.window_start,
                       w.window_start - {WINDOW_MS} * row_number() OVER (
                           PARTITION BY w.tenant, w.agent, w.metric, w.labels, r.rule
                           ORDER BY w.window_start) AS run
                FROM w JOIN r ON w.metric = r.metric AND w.mean > r.value
            )
            SELECT tenant, agent, metric, labels, rule,
                   min(window_start) + (any_value(n) - 1) * {WINDOW_MS} AS firing_window
            FROM b GROUP BY tenant, agent, metric, labels, rule, run
            HAVING count(*) >= any_value(n)
        ) TO '{out_dir}/alerts.parquet' (FORMAT parquet)
    """)
    rows, count, total = con.execute("SELECT count(*), sum(count), sum(sum) FROM w").fetchone()
    fires = con.execute(f"SELECT count(*) FROM '{out_dir}/alerts.parquet'").fetchone()[0]
    con.close()
    return {"windows": rows, "points": int(count), "sum": float(total), "fires": fires}


def run_vigil(vigil: str, batches: str, data_dir: str, threads):
    """`vigil ingest`, whole process: (wall seconds, peak RSS bytes, CPU
    seconds)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    t = time.perf_counter()
    cmd = [vigil, "ingest", "--input", batches, "--data-dir", data_dir]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    out = p.stdout.read()
    err = p.stderr.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"vigil ingest failed ({p.returncode}):\n{out}\n{err}")
    # The peak RSS is the one vigil prints (its own VmHWM), not the
    # child's ru_maxrss: Linux carries the pre-exec high-water mark into
    # ru_maxrss, and this process, forked after the DuckDB runs, is
    # gigabytes (a child of it then "peaks" at the parent's size).
    rss = next(
        (float(line.split()[2]) * 1e6 for line in out.splitlines()
         if line.startswith("peak RSS")),
        None,
    )
    if rss is None:
        sys.exit(f"vigil ingest printed no peak RSS line:\n{out}")
    return wall, rss, usage.ru_utime + usage.ru_stime


def vigil_windows(data_dir: str) -> dict:
    files = glob.glob(f"{data_dir}/aggregates/**/*.parquet", recursive=True)
    con = duckdb.connect()
    rows, count, total = con.execute(
        "SELECT count(*), sum(count), sum(sum) FROM read_parquet(?)", [files]).fetchone()
    afiles = glob.glob(f"{data_dir}/alerts/**/*.parquet", recursive=True)
    fires = 0
    if afiles:
        fires = con.execute(
            "SELECT count(*) FROM read_parquet(?) WHERE status = 'firing' AND kind = 'threshold'",
            [afiles]).fetchone()[0]
    con.close()
    return {"windows": rows, "points": int(count), "sum": float(total), "fires": fires}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--ticks", type=int, default=166, help="ticks per agent, one every 10 s")
    ap.add_argument("--dup-rate", type=float, default=0.015)
    ap.add_argument("--late-rate", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the three runs this many times; the best of each is reported")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "vigil-tick-vs-duckdb"))
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    a = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", "target")
    vigil = os.environ.get("VIGIL_BIN", os.path.join(target, "release", "vigil"))
    if not os.path.exists(vigil):
        sys.exit(f"no vigil binary at {vigil} (cargo build --release -p vigil, or set VIGIL_BIN)")

    key = f"a{a.agents}-t{a.ticks}-d{a.dup_rate}-l{a.late_rate}-s{a.seed}"
    work = os.path.join(a.work, key)
    stamp = os.path.join(work, "fleet.json")
    if os.path.exists(stamp):
        with open(stamp) as f:
            fleet = json.load(f)
    else:
        t = time.perf_counter()
        fleet = generate(work, a.agents, a.ticks, a.dup_rate, a.late_rate, a.seed)
        with open(stamp, "w") as f:
            json.dump(fleet, f)
        print(f"generated the fleet in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    batches = os.path.join(work, "batches.vpb")
    parquet = os.path.join(work, "samples.parquet")
    n = fleet["samples"]
    print(f"fleet: {a.agents} agents, {len(SERIES)} series each, a tick every 10 s for "
          f"{a.ticks} ticks: {fleet['batches']:,} batches, {n:,} samples "
          f"({os.path.getsize(batches) / 1e6:.0f} MB of batches, "
          f"{os.path.getsize(parquet) / 1e6:.0f} MB of Parquet samples); duckdb {duckdb.__version__}")

    help_text = subprocess.run([vigil, "ingest", "--help"], capture_output=True, text=True).stdout
    threads = [1, 2] if "--threads" in help_text else [None]
    vigil_data = os.path.join(work, "vigil-data")
    jobs = [
        ("duckdb 1 thread", lambda: timed(lambda: duckdb_job(parquet, os.path.join(work, "duck1"), 1))),
        ("duckdb 2 threads", lambda: timed(lambda: duckdb_job(parquet, os.path.join(work, "duck2"), 2))),
    ]
    for th in threads:
        name = "vigil ingest" if th is None else f"vigil ingest, {th} thread{'s' if th > 1 else ''}"
        jobs.append((name, lambda th=th: run_vigil(vigil, batches, vigil_data, th)))
    best = {}
    for _ in range(a.rounds):
        for name, f in jobs:
            r = f()
            if name not in best or r[0] < best[name][0]:
                best[name] = r
    duck = best["duckdb 2 threads"][1]
    vigil_main = jobs[-1][0]
    print()
    print(f"{'run':<24} {'seconds':>8} {'M samples/s':>12} {'CPU s':>7}   {'vigil / it':>10}")
    for name, (t, _, cpu) in best.items():
        ratio = best[vigil_main][0] and t / best[vigil_main][0]
        print(f"{name:<24} {t:>8.2f} {n / t / 1e6:>12.2f} {cpu:>7.2f}   {ratio:>9.2f}x")
    rss = max(best[name][1] for name, _ in jobs[2:])
    ratio1 = best["duckdb 1 thread"][0] / best[vigil_main][0]
    ratio2 = best["duckdb 2 threads"][0] / best[vigil_main][0]
    print()
    print(f"{vigil_main} / duckdb 1 thread:  {ratio1:.2f}x")
    print(f"{vigil_main} / duckdb 2 threads: {ratio2:.2f}x   (target >= 1.5x)")
    print(f"vigil ingest peak RSS: {rss / 1e6:.0f} MB   (target < 200 MB)")
    v = vigil_windows(vigil_data)
    same = (v["windows"], v["points"]) == (duck["windows"], duck["points"]) and math.isclose(
        v["sum"], duck["sum"], rel_tol=1e-9)
    print(f"windows: vigil {v['windows']:,} ({v['points']:,} points), duckdb {duck['windows']:,} "
          f"({duck['points']:,} points): {'the same' if same else 'DIFFERENT'}")
    print(f"threshold firings: vigil {v['fires']:,}, duckdb breach runs {duck['fires']:,} "
          f"(duckdb has no hysteresis: a run is one firing)")
    if a.json:
        print(json.dumps({
            "samples": n, "batches": fleet["batches"],
            "seconds": {k: b[0] for k, b in best.items()},
            "cpu_seconds": {k: b[2] for k, b in best.items()},
            "ratio_duckdb1": ratio1, "ratio_duckdb2": ratio2, "vigil_peak_rss": rss,
            "same_windows": same,
        }))
    if not same:
        sys.exit(1)


def cpu_self() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def timed(f):
    """(wall seconds, result, CPU seconds) of an in-process job."""
    c = cpu_self()
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r, cpu_self() - c


if __name__ == "__main__":
    main()
