#!/usr/bin/env python3
"""Helper for scripts/bench: the DuckDB, ConnectorX and ADBC runners, and the report.

Subcommands (each prints one line `rows=N inner=SECONDS` on success, exits non-zero on failure;
ENGINE is postgres (the default) or mysql):
  duckdb-ext [ENGINE]                print the path of the postgres_scanner / mysql_scanner
                                     extension matching duckdb
  duckdb TABLE OUT.parquet [ENGINE]  DuckDB ATTACH … (TYPE postgres|mysql) + COPY … TO parquet
                                     (zstd)
  cx TABLE OUT.parquet [N [ENGINE]]  ConnectorX read_sql(return_type='arrow') + pyarrow write
                                     (zstd), partitioned on id into N parts when N > 1; N =
                                     stream: return_type='arrow_stream' (CX_BATCH_SIZE rows per
                                     batch), each batch written as it comes by a ParquetWriter
  adbc TABLE OUT.parquet             ADBC (adbc_driver_postgresql.dbapi): cursor
                                     fetch_record_batch(), a RecordBatchReader written batch by
                                     batch by a ParquetWriter (zstd); PostgreSQL only
  sluice-rows OUTDIR                 rows recorded in the sluice manifest(s) under OUTDIR
  parquet-rows FILE…                 rows in the Parquet footers of FILE… (needs pyarrow)
  cpu-snapshot PATH                  save every process's CPU ticks to PATH
  cpu-delta PATH [PID…]              CPU-s since the snapshot: `OTHER SERVER ELSEWHERE`: the
                                     server's processes (BENCH_SERVER_COMMS) apart from the
                                     others, less PostgreSQL backends of other databases
                                     (ELSEWHERE)
  s3-bucket / s3-rows / s3-empty ENDPOINT BUCKET   the bucket of the S3 runs (boto3)
  report RESULTS.tsv                 print the result tables and target ratios (stdlib only)

The runners only import their libraries when called, so `report` works with any python3.
"""
import glob
import json
import os
import re
import sys
import time

DB = "sluice_bench"
PG_DSN = f"dbname={DB} host=127.0.0.1 port=5432 user=postgres"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
MY_DSN = f"host=127.0.0.1 user=root port=3306 database={DB}"
MY_URL = f"mysql://root@127.0.0.1:3306/{DB}"
ENGINES = {
    # engine: (extension pip modules, ATTACH DSN, ATTACH type, schema in DuckDB, ConnectorX URL)
    "postgres": (("duckdb_extension_postgres_scanner", "duckdb_extension_postgres"), PG_DSN, "postgres",
                 "public", PG_URL),
    "mysql": (("duckdb_extension_mysql_scanner", "duckdb_extension_mysql"), MY_DSN, "mysql", DB, MY_URL),
}
# Rows per batch of ConnectorX's arrow_stream; each batch becomes one Parquet row group.
CX_BATCH_SIZE = int(os.environ.get("CX_BATCH_SIZE", "65536"))
# The extension comes from a local file; never let DuckDB try to download anything.
DUCK_CONFIG = {
    "allow_unsigned_extensions": "true",
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
}

# ConnectorX cannot read numeric(38,10) (its decimal type holds 28 digits): cast to text.
# MariaDB's decimal(38,10) values here have at most 23 digits: ConnectorX reads them as they are.
CX_QUERIES = {
    ("postgres", "wide"): "SELECT id, i, amount, big::text AS big, name, note, flag, d, ts, tstz, u, doc, f FROM wide",
}


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def duckdb_ext_path(engine="postgres"):
    """The postgres_scanner / mysql_scanner .duckdb_extension shipped by a pip package, for this duckdb."""
    import duckdb  # noqa: PLC0415

    want = "v" + duckdb.__version__
    name = ENGINES[engine][2] + "_scanner"
    candidates = []
    for mod in ENGINES[engine][0]:
        try:
            pkg = __import__(mod)
        except ImportError:
            continue
        base = os.path.dirname(pkg.__file__)
        candidates += glob.glob(os.path.join(base, "**", "*.duckdb_extension"), recursive=True)
    if not candidates:
        raise RuntimeError(f"no {name} .duckdb_extension file in the venv")
    for path in candidates:
        if f"{os.sep}{want}{os.sep}" in path:
            return path
    found = sorted({os.path.basename(os.path.dirname(p)) for p in candidates})
    raise RuntimeError(f"extension built for {', '.join(found)}, duckdb is {want}")


def cmd_duckdb_ext(engine="postgres"):
    try:
        path = duckdb_ext_path(engine)
        import duckdb  # noqa: PLC0415

        con = duckdb.connect(config=DUCK_CONFIG)
        con.execute(f"LOAD '{path}'")
        # The maintenance database: sluice_bench may not exist yet when this check runs.
        if engine == "mysql":
            con.execute(f"ATTACH '{MY_DSN.replace(f'database={DB}', 'database=mysql')}' AS m (TYPE mysql, READ_ONLY)")
            con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'm'").fetchall()
        else:
            dsn = PG_DSN.replace(f"dbname={DB}", "dbname=postgres")
            con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres, READ_ONLY)")
            con.execute("SELECT 1 FROM pg.pg_catalog.pg_class LIMIT 1").fetchall()
    except Exception as e:  # noqa: BLE001 - the reason is the whole point
        die(" ".join(str(e).split())[:160])
    print(path)


def cmd_duckdb(table, out, engine="postgres"):
    import duckdb  # noqa: PLC0415

    _, dsn, kind, schema, _ = ENGINES[engine]
    t0 = time.perf_counter()
    con = duckdb.connect(config=DUCK_CONFIG)
    con.execute(f"LOAD '{duckdb_ext_path(engine)}'")
    con.execute(f"ATTACH '{dsn}' AS src (TYPE {kind}, READ_ONLY)")
    res = con.execute(
        f"COPY (SELECT * FROM src.{schema}.{table}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    ).fetchall()
    rows = res[0][0] if res else -1
    print(f"rows={rows} inner={time.perf_counter() - t0:.3f}")


def cmd_cx(table, out, parts="1", engine="postgres"):
    import connectorx as cx  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    url = ENGINES[engine][4]
    t0 = time.perf_counter()
    query = CX_QUERIES.get((engine, table), f"SELECT * FROM {table}")
    if parts == "stream":
        reader = cx.read_sql(url, query, return_type="arrow_stream", batch_size=CX_BATCH_SIZE)
        rows = 0
        with pq.ParquetWriter(out, reader.schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)
                rows += batch.num_rows
        print(f"rows={rows} inner={time.perf_counter() - t0:.3f}")
        return
    parts = int(parts)
    kw = {"partition_on": "id", "partition_num": parts} if parts > 1 else {}
    tbl = cx.read_sql(url, query, return_type="arrow", **kw)
    # connectorx >= 0.4 may hand back a RecordBatchReader-like object; normalise to a Table.
    if not hasattr(tbl, "num_rows") and hasattr(tbl, "read_all"):
        tbl = tbl.read_all()
    pq.write_table(tbl, out, compression="zstd")
    print(f"rows={tbl.num_rows} inner={time.perf_counter() - t0:.3f}")


def cmd_adbc(table, out):
    """ADBC's PostgreSQL driver (it reads with COPY … (FORMAT binary)), streamed to Parquet.

    Types as the driver hands them over (adbc-driver-postgresql 1.x): numeric is an
    arrow.opaque extension over string (Parquet String, not decimal), uuid is arrow.uuid
    (Parquet UUID), jsonb is arrow.json (Parquet JSON string), timestamptz is timestamp[us, UTC].
    Each batch (the driver's default size hint, about 16 MB) becomes one row group.
    """
    import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    t0 = time.perf_counter()
    rows = 0
    with adbc.connect(PG_URL) as con, con.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")
        reader = cur.fetch_record_batch()
        with pq.ParquetWriter(out, reader.schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)
                rows += batch.num_rows
    print(f"rows={rows} inner={time.perf_counter() - t0:.3f}")


def cmd_parquet_rows(*paths):
    import pyarrow.parquet as pq  # noqa: PLC0415

    if not paths:
        die("no Parquet file")
    print(f"rows={sum(pq.ParquetFile(p).metadata.num_rows for p in paths)}")


def cmd_sluice_rows(outdir):
    manifests = glob.glob(os.path.join(outdir, "**", "_manifests", "*.json"), recursive=True)
    if not manifests:
        die("no manifest written")
    rows = 0
    for m in manifests:
        with open(m) as f:
            rows += int(json.load(f)["rows"])
    print(f"rows={rows}")


# --- CPU used by the server and by other processes ---------------------------------------------
# Sums utime+stime+cutime+cstime of every process but the bench's own, in parts: the database
# server's processes (named by BENCH_SERVER_COMMS, default postgres; mariadbd for MariaDB), and
# all others. A process that starts and ends between the two snapshots is still counted through
# its parent's cutime/cstime (a PostgreSQL backend through the postmaster's); one that ends
# after living through the first has what it had used by then taken off (its parent's cutime
# gets its whole life). The server's part is a figure of its own (what the extraction cost the
# source); the others' flags figures taken while something else (a build, tests) was running.
# PostgreSQL client backends of another database than the bench's (other people's tests on the
# same server) are left out of the server's part and reported apart when they are alive at the
# second snapshot; one that starts and ends between the snapshots is counted as the server.
# MariaDB is one process: its figure is the whole server's.
PG_BACKEND = re.compile(r"^postgres: (?:[^ :]+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def other_db_backend(pid):
    """True for a PostgreSQL client backend connected to another database than the bench's."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    m = PG_BACKEND.match(title)
    return bool(m) and m.group(1) != DB


def cpu_snapshot():
    ticks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is state (field 3), fields[1] ppid (field 4); utime..cstime are fields
        # 14..17; starttime is field 22
        t = sum(int(x) for x in fields[11:15])
        if comm == "postgres" and other_db_backend(pid):
            comm = "postgres (other database)"
        ticks[f"{pid}:{fields[19]}"] = (comm, t, fields[1])
    return ticks


def cmd_cpu_snapshot(path):
    with open(path, "w") as f:
        json.dump(cpu_snapshot(), f)


def cpu_delta(path, exclude_pids):
    """(other, server, server_elsewhere) CPU-seconds since the snapshot at PATH: everything else,
    the database server for the bench, and PostgreSQL backends of other databases."""
    with open(path) as f:
        before = json.load(f)
    after = cpu_snapshot()
    exclude = set(exclude_pids) | {str(os.getpid()), str(os.getppid())}
    hz = os.sysconf("SC_CLK_TCK")
    servers = set(os.environ.get("BENCH_SERVER_COMMS", "postgres").split())
    # Backends of other databases are set apart only when PostgreSQL is the server measured;
    # in a MariaDB measurement all of PostgreSQL is another process.
    apart = "postgres" in servers
    other = server = elsewhere = 0
    for key, (comm, t, _) in after.items():
        pid = key.split(":")[0]
        if pid in exclude:
            continue
        was_comm, was_t, _ = before.get(key, (comm, 0, None))
        d = t - was_t
        if apart and ("(other database)" in comm or "(other database)" in was_comm):
            elsewhere += d
        elif comm in servers:
            server += d
        else:
            other += d
    # A process that ended meanwhile hands its whole life's CPU to its parent's cutime/cstime
    # (a PostgreSQL backend to the postmaster, a compiler to cargo): take off what it had used
    # before the first snapshot, so that only the time since counts. Not for the children of
    # the bench itself (their parent is not counted).
    for key, (comm, t, ppid) in before.items():
        if key in after or ppid in exclude or key.split(":")[0] in exclude:
            continue
        if comm in servers or (apart and "(other database)" in comm):
            server -= t  # reaped by the postmaster, which is counted as the server
        else:
            other -= t
    return max(other, 0) / hz, max(server, 0) / hz, max(elsewhere, 0) / hz


def cmd_cpu_delta(path, *exclude_pids):
    """Prints `OTHER SERVER ELSEWHERE` (CPU-s)."""
    print(" ".join(f"{v:.2f}" for v in cpu_delta(path, exclude_pids)))


def cmd_cpu_others(path, *exclude_pids):
    print(f"{cpu_delta(path, exclude_pids)[0]:.2f}")


# --- report ---------------------------------------------------------------------------------

TARGETS = {
    "speed_vs_duckdb": 0.90,  # PostgreSQL: sluice best wall / DuckDB wall
    "cpu_vs_duckdb": 1.00,  # PostgreSQL: client CPU-s of that sluice row / DuckDB's
    "speed_vs_copy": 1.10,  # PostgreSQL: sluice 1-chunk wall / psql binary COPY wall
    "rss_mb": 256.0,  # sluice peak RSS (both engines)
    "narrow_rows_s": 2_000_000.0,  # narrow-table sluice rows/s (best)
    "speed_vs_cx_best": 0.90,  # MariaDB: sluice best wall / the fastest ConnectorX mode's wall
    "s3_rss_growth": 1.2,  # S3 peak RSS of the whole wide table / of half its rows
    "bytes_per_row_tolerance": 1.01,  # sluice output bytes/row <= baseline x this
}
CX_MODES = ("ConnectorX", "ConnectorX 2 partitions", "ConnectorX streaming")
# Sluice's output bytes per row at the last full runs in README.md (2026-11-22, the same
# deterministic data): (engine, table) -> (bytes, rows). Per row, so that other sizes compare
# approximately (compression varies a little with the size).
BYTES_BASELINE = {
    ("postgres", "wide"): (302.8e6, 5_000_000),
    ("postgres", "narrow"): (123.5e6, 20_000_000),
    ("mysql", "wide"): (302.8e6, 5_000_000),
    ("mysql", "narrow"): (186.7e6, 20_000_000),
}


def fmt_num(v, digits=2):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def table_text(headers, rows, right):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    out = []
    for r in [headers, ["-" * w for w in widths]] + rows:
        cells = []
        for i, c in enumerate(r):
            c = str(c)
            cells.append(c.rjust(widths[i]) if right[i] else c.ljust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def label(engine, table):
    """How a table is named in the report: PostgreSQL's plainly (as before), MariaDB's prefixed."""
    return table if engine == "postgres" else f"{ENGINE_NAMES.get(engine, engine)} {table}"


ENGINE_NAMES = {"postgres": "PostgreSQL", "mysql": "MariaDB"}


def cmd_report(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 9:  # the older 8-column form: PostgreSQL
                fields = ["postgres"] + fields
            # engine … note, then (since the CPU columns) client CPU-s and server CPU-s; an
            # older line without them reads as "-".
            engine, tbl, rows, tool, status, wall, rss_kb, out_bytes, note, cpu, srv = (fields + [""] * 11)[:11]
            recs.append(
                {
                    "engine": engine,
                    "table": tbl,
                    "label": label(engine, tbl),
                    "rows": int(rows),
                    "tool": tool,
                    "ok": status == "ok",
                    "status": status,
                    "wall": float(wall) if wall else None,
                    "rss_mb": int(rss_kb) / 1024 if rss_kb else None,
                    "out_bytes": int(out_bytes) if out_bytes else None,
                    "out_mb": int(out_bytes) / 1e6 if out_bytes else None,
                    "note": note,
                    "cpu": float(cpu) if cpu else None,
                    "server_cpu": float(srv) if srv else None,
                }
            )

    tables = []  # labels, in order of appearance
    engine_of = {}
    for r in recs:
        if r["label"] not in tables:
            tables.append(r["label"])
            engine_of[r["label"]] = r["engine"]

    for t in tables:
        rs = [r for r in recs if r["label"] == t]
        n = rs[0]["rows"]
        print(f"\n{t}: {n:,} rows")
        body = []
        for r in rs:
            if r["ok"]:
                body.append(
                    [
                        r["tool"],
                        fmt_num(r["wall"]),
                        fmt_num(n / r["wall"] if r["wall"] else None, 0),
                        fmt_num(r["cpu"]),
                        fmt_num(r["cpu"] / (n / 1e6) if r["cpu"] is not None else None),
                        fmt_num(r["server_cpu"]),
                        fmt_num(r["rss_mb"], 0),
                        fmt_num(r["out_mb"], 1) if r["out_mb"] is not None else "-",
                        r["note"],
                    ]
                )
            else:
                body.append([r["tool"], "-", "-", "-", "-", "-", "-", "-", f"{r['status']} ({r['note']})"])
        print(
            table_text(
                ["tool", "wall s", "rows/s", "client CPU-s", "CPU-s/M rows", "server CPU-s", "peak RSS MB",
                 "output MB", "note"],
                body,
                [False, True, True, True, True, True, True, True, False],
            )
        )

    def get(t, tool):
        for r in recs:
            if r["label"] == t and r["tool"] == tool and r["ok"]:
                return r
        return None

    def sluice_runs(t):
        return [r for r in recs if r["label"] == t and r["tool"].startswith("sluice") and r["ok"]]

    def best_sluice(t):
        return min(sluice_runs(t), key=lambda r: r["wall"], default=None)

    def ratio(a, b):
        return a / b if a is not None and b else None

    print("\nTargets (same run)")
    body = []

    def verdict(value, target, le):
        if value is None:
            return "n/a"
        return "PASS" if (value <= target if le else value >= target) else "MISS"

    def missing(best, ref, what):
        return "no sluice figure" if not best else f"no {what} figure"

    def rss_rows(ts):
        for t in ts:
            runs = sluice_runs(t)
            v = max((r["rss_mb"] for r in runs), default=None)
            body.append(
                [f"{t}: sluice peak RSS MB", fmt_num(v, 0), "<= 256", verdict(v, TARGETS["rss_mb"], True),
                 "max over sluice runs" if runs else "no sluice figure"]
            )

    def bytes_rows(ts):
        # Output no larger than at the baseline: the largest sluice output per row, against the
        # README's last full run of the same table (+1 %).
        for t in ts:
            runs = [r for r in sluice_runs(t) if r["out_bytes"]]
            worst = max(runs, key=lambda r: r["out_bytes"] / r["rows"], default=None)
            v = worst["out_bytes"] / worst["rows"] if worst else None
            base = BYTES_BASELINE.get((engine_of[t], t.split()[-1]))
            if base is None:
                continue
            base_bpr = base[0] / base[1]
            limit = base_bpr * TARGETS["bytes_per_row_tolerance"]
            rows = next((r["rows"] for r in recs if r["label"] == t), None)
            note = (f"{worst['tool']}; " if worst else "no sluice figure; ") + \
                f"baseline {base_bpr:.2f} B/row +1%: {base[0] / 1e6:.1f} MB / {base[1]:,} rows (README's last full run)"
            if rows != base[1]:
                note += "; approximate at another size"
            body.append([f"{t}: sluice output bytes/row", fmt_num(v), f"<= {limit:.2f}",
                         verdict(v, limit, True), note])

    pg = [t for t in tables if engine_of[t] == "postgres"]
    for t in pg:
        best, duck = best_sluice(t), get(t, "DuckDB")
        v = ratio(best and best["wall"], duck and duck["wall"])
        body.append(
            [f"{t}: sluice best / DuckDB wall", fmt_num(v), "<= 0.90", verdict(v, TARGETS["speed_vs_duckdb"], True),
             best["tool"] if v is not None else missing(best, duck, "DuckDB")]
        )
    for t in pg:
        best, duck = best_sluice(t), get(t, "DuckDB")
        v = ratio(best and best["cpu"], duck and duck["cpu"])
        body.append(
            [f"{t}: sluice / DuckDB client CPU-s", fmt_num(v), "<= 1.00", verdict(v, TARGETS["cpu_vs_duckdb"], True),
             f"{best['tool']} (the best sluice wall)" if v is not None else missing(best, duck, "DuckDB CPU")]
        )
    for t in pg:
        one = get(t, "sluice 1 chunk")
        copy = get(t, "psql binary COPY")
        v = ratio(one and one["wall"], copy and copy["wall"])
        body.append(
            [f"{t}: sluice 1 chunk / psql binary COPY", fmt_num(v), "<= 1.10",
             verdict(v, TARGETS["speed_vs_copy"], True), "" if v is not None else "a figure is missing"]
        )
    rss_rows(pg)
    for t in pg:
        s3 = [r for r in recs if r["label"] == t and r["tool"].startswith("S3:") and r["ok"]]
        for r in s3:
            mb = r.get("out_mb")
            note = f"{mb:.0f} MB of Parquet through 5 MiB parts" if mb else ""
            body.append([f"{t}: sluice -> S3 peak RSS MB" + (" (half the rows)" if "half" in r["tool"] else ""),
                         fmt_num(r["rss_mb"], 0), "<= 256", verdict(r["rss_mb"], TARGETS["rss_mb"], True), note])
        # Bounded memory: twice the data through the same parts, about the same peak.
        half = next((r for r in s3 if "half" in r["tool"]), None)
        whole = next((r for r in s3 if "half" not in r["tool"]), None)
        if half and whole and half["rss_mb"]:
            v = whole["rss_mb"] / half["rss_mb"]
            body.append([f"{t}: S3 peak RSS, whole / half the rows", fmt_num(v), "<= 1.20",
                         verdict(v, TARGETS["s3_rss_growth"], True), "2x the Parquet, same part size"])
    bytes_rows(pg)
    if "narrow" in pg:
        best = best_sluice("narrow")
        v = best["rows"] / best["wall"] if best and best["wall"] > 0 else None
        body.append(
            ["narrow: sluice rows/s", fmt_num(v, 0), ">= 2,000,000", verdict(v, TARGETS["narrow_rows_s"], False),
             best["tool"] if best else "no sluice figure"]
        )

    # MariaDB: sluice against the fastest of ConnectorX's modes (whole table, 2 partitions,
    # streaming), whichever that was in this run.
    my = [t for t in tables if engine_of[t] == "mysql"]
    for t in my:
        best = best_sluice(t)
        cxs = [r for r in (get(t, m) for m in CX_MODES) if r]
        ref = min(cxs, key=lambda r: r["wall"], default=None)
        v = ratio(best and best["wall"], ref and ref["wall"])
        body.append(
            [f"{t}: sluice best / best ConnectorX wall", fmt_num(v), "<= 0.90",
             verdict(v, TARGETS["speed_vs_cx_best"], True),
             f"{best['tool']} vs {ref['tool']}" if v is not None else missing(best, ref, "ConnectorX")]
        )
    rss_rows(my)
    bytes_rows(my)
    print(table_text(["ratio", "value", "target", "verdict", "note"], body, [False, True, True, False, False]))


def s3_client(endpoint):
    import boto3  # moto's venv has it; the bench venv need not

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def s3_objects(s3, bucket):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        yield from page.get("Contents", [])


def cmd_s3_bucket(endpoint, bucket):
    s3_client(endpoint).create_bucket(Bucket=bucket)


def cmd_s3_rows(endpoint, bucket):
    """Rows and Parquet bytes of every run manifest in the bucket."""
    s3 = s3_client(endpoint)
    rows = size = 0
    for obj in s3_objects(s3, bucket):
        if "/_manifests/" in obj["Key"]:
            m = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            rows += m["rows"]
            size += m["bytes"]
    print(f"rows={rows}")
    print(f"bytes={size}")


def cmd_s3_empty(endpoint, bucket):
    s3 = s3_client(endpoint)
    for obj in list(s3_objects(s3, bucket)):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    fn = {
        "duckdb-ext": cmd_duckdb_ext,
        "duckdb": cmd_duckdb,
        "cx": cmd_cx,
        "sluice-rows": cmd_sluice_rows,
        "cpu-snapshot": cmd_cpu_snapshot,
        "cpu-others": cmd_cpu_others,
        "cpu-delta": cmd_cpu_delta,
        "adbc": cmd_adbc,
        "parquet-rows": cmd_parquet_rows,
        "report": cmd_report,
        "s3-bucket": cmd_s3_bucket,
        "s3-rows": cmd_s3_rows,
        "s3-empty": cmd_s3_empty,
    }.get(cmd)
    if fn is None:
        die(f"unknown subcommand {cmd}\n{__doc__}")
    fn(*args)


if __name__ == "__main__":
    main(sys.argv)
