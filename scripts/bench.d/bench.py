#!/usr/bin/env python3
"""Helper for scripts/bench: the DuckDB and ConnectorX runners, and the report.

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
  sluice-rows OUTDIR                 rows recorded in the sluice manifest(s) under OUTDIR
  report RESULTS.tsv                 print the result tables and target ratios (stdlib only)

The runners only import their libraries when called, so `report` works with any python3.
"""
import glob
import json
import os
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


def cmd_sluice_rows(outdir):
    manifests = glob.glob(os.path.join(outdir, "**", "_manifests", "*.json"), recursive=True)
    if not manifests:
        die("no manifest written")
    rows = 0
    for m in manifests:
        with open(m) as f:
            rows += int(json.load(f)["rows"])
    print(f"rows={rows}")


# --- CPU used by other processes ---------------------------------------------------------------
# Sums utime+stime+cutime+cstime of every process except the database server's (named by
# BENCH_SERVER_COMMS, default postgres; mariadbd for MariaDB) and the bench's own: a
# process that starts and ends between two snapshots is still counted through its parent's
# cutime/cstime. Used to flag figures taken while something else (a build, tests) was running.


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
        # fields[0] is state (field 3); utime..cstime are fields 14..17; starttime is field 22
        t = sum(int(x) for x in fields[11:15])
        ticks[f"{pid}:{fields[19]}"] = (comm, t)
    return ticks


def cmd_cpu_snapshot(path):
    with open(path, "w") as f:
        json.dump(cpu_snapshot(), f)


def cmd_cpu_others(path, *exclude_pids):
    with open(path) as f:
        before = json.load(f)
    after = cpu_snapshot()
    exclude = set(exclude_pids) | {str(os.getpid()), str(os.getppid())}
    hz = os.sysconf("SC_CLK_TCK")
    servers = set(os.environ.get("BENCH_SERVER_COMMS", "postgres").split())
    other = 0
    for key, (comm, t) in after.items():
        pid = key.split(":")[0]
        if comm in servers or pid in exclude:
            continue
        other += t - before.get(key, (comm, 0))[1]
    print(f"{max(other, 0) / hz:.2f}")


# --- report ---------------------------------------------------------------------------------

TARGETS = {
    "speed_vs_duckdb": 1.0,  # sluice best wall / DuckDB wall
    "speed_vs_copy": 1.25,  # sluice 1-chunk wall / psql binary COPY wall
    "rss_mb": 256.0,  # sluice peak RSS (both engines)
    "narrow_rows_s": 2_000_000.0,  # narrow-table sluice rows/s (best)
    "speed_vs_cx_stream": 1.0,  # MariaDB: sluice best wall / ConnectorX streaming wall
    "s3_rss_growth": 1.2,  # S3 peak RSS of the whole wide table / of its first half
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
            engine, tbl, rows, tool, status, wall, rss_kb, out_bytes, note = (fields + [""] * 9)[:9]
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
                    "out_mb": int(out_bytes) / 1e6 if out_bytes else None,
                    "note": note,
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
                        fmt_num(r["rss_mb"], 0),
                        fmt_num(r["out_mb"], 1) if r["out_mb"] is not None else "-",
                        r["note"],
                    ]
                )
            else:
                body.append([r["tool"], "-", "-", "-", "-", f"{r['status']} ({r['note']})"])
        print(
            table_text(
                ["tool", "wall s", "rows/s", "peak RSS MB", "output MB", "note"],
                body,
                [False, True, True, True, True, False],
            )
        )

    def get(t, tool):
        for r in recs:
            if r["label"] == t and r["tool"] == tool and r["ok"]:
                return r
        return None

    def sluice_runs(t):
        return [r for r in recs if r["label"] == t and r["tool"].startswith("sluice") and r["ok"]]

    print("\nTargets (same run)")
    body = []

    def verdict(value, target, le):
        if value is None:
            return "n/a"
        return "PASS" if (value <= target if le else value >= target) else "MISS"

    def rss_rows(ts):
        for t in ts:
            runs = sluice_runs(t)
            v = max((r["rss_mb"] for r in runs), default=None)
            body.append(
                [f"{t}: sluice peak RSS MB", fmt_num(v, 0), "<= 256", verdict(v, TARGETS["rss_mb"], True),
                 "max over sluice runs" if runs else "no sluice figure"]
            )

    pg = [t for t in tables if engine_of[t] == "postgres"]
    for t in pg:
        best = min(sluice_runs(t), key=lambda r: r["wall"], default=None)
        duck = get(t, "DuckDB")
        v = best["wall"] / duck["wall"] if best and duck and duck["wall"] > 0 else None
        body.append(
            [f"{t}: sluice best / DuckDB wall", fmt_num(v), "<= 1.00", verdict(v, TARGETS["speed_vs_duckdb"], True),
             best["tool"] if v is not None else "no sluice figure" if not best else "no DuckDB figure"]
        )
    for t in pg:
        one = get(t, "sluice 1 chunk")
        copy = get(t, "psql binary COPY")
        v = one["wall"] / copy["wall"] if one and copy and copy["wall"] > 0 else None
        body.append(
            [f"{t}: sluice 1 chunk / psql binary COPY", fmt_num(v), "<= 1.25",
             verdict(v, TARGETS["speed_vs_copy"], True), "" if v is not None else "a figure is missing"]
        )
    rss_rows(pg)
    for t in pg:
        s3 = [r for r in recs if r["label"] == t and r["tool"].startswith("S3:") and r["ok"]]
        for r in s3:
            mb = r.get("out_mb")
            note = f"{mb:.0f} MB of Parquet through 5 MiB parts" if mb else ""
            body.append([f"{t}: sluice -> S3 peak RSS MB" + (" (first half)" if "half" in r["tool"] else ""),
                         fmt_num(r["rss_mb"], 0), "<= 256", verdict(r["rss_mb"], TARGETS["rss_mb"], True), note])
        # Bounded memory: twice the data through the same parts, about the same peak.
        half = next((r for r in s3 if "half" in r["tool"]), None)
        whole = next((r for r in s3 if "half" not in r["tool"]), None)
        if half and whole and half["rss_mb"]:
            v = whole["rss_mb"] / half["rss_mb"]
            body.append([f"{t}: S3 peak RSS, whole / first half", fmt_num(v), "<= 1.20",
                         verdict(v, TARGETS["s3_rss_growth"], True), "2x the Parquet, same part size"])
    if "narrow" in pg:
        best = min(sluice_runs("narrow"), key=lambda r: r["wall"], default=None)
        v = best["rows"] / best["wall"] if best and best["wall"] > 0 else None
        body.append(
            ["narrow: sluice rows/s", fmt_num(v, 0), ">= 2,000,000", verdict(v, TARGETS["narrow_rows_s"], False),
             best["tool"] if best else "no sluice figure"]
        )

    # MariaDB: sluice against ConnectorX's streaming mode (the bounded-memory way to use it);
    # without a streaming figure, against ConnectorX's best, and the note says so.
    my = [t for t in tables if engine_of[t] == "mysql"]
    for t in my:
        best = min(sluice_runs(t), key=lambda r: r["wall"], default=None)
        ref, what = get(t, "ConnectorX streaming"), "ConnectorX streaming"
        if ref is None:
            cxs = [r for r in recs if r["label"] == t and r["tool"].startswith("ConnectorX") and r["ok"]]
            ref = min(cxs, key=lambda r: r["wall"], default=None)
            what = f"no streaming figure: vs {ref['tool']}" if ref else ""
        v = best["wall"] / ref["wall"] if best and ref and ref["wall"] > 0 else None
        note = (f"{best['tool']}; {what}" if what != "ConnectorX streaming" else best["tool"]) if v is not None \
            else "no sluice figure" if not best else "no ConnectorX figure"
        body.append(
            [f"{t}: sluice best / ConnectorX streaming wall", fmt_num(v), "<= 1.00",
             verdict(v, TARGETS["speed_vs_cx_stream"], True), note]
        )
    rss_rows(my)
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
