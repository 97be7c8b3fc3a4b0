#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ from the repository's
real-shape inputs: tests/fixtures/ (external function requests, SQL API answers, Lambda
events), the example configurations (infra/config/*.yaml, the README's YAML blocks), and small
valid PostgreSQL binary COPY streams and MySQL rows built here in the layouts the targets read
(see the comments at the top of fuzz/fuzz_targets/pg_copy_binary.rs and mysql_rows.rs).

Run from the repository root: python3 fuzz/seeds/generate.py (scripts/fuzz does)."""

import json
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def write(target, name, data):
    directory = os.path.join(SEEDS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def read(*path):
    with open(os.path.join(ROOT, *path), "rb") as f:
        return f.read()


# --- configuration: YAML files and README blocks -------------------------------------------

def config_texts():
    texts = []
    config_dir = os.path.join(ROOT, "infra", "config")
    for name in sorted(os.listdir(config_dir)):
        if name.endswith((".yaml", ".yml")):
            texts.append((name, read("infra", "config", name).decode()))
    readme = read("README.md").decode()
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
        if "sources:" in block or "tables:" in block:
            texts.append((f"readme_{i}.yaml", block))
    texts.append(("mysql_incremental.yaml", """sources:
  - name: app
    engine: mysql
    connection:
      host: 127.0.0.1
      port: 3306
      user: root
      database: app
tables:
  - source: app
    table: events
    primary_key: [id]
    load: {mode: incremental, cursor: id, lookback: 100}
    partition: {column: id, chunks: 4}
    column_types: {flag: boolean, amount: "decimal(12,2)", legacy: string}
    invalid_dates: fail
    where: "kind <> 'test' and (id > 0)"
"""))
    return texts


def config_seeds():
    try:
        import yaml
    except ImportError:
        yaml = None
    for name, text in config_texts():
        write("config_yaml", name, text)
        if yaml is None:
            continue
        try:
            model = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not isinstance(model, dict):
            continue
        sources, tables = [], []
        for i, source in enumerate(model.get("sources") or []):
            item = dict(source)
            item.update(sk=source.get("name", ""), ordinal=i)
            sources.append(item)
        for i, table in enumerate(model.get("tables") or []):
            item = dict(table)
            item.update(sk=f"{table.get('source', '')}/{table.get('table', '')}", ordinal=i)
            tables.append(item)
        items = {"sources": sources, "tables": tables}
        write("config_item", name.rsplit(".", 1)[0] + ".json",
              json.dumps(items, indent=1, default=str))


# --- external function requests: API Gateway events ----------------------------------------

def external_function_seeds():
    directory = os.path.join(FIXTURES, "external_function")
    template = json.loads(read("tests", "fixtures", "external_function", "apigw_rest_event_post.json"))
    write("external_function_request", "apigw_rest_event_post.json",
          read("tests", "fixtures", "external_function", "apigw_rest_event_post.json"))
    for name in sorted(os.listdir(directory)):
        if name.startswith("apigw"):
            continue
        request = json.loads(read("tests", "fixtures", "external_function", name))
        event = dict(template)
        event["httpMethod"] = request.get("method", "POST")
        event["path"] = request.get("path", "/ingest")
        headers = dict(request.get("headers") or {})
        event["headers"] = headers
        event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        body = request.get("body")
        event["body"] = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        event["isBase64Encoded"] = False
        write("external_function_request", "apigw_" + name, json.dumps(event, indent=1))
    # A status batch and an ingest_async one, on the same event.
    for path, body in [
        ("/prod/status", {"data": [[0, "01HZX3V9J5Q8N2M4K6P7R8S9T0"], [1, 42]]}),
        ("/prod/ingest_async", {"data": [[0, "shop", "public.orders", {"mode": "full"}], [1, "shop"]]}),
    ]:
        event = dict(template)
        event["path"] = path
        event["body"] = json.dumps(body)
        write("external_function_request", "apigw" + path.replace("/", "_") + ".json",
              json.dumps(event, indent=1))
    for name in sorted(os.listdir(os.path.join(FIXTURES, "lambda"))):
        write("external_function_request", "lambda_" + name, read("tests", "fixtures", "lambda", name))


# --- SQL API answers: a status byte, then the body -------------------------------------------

STATUSES = [200, 202, 400, 401, 403, 404, 408, 422, 429, 500, 503, 302]


def sql_api_seeds():
    for name in sorted(os.listdir(os.path.join(FIXTURES, "sql_api"))):
        status = int(name.split("_", 1)[0])
        write("sql_api_response", name, bytes([STATUSES.index(status)]) + read("tests", "fixtures", "sql_api", name))
    columns = [
        ("N", "fixed", 38, 4), ("F", "real", None, None), ("B", "boolean", None, None),
        ("D", "date", None, None), ("T", "time", None, 9), ("NTZ", "timestamp_ntz", None, 9),
        ("LTZ", "timestamp_ltz", None, 9), ("TZ", "timestamp_tz", None, 9),
        ("BIN", "binary", None, None), ("V", "variant", None, None), ("S", "text", None, None),
    ]
    row_types = [{"name": n, "type": t, "precision": p, "scale": s, "nullable": True}
                 for n, t, p, s in columns]
    rows = [
        ["-12.3400", "1.5e3", "true", "19723", "3600.5", "1704164645.123456789",
         "-1.25", "1704164645.000000000 1500", "0aff", "{\"a\": [1, null]}", "text"],
        [None] * len(columns),
    ]
    body = {"resultSetMetaData": {"numRows": 2, "format": "jsonv2", "rowType": row_types,
                                  "partitionInfo": [{"rowCount": 2}]},
            "data": rows, "code": "090001", "statementHandle": "01b0-0001", "message": "ok"}
    write("sql_api_response", "200_every_type.json", bytes([0]) + json.dumps(body).encode())
    write("sql_api_response", "401_auth.json", bytes([3]) + b'{"code": "390144", "message": "JWT token is invalid."}')
    write("sql_api_response", "408_timeout.json", bytes([6]) + b'{"code": "000630", "message": "timeout", "statementHandle": "01b0-0002"}')


# --- PostgreSQL binary COPY ----------------------------------------------------------------

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
PG = {name: i for i, name in enumerate(
    ["bool", "int2", "int4", "int8", "oid", "float4", "float8", "numeric", "money", "text",
     "jsonb", "uuid", "bytea", "date", "time", "timestamp", "timestamptz", "decimal", "list"])}


def pg_numeric(unscaled_text, dscale):
    """numeric's binary form of a decimal given as digits text (no point) with dscale."""
    negative = unscaled_text.startswith("-")
    digits = unscaled_text.lstrip("-")
    int_part, frac = digits[: len(digits) - dscale] or "0", digits[len(digits) - dscale:]
    int_part = int_part.lstrip("0")
    int_groups = []
    while int_part:
        int_groups.insert(0, int(int_part[-4:]))
        int_part = int_part[:-4]
    frac_padded = frac + "0" * (-len(frac) % 4)
    frac_groups = [int(frac_padded[i:i + 4]) for i in range(0, len(frac_padded), 4)]
    groups = int_groups + frac_groups
    weight = len(int_groups) - 1
    while groups and groups[-1] == 0:
        groups.pop()
    sign = 0x4000 if negative else 0
    return struct.pack(">hhHH", len(groups), weight, sign, dscale) + b"".join(struct.pack(">h", g) for g in groups)


def pg_field(value):
    if value is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(value)) + value


def pg_stream(rows):
    out = SIGNATURE + struct.pack(">ii", 0, 0)
    for row in rows:
        out += struct.pack(">h", len(row)) + b"".join(pg_field(v) for v in row)
    return out + struct.pack(">h", -1)


def pg_header(columns, batch=1, piece=255):
    out = bytes([len(columns), batch, piece])
    for column in columns:
        out += column
    return out


def pg_seeds():
    numeric_10_2 = bytes([PG["numeric"]]) + struct.pack(">i", ((10 << 16) | 2) + 4)
    scalars = [
        (bytes([PG["bool"], 1]), [b"\x01", b"\x00", None]),
        (bytes([PG["int2"], 1]), [struct.pack(">h", -7), struct.pack(">h", 32767), None]),
        (bytes([PG["int4"], 0]), [struct.pack(">i", 1), struct.pack(">i", -2**31), struct.pack(">i", 3)]),
        (bytes([PG["int8"], 1]), [struct.pack(">q", 2**62), None, struct.pack(">q", -1)]),
        (bytes([PG["oid"], 0]), [struct.pack(">I", 2**32 - 1), struct.pack(">I", 1), struct.pack(">I", 0)]),
        (bytes([PG["float4"], 1]), [struct.pack(">f", 1.5), struct.pack(">f", float("nan")), None]),
        (bytes([PG["float8"], 1]), [struct.pack(">d", -2.25), struct.pack(">d", float("inf")), None]),
        (numeric_10_2 + b"\x01", [pg_numeric("-1234567", 2), pg_numeric("5", 2), None]),
        (bytes([PG["numeric"]]) + struct.pack(">i", -1) + b"\x01", [pg_numeric("123456789", 9), pg_numeric("0", 0), None]),
        (bytes([PG["money"], 1]), [struct.pack(">q", 1999), struct.pack(">q", -5), None]),
        (bytes([PG["text"], 1]), ["héllo".encode(), b"", None]),
        (bytes([PG["jsonb"], 1]), [b"\x01{\"a\": 1}", b"\x01[]", None]),
        (bytes([PG["uuid"], 1]), [bytes(range(16)), b"\xff" * 16, None]),
        (bytes([PG["bytea"], 1]), [b"\x00\x01\x02", b"", None]),
        (bytes([PG["date"], 9]), [struct.pack(">i", 8766), struct.pack(">i", 2**31 - 1), None]),
        (bytes([PG["time"], 1]), [struct.pack(">q", 3600 * 10**6 + 5), struct.pack(">q", 0), None]),
        (bytes([PG["timestamp"], 1]), [struct.pack(">q", 757_382_400 * 10**6), struct.pack(">q", 2**63 - 1), None]),
        (bytes([PG["timestamptz"], 1]), [struct.pack(">q", -10**12), struct.pack(">q", -2**63), None]),
        (bytes([PG["decimal"], 20, 4, 1]), [pg_numeric("123456", 4), pg_numeric("-1", 0), None]),
    ]
    for i, (column, values) in enumerate(scalars):
        rows = [[v] for v in values]
        write("pg_copy_binary", f"scalar_{i:02}.bin", pg_header([column], batch=1, piece=255) + pg_stream(rows))
    # Arrays: int4[] and text[] with a NULL element, and an empty array.
    def pg_array(oid, elements):
        has_null = int(any(e is None for e in elements))
        if not elements:
            return struct.pack(">iiI", 0, 0, oid)
        out = struct.pack(">iiI", 1, has_null, oid) + struct.pack(">ii", len(elements), 1)
        return out + b"".join(pg_field(e) for e in elements)
    int_list = bytes([PG["list"], PG["int4"], 1])
    text_list = bytes([PG["list"], PG["text"], 1])
    rows = [
        [pg_array(23, [struct.pack(">i", 1), None, struct.pack(">i", 3)]), pg_array(25, [b"a", b"bc"])],
        [pg_array(23, []), None],
    ]
    write("pg_copy_binary", "arrays.bin", pg_header([int_list, text_list], batch=2, piece=3) + pg_stream(rows))
    # A wide row of several types, fed in pieces of 7 bytes.
    columns = [bytes([PG["int8"], 0]), bytes([PG["text"], 1]), numeric_10_2 + b"\x01",
               bytes([PG["timestamptz"], 1]), bytes([PG["bool"], 1])]
    rows = [[struct.pack(">q", n), f"row {n}".encode(), pg_numeric(str(n * 101), 2),
             struct.pack(">q", n * 10**9), b"\x01" if n % 2 else None] for n in range(5)]
    write("pg_copy_binary", "orders.bin", pg_header(columns, batch=2, piece=6) + pg_stream(rows))
    write("pg_copy_binary", "empty.bin", pg_header([bytes([PG["int4"], 0])]) + pg_stream([]))


# --- MySQL rows ----------------------------------------------------------------------------

MY = {name: i for i, name in enumerate(
    ["bool", "int8", "int16", "int32", "int64", "ubigint", "float32", "float64", "decimal",
     "bit", "year", "text", "binary", "geometry", "date", "datetime", "timestamp", "time",
     "override_decimal"])}


def my_value(v):
    kind = v[0]
    if kind == "null":
        return bytes([0])
    if kind == "absent":
        return bytes([1])
    if kind == "bytes":
        return bytes([2, len(v[1])]) + v[1]
    if kind == "int":
        return bytes([3]) + struct.pack("<q", v[1])
    if kind == "uint":
        return bytes([4]) + struct.pack("<Q", v[1])
    if kind == "float":
        return bytes([5]) + struct.pack("<f", v[1])
    if kind == "double":
        return bytes([6]) + struct.pack("<d", v[1])
    if kind == "date":
        y, mo, d, h, mi, s, us = v[1:]
        return bytes([7]) + struct.pack("<HBBBBBI", y, mo, d, h, mi, s, us)
    if kind == "time":
        neg, days, h, m, s, us = v[1:]
        return bytes([8, neg]) + struct.pack("<IBBBI", days, h, m, s, us)
    raise ValueError(kind)


def my_seed(name, columns, rows, batch=1):
    out = bytes([len(columns), batch])
    for column in columns:
        out += column
    for row in rows:
        out += b"".join(my_value(v) for v in row)
    write("mysql_rows", name, out)


def mysql_seeds():
    n = lambda t, *extra, nullable=1: bytes([MY[t], *extra, nullable])
    my_seed("integers.bin", [n("int8"), n("int16"), n("int32"), n("int64"), n("ubigint")], [
        [("int", -128), ("int", 32767), ("int", -5), ("int", 2**62), ("uint", 2**64 - 1)],
        [("null",), ("absent",), ("int", 0), ("uint", 7), ("int", 3)],
    ], batch=1)
    my_seed("decimals.bin", [n("decimal", 10, 2), n("override_decimal", 20, 4), n("float32"), n("float64")], [
        [("bytes", b"-12345.67"), ("bytes", b"1.5"), ("float", 1.5), ("double", -2.5)],
        [("bytes", b"0.00"), ("null",), ("float", float("nan")), ("double", float("inf"))],
    ], batch=2)
    my_seed("text_binary.bin", [n("text"), n("binary"), n("geometry"), n("bit"), n("bool"), n("year")], [
        [("bytes", "héllo".encode()), ("bytes", b"\x00\xff"), ("bytes", b"\xe6\x10\x00\x00\x01\x01\x00\x00\x00" + b"\x00" * 16),
         ("bytes", b"\x01\x02"), ("int", 1), ("int", 2024)],
        [("bytes", b""), ("null",), ("null",), ("uint", 5), ("int", 0), ("int", 0)],
    ], batch=3)
    my_seed("dates.bin", [n("date"), n("datetime"), n("timestamp"), n("time", 6)], [
        [("date", 2024, 2, 29, 0, 0, 0, 0), ("date", 2024, 1, 2, 3, 4, 5, 600000),
         ("date", 1970, 1, 1, 0, 0, 1, 0), ("time", 1, 34, 22, 59, 59, 999999)],
        [("date", 0, 0, 0, 0, 0, 0, 0), ("date", 2024, 13, 1, 0, 0, 0, 0),
         ("bytes", b"2024-01-01 00:00:00"), ("bytes", b"-838:59:59.000000")],
    ], batch=2)
    my_seed("zero_dates_fail.bin", [n("date"), n("datetime")], [
        [("date", 0, 0, 0, 0, 0, 0, 0), ("date", 2024, 2, 30, 0, 0, 0, 0)],
    ], batch=8)


def main():
    config_seeds()
    external_function_seeds()
    sql_api_seeds()
    pg_seeds()
    mysql_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
