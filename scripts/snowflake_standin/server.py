"""A local stand-in for Snowflake's SQL API v2, for sluice's tests and demo.

What is real here: the HTTP protocol of the SQL API v2 (request and response shapes, 200/202/
422/401, polling, cancel, multi-statement, bindings, requestId + retry=true), the key-pair JWT
(RS256 signature checked against the configured public key, iss/sub/exp checked), and the SQL
semantics as far as fakesnow provides them on DuckDB (MERGE, QUALIFY, VARIANT, COPY INTO).
What is not: Snowflake itself. Procedures are a narrow subset (see README.md), results come in
one partition unless --partition-rows says otherwise, and there are no warehouses, roles or
privileges (the request's warehouse and role are accepted, recorded for tests, and ignored).

Run: server.py --port 0 --public-key key.pub --account ACCT --user USER [--s3-endpoint URL]
It prints one line "sluice-snowflake-standin ready on http://127.0.0.1:PORT" when it listens.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jwt
import snowflake.connector.errors
import uvicorn
from cryptography.hazmat.primitives import serialization
from fakesnow.converter import from_binding
from fakesnow.instance import FakeSnow
from fakesnow.rowtype import describe_as_rowtype
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# fakesnow reads DuckDB results through Arrow; the copy it warns about is harmless at this size.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")

SUCCESS = "090001"
ASYNC_IN_PROGRESS = "333334"
MULTI_OK = "Multiple statements executed successfully."


class SqlError(Exception):
    """A statement failure, answered as 422 with Snowflake's code, sqlState and message."""

    def __init__(self, code: str, sql_state: str, message: str):
        super().__init__(message)
        self.code = code
        self.sql_state = sql_state
        self.message = message


# --- Settings and shared state ---------------------------------------------------------------


@dataclass
class Settings:
    public_key_der: bytes
    public_key_pem: bytes
    account: str
    user: str
    sync_limit: float
    lose_answer_markers: list[str]
    partition_rows: int
    s3_endpoint: str | None
    s3_region: str
    mirror_dir: str
    default_database: str
    default_schema: str


@dataclass
class Statement:
    handle: str
    request_id: str | None
    sql: str
    created_on: int
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    # Exactly one of these is set once `done` is.
    result: dict[str, Any] | None = None
    error: SqlError | None = None
    children: list[str] = field(default_factory=list)


@dataclass
class Procedure:
    params: list[str]
    statements: list[str]
    returns: str | None
    return_type: str


class State:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.fs = FakeSnow()
        # fakesnow shares one DuckDB database; statements run one at a time, like one session.
        self.sql_lock = threading.Lock()
        self.lock = threading.Lock()
        self.statements: dict[str, Statement] = {}
        self.by_request_id: dict[str, str] = {}
        self.procedures: dict[str, Procedure] = {}
        self.tokens_seen: set[str] = set()
        self.executions = 0
        self.canceled = 0
        # The session context of the latest submission, so tests can see what a client sends.
        self.last_context: dict[str, object] = {}
        self.pool = ThreadPoolExecutor(max_workers=8)


STATE: State


# --- JWT ----------------------------------------------------------------------------------------


def fingerprint(der: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def check_auth(request: Request) -> JSONResponse | None:
    """None when the request carries a valid key-pair JWT for the configured user, else a 401."""
    s = STATE.settings
    auth = request.headers.get("authorization", "")
    if request.headers.get("x-snowflake-authorization-token-type", "").upper() != "KEYPAIR_JWT":
        return unauthorized("X-Snowflake-Authorization-Token-Type must be KEYPAIR_JWT")
    if not auth.startswith("Bearer "):
        return unauthorized("missing Bearer token")
    token = auth[len("Bearer ") :]
    account, user = s.account.upper(), s.user.upper()
    try:
        claims = jwt.decode(
            token,
            s.public_key_pem,
            algorithms=["RS256"],
            options={"require": ["iss", "sub", "exp", "iat"]},
        )
    except jwt.InvalidTokenError as e:
        # The reason only, never the token.
        return unauthorized(f"{type(e).__name__}: {e}")
    expected_iss = f"{account}.{user}.{fingerprint(s.public_key_der)}"
    if claims["iss"] != expected_iss:
        return unauthorized(f"iss {claims['iss']!r} is not {expected_iss!r}")
    if claims["sub"] != f"{account}.{user}":
        return unauthorized(f"sub {claims['sub']!r} is not {account}.{user!r}")
    if claims["exp"] - claims["iat"] > 3600:
        return unauthorized("exp is more than one hour after iat")
    with STATE.lock:
        STATE.tokens_seen.add(hashlib.sha256(token.encode()).hexdigest())
    return None


def unauthorized(reason: str) -> JSONResponse:
    return JSONResponse({"code": "390144", "message": f"JWT token is invalid. ({reason})"}, status_code=401)


# --- SQL text: splitting, placeholders --------------------------------------------------------


def split_statements(sql: str) -> list[tuple[str, int]]:
    """Top-level statements of sql and the number of ? placeholders in each.

    Quotes ('…', "…"), $$…$$ blocks and comments are skipped, so a ; or ? inside them counts for
    nothing.
    """
    out: list[tuple[str, int]] = []
    start, i, n, marks = 0, 0, len(sql), 0
    while i < n:
        c = sql[i]
        if c in "'\"":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
            i += 1
        elif sql.startswith("$$", i):
            end = sql.find("$$", i + 2)
            i = n if end < 0 else end + 2
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "?":
            marks += 1
            i += 1
        elif c == ";":
            out.append((sql[start:i], marks))
            start, marks, i = i + 1, 0, i + 1
        else:
            i += 1
    out.append((sql[start:], marks))
    return [(s.strip(), m) for s, m in out if strip_comments(s).strip()]


def strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", sql, flags=re.S)


def replace_outside_quotes(sql: str, pattern: re.Pattern[str], repl) -> str:
    """pattern.sub(repl) applied only to the parts of sql outside '…' and "…"."""
    parts = re.split(r"('(?:[^'\\]|\\.|'')*'|\"[^\"]*\")", sql)
    return "".join(p if i % 2 else pattern.sub(repl, p) for i, p in enumerate(parts))


# --- Result encoding (jsonv2: every value a string, NULL as null) ------------------------------

EPOCH = datetime.datetime(1970, 1, 1)


def encode(value: Any, sf_type: str) -> str | None:
    if value is None:
        return None
    if sf_type == "boolean":
        return "true" if value else "false"
    if sf_type == "fixed":
        return format(value, "f") if isinstance(value, decimal.Decimal) else str(int(value))
    if sf_type == "real":
        return repr(float(value))
    if sf_type == "date":
        return str((value - datetime.date(1970, 1, 1)).days)
    if sf_type == "time":
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}000"
    if sf_type in ("timestamp_ntz", "timestamp_ltz", "timestamp_tz"):
        offset = value.utcoffset() if value.tzinfo else None
        naive = (value - offset).replace(tzinfo=None) if offset is not None else value.replace(tzinfo=None)
        delta = naive - EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        secs = f"{micros // 1_000_000}.{micros % 1_000_000:06d}000"
        if sf_type == "timestamp_tz":
            minutes = int(offset.total_seconds() // 60) if offset is not None else 0
            return f"{secs} {minutes + 1440}"
        return secs
    if sf_type == "binary":
        return bytes(value).hex().upper()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def result_set(columns: list[dict[str, Any]], rows: list[list[str | None]]) -> dict[str, Any]:
    return {"rowType": columns, "rows": rows}


def text_result(name: str, message: str) -> dict[str, Any]:
    return result_set([column(name, "text")], [[message]])


def column(name: str, sf_type: str, **extra: Any) -> dict[str, Any]:
    info = {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": sf_type,
        "byteLength": None,
        "length": None,
        "scale": None,
        "precision": None,
        "collation": None,
    }
    info.update(extra)
    return info


# --- Execution ---------------------------------------------------------------------------------

PROC_RE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?PROCEDURE\s+(?P<name>[\w.$\"]+)\s*\((?P<args>[^)]*)\)\s*"
    r"RETURNS\s+(?P<returns>[\w()\s,]+?)\s+.*?LANGUAGE\s+SQL\b.*?\bAS\s+(?P<body>\$\$.*\$\$|'.*')\s*$",
    re.I | re.S,
)
CALL_RE = re.compile(r"^CALL\s+(?P<name>[\w.$\"]+)\s*\((?P<args>.*)\)\s*$", re.I | re.S)
WAIT_RE = re.compile(r"^(?:SELECT|CALL)\s+SYSTEM\$WAIT\(\s*(?P<secs>\d+(?:\.\d+)?)\s*\)\s*$", re.I)
STAGE_URL_RE = re.compile(r"(\bURL\s*=\s*)'s3://([^']*)'", re.I)
COPY_RE = re.compile(r"^COPY\s+INTO\b", re.I)
FILES_RE = re.compile(r"\bFILES\s*=\s*\((?P<list>[^)]*)\)", re.I)
INCLUDE_METADATA_RE = re.compile(r"\bINCLUDE_METADATA\s*=\s*\((?P<list>[^)]*)\)", re.I)
UNSUPPORTED_SCRIPTING = re.compile(
    r"^(LET|IF|FOR|WHILE|REPEAT|LOOP|CASE|DECLARE|EXCEPTION|OPEN|FETCH|CLOSE|BREAK|CONTINUE)\b", re.I
)


class Session:
    """One request's connection: fakesnow with the request's database and schema."""

    def __init__(self, database: str, schema: str, stmt: Statement):
        with STATE.sql_lock:
            self.conn = STATE.fs.connect(database=database, schema=schema)
        self.database = self.conn.database
        self.schema = self.conn.schema
        self.stmt = stmt

    def close(self) -> None:
        # The connection wraps a cursor of the shared DuckDB database: closing it frees only that.
        with STATE.sql_lock:
            self.conn.close()

    def run(self, sql: str, params: list[Any] | None) -> dict[str, Any]:
        """Runs one statement, returning {"rowType", "rows"} or raising SqlError."""
        if self.stmt.cancel.is_set():
            raise canceled()
        if m := WAIT_RE.match(sql):
            secs = float(m["secs"])
            if self.stmt.cancel.wait(secs):
                raise canceled()
            return text_result("SYSTEM$WAIT", f"waited {m['secs']} seconds")
        if m := PROC_RE.match(sql):
            return self.create_procedure(m)
        if m := CALL_RE.match(sql):
            return self.call(m, params)
        if COPY_RE.match(sql):
            return self.copy_into(sql, params)
        sql = STAGE_URL_RE.sub(lambda m: f"{m[1]}'file://{mirror_path(m[2])}'", sql)
        return self.fakesnow(sql, params)

    def fakesnow(self, sql: str, params: list[Any] | None) -> dict[str, Any]:
        with STATE.sql_lock:
            STATE.executions += 1
            cur = self.conn.cursor()
            try:
                cur.execute(sql, binding_params=params or None, server=True)
                rowtype = describe_as_rowtype(cur._describe_last_sql())  # noqa: SLF001
                rows = cur.fetchall() if cur._arrow_table is not None else []  # noqa: SLF001
            except snowflake.connector.errors.Error as e:
                raise sql_error(e) from None
            except NotImplementedError as e:
                raise SqlError("009999", "0A000", f"stand-in (fakesnow) does not support this: {e}") from None
            except Exception as e:  # a DuckDB error fakesnow did not translate
                raise SqlError("000603", "XX000", f"{type(e).__name__}: {e}") from None
        types = [c["type"] for c in rowtype]
        return result_set(rowtype, [[encode(v, t) for v, t in zip(row, types, strict=True)] for row in rows])

    # --- procedures ---

    def qualified(self, name: str) -> str:
        parts = [p.strip('"') if p.startswith('"') else p.upper() for p in name.split(".")]
        parts = [self.database, self.schema][: 3 - len(parts)] + parts
        return ".".join(p or "" for p in parts)

    def create_procedure(self, m: re.Match[str]) -> dict[str, Any]:
        params = []
        for arg in filter(None, (a.strip() for a in m["args"].split(","))):
            params.append(arg.split()[0].strip('"').upper())
        body = m["body"]
        body = body[2:-2] if body.startswith("$$") else body[1:-1].replace("''", "'")
        inner = re.match(r"^\s*BEGIN\b(?P<inner>.*)\bEND\s*;?\s*$", strip_comments(body), re.I | re.S)
        if not inner:
            raise unsupported_body("the body must be BEGIN … END")
        statements, returns = [], None
        for text, _ in split_statements(inner["inner"]):
            if returns is not None:
                raise unsupported_body("RETURN must be the last statement")
            if r := re.match(r"^RETURN\s+(?P<expr>.*)$", text, re.I | re.S):
                returns = r["expr"]
            elif UNSUPPORTED_SCRIPTING.match(text):
                raise unsupported_body(f"Snowflake Scripting {text.split()[0].upper()} is not in the subset")
            else:
                statements.append(text)
        name = self.qualified(m["name"])
        with STATE.lock:
            STATE.procedures[name] = Procedure(params, statements, returns, m["returns"].strip().upper())
        return text_result("status", f"Function {name.split('.')[-1]} successfully created.")

    def call(self, m: re.Match[str], params: list[Any] | None) -> dict[str, Any]:
        name = self.qualified(m["name"])
        with STATE.lock:
            proc = STATE.procedures.get(name)
        if proc is None:
            raise SqlError(
                "002140", "42601", f"SQL compilation error:\nUnknown function {name}"
            )
        # The arguments are evaluated like a SELECT list, with the CALL's own bindings.
        values = list(self.select_values(m["args"], params)) if m["args"].strip() else []
        if len(values) != len(proc.params):
            raise SqlError(
                "001044",
                "42P13",
                f"SQL compilation error: error line 1 at position 5\nInvalid argument types for "
                f"function '{name}': {len(values)} given, {len(proc.params)} expected",
            )
        bound = dict(zip(proc.params, values, strict=True))
        for text in proc.statements:
            self.run(*substitute(text, bound))
        out_name = name.split(".")[-1]
        if proc.returns is None:
            return result_set([column(out_name, "text")], [[None]])
        result = self.run(*substitute(f"SELECT {proc.returns}", bound))
        value = result["rows"][0][0] if result["rows"] else None
        sf_type = "variant" if proc.return_type in ("VARIANT", "OBJECT", "ARRAY") else result["rowType"][0]["type"]
        return result_set([column(out_name, sf_type)], [[value]])

    def select_values(self, args: str, params: list[Any] | None) -> tuple[Any, ...]:
        with STATE.sql_lock:
            cur = self.conn.cursor()
            try:
                cur.execute(f"SELECT {args}", binding_params=params or None, server=True)
                return cur.fetchone() or ()
            except snowflake.connector.errors.Error as e:
                raise sql_error(e) from None

    # --- COPY from an s3:// stage ---

    def copy_into(self, sql: str, params: list[Any] | None) -> dict[str, Any]:
        stage = re.search(r"\bFROM\s+@(?P<stage>[\w.$\"]+)(?P<path>/[^\s)]*)?", sql, re.I)
        files = FILES_RE.search(sql)
        names = re.findall(r"'([^']*)'", files["list"]) if files else None
        if stage:
            url = self.stage_url(stage["stage"])
            if url.startswith("file://" + STATE.settings.mirror_dir):
                s3 = "s3://" + url[len("file://" + STATE.settings.mirror_dir) + 1 :]
                prefix = s3.rstrip("/") + "/" + (stage["path"] or "/").strip("/")
                fetch_from_s3(prefix.rstrip("/") + "/", names)
        if meta := INCLUDE_METADATA_RE.search(sql):
            result = self.copy_with_metadata(sql, meta, stage, names, params)
        else:
            result = self.fakesnow(sql, params)
        # Report files by their s3:// name, as Snowflake does, not by the local mirror's path.
        local = "file://" + STATE.settings.mirror_dir + "/"
        for row in result["rows"]:
            if row and row[0] and row[0].startswith(local):
                row[0] = "s3://" + row[0][len(local) :]
        return result

    def copy_with_metadata(
        self, sql: str, meta: re.Match[str], stage: re.Match[str] | None, names: list[str] | None, params: list[Any] | None
    ) -> dict[str, Any]:
        """INCLUDE_METADATA, which fakesnow lacks: the COPY runs file by file without it, and the
        rows each file added (the ones whose metadata columns are still NULL) get the file's
        name (relative to the stage) and their 1-based position."""
        pairs = [
            (col[1:-1].replace('""', '"') if col.startswith('"') else col, field.upper())
            for col, field in re.findall(r'("(?:[^"]|"")*"|[\w$]+)\s*=\s*METADATA\$(\w+)', meta["list"], re.I)
        ]
        if not pairs or any(f not in ("FILENAME", "FILE_ROW_NUMBER") for _, f in pairs):
            raise SqlError("009999", "0A000", "stand-in: INCLUDE_METADATA supports METADATA$FILENAME and METADATA$FILE_ROW_NUMBER only")
        if stage is None or names is None:
            raise SqlError("009999", "0A000", "stand-in: INCLUDE_METADATA needs COPY … FROM @stage FILES = (…)")
        target = re.match(r"^COPY\s+INTO\s+(?P<t>(?:\"(?:[^\"]|\"\")*\"|[\w$]+)(?:\.(?:\"(?:[^\"]|\"\")*\"|[\w$]+)){0,2})", sql, re.I)
        assert target, "COPY_RE matched"
        table = self.duck_table(target["t"])
        without = sql[: meta.start()] + sql[meta.end() :]
        directory = (stage["path"] or "").strip("/")
        rows: list[list[str | None]] = []
        rowtype: list[dict[str, Any]] = []
        for name in names:
            one = FILES_RE.sub(lambda _: f"FILES = ('{name}')", without)
            result = self.fakesnow(one, params)
            rows += result["rows"]
            rowtype = result["rowType"]
            self.fill_metadata(table, pairs, f"{directory}/{name}" if directory else name)
        return result_set(rowtype, rows)

    def fill_metadata(self, table: str, pairs: list[tuple[str, str]], file_name: str) -> None:
        sets = ", ".join(f"{quote(c)} = ?" if f == "FILENAME" else f"{quote(c)} = s.rn" for c, f in pairs)
        values = [file_name for _, f in pairs if f == "FILENAME"]
        marker = quote(pairs[0][0])
        with STATE.sql_lock:
            STATE.fs.duck_conn.cursor().execute(
                f"UPDATE {table} AS tgt SET {sets} FROM (SELECT rowid AS rid, row_number() OVER (ORDER BY rowid) AS rn "
                f"FROM {table} WHERE {marker} IS NULL) s WHERE tgt.rowid = s.rid",
                values,
            )

    def duck_table(self, name: str) -> str:
        """A Snowflake table name as DuckDB (under fakesnow) knows it, quoted."""
        parts = re.findall(r'"(?:[^"]|"")*"|[^.]+', name)
        parts = [p[1:-1].replace('""', '"') if p.startswith('"') else p.upper() for p in parts]
        parts = [self.database, self.schema][: 3 - len(parts)] + parts
        return ".".join(quote(p or "") for p in parts)

    def stage_url(self, stage: str) -> str:
        parts = [p.strip('"') if p.startswith('"') else p.upper() for p in stage.split(".")]
        parts = [self.database, self.schema][: 3 - len(parts)] + parts
        with STATE.sql_lock:
            row = (
                STATE.fs.duck_conn.cursor()
                .execute(
                    "SELECT url FROM _fs_global._fs_information_schema._fs_stages "
                    "WHERE database_name = ? AND schema_name = ? AND name = ?",
                    parts,
                )
                .fetchone()
            )
        return (row[0] or "") if row else ""


def substitute(sql: str, bound: dict[str, Any]) -> tuple[str, list[Any]]:
    """Replaces :arg references with ? placeholders, returning the statement and its values."""
    values: list[Any] = []

    def repl(m: re.Match[str]) -> str:
        name = m[1].upper()
        if name not in bound:
            return m[0]
        values.append(bound[name])
        return "?"

    return replace_outside_quotes(sql, re.compile(r"(?<![:\w]):([A-Za-z_]\w*)"), repl), values


def quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def mirror_path(s3_path: str) -> str:
    return os.path.join(STATE.settings.mirror_dir, s3_path)


def fetch_from_s3(prefix_url: str, names: list[str] | None) -> None:
    """Copies s3://bucket/prefix/<name> (every object under the prefix without names) locally."""
    s = STATE.settings
    if not s.s3_endpoint:
        raise SqlError("091016", "22000", "stand-in: an s3:// stage needs --s3-endpoint")
    import boto3  # only COPY from s3 needs it

    bucket, _, prefix = prefix_url[len("s3://") :].partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=s.s3_endpoint,
        region_name=s.s3_region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    if names is None:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    else:
        keys = [prefix + n for n in names]
    for key in keys:
        target = mirror_path(f"{bucket}/{key}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            client.download_file(bucket, key, target)
        except Exception as e:
            raise SqlError("091016", "22000", f"Remote file 's3://{bucket}/{key}' was not found. ({e})") from None


def sql_error(e: snowflake.connector.errors.Error) -> SqlError:
    """fakesnow's error as Snowflake reports it: code, sqlState, and the bare message."""
    errno = e.errno if isinstance(e.errno, int) else 0
    return SqlError(f"{errno:06d}", e.sqlstate or "42000", getattr(e, "raw_msg", None) or e.msg or str(e))


def bound_value(binding: dict[str, Any]) -> Any:
    """A binding's Python value: FIXED may be a decimal, REAL a float; the rest as fakesnow reads
    them (which follows the drivers' private protocol for dates and timestamps)."""
    type_, value = binding["type"].upper(), binding["value"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"binding value {value!r} is not a string")
    if type_ == "FIXED":
        return decimal.Decimal(value) if "." in value else int(value)
    if type_ == "REAL":
        return float(value)
    return from_binding(binding)


def canceled() -> SqlError:
    return SqlError("000604", "57014", "SQL execution canceled")


def unsupported_body(why: str) -> SqlError:
    return SqlError("009999", "0A000", f"stand-in: procedure body outside the supported subset: {why}")


def execute(stmt: Statement, body: dict[str, Any], bindings: list[Any]) -> None:
    """Runs a submitted request (one or more statements) and records its outcome on stmt."""
    s = STATE.settings
    session = None
    try:
        session = Session(body.get("database") or s.default_database, body.get("schema") or s.default_schema, stmt)
        parts = split_statements(stmt.sql)
        wanted = str((body.get("parameters") or {}).get("MULTI_STATEMENT_COUNT", "1"))
        if not wanted.isdigit() or (wanted != "0" and int(wanted) != len(parts)):
            raise SqlError(
                "000008",
                "0A000",
                f"Actual statement count {len(parts)} did not match the desired statement count {wanted}.",
            )
        if sum(m for _, m in parts) != len(bindings):
            raise SqlError(
                "002049",
                "42601",
                f"SQL compilation error: {sum(m for _, m in parts)} bind variables, {len(bindings)} bindings given",
            )
        if len(parts) == 1 and wanted == "1":
            stmt.result = session.run(parts[0][0], bindings)
            return
        offset = 0
        for text, marks in parts:
            child = Statement(str(uuid.uuid4()), None, text, now_ms())
            with STATE.lock:
                STATE.statements[child.handle] = child
                stmt.children.append(child.handle)
            try:
                child.result = session.run(text, bindings[offset : offset + marks])
            except SqlError as e:
                child.error = e
                raise
            finally:
                child.done.set()
            offset += marks
        stmt.result = text_result("multiple statement execution", MULTI_OK)
    except SqlError as e:
        stmt.error = e
    except Exception as e:  # a stand-in bug: still an answer, never a hang
        stmt.error = SqlError("000603", "XX000", f"stand-in internal error: {type(e).__name__}: {e}")
    finally:
        if session:
            session.close()
        stmt.done.set()


def now_ms() -> int:
    return int(time.time() * 1000)


# --- HTTP ----------------------------------------------------------------------------------------


def status_url(stmt: Statement) -> str:
    url = f"/api/v2/statements/{stmt.handle}"
    return f"{url}?requestId={stmt.request_id}" if stmt.request_id else url


def answer(stmt: Statement, partition: int = 0, still_running: bool = False) -> JSONResponse:
    if still_running or not stmt.done.is_set():
        return JSONResponse(
            {
                "code": ASYNC_IN_PROGRESS,
                "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
                "statementHandle": stmt.handle,
                "statementStatusUrl": status_url(stmt),
            },
            status_code=202,
        )
    if stmt.error is not None:
        body = {
            "code": stmt.error.code,
            "message": stmt.error.message,
            "sqlState": stmt.error.sql_state,
            "statementHandle": stmt.handle,
            "statementStatusUrl": status_url(stmt),
        }
        if stmt.children:
            body["statementHandles"] = stmt.children
        return JSONResponse(body, status_code=422)
    assert stmt.result is not None
    rows = stmt.result["rows"]
    size = STATE.settings.partition_rows or max(len(rows), 1)
    partitions = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
    if partition >= len(partitions):
        return JSONResponse(
            {"code": "391908", "message": f"partition {partition} does not exist", "sqlState": "22023"},
            status_code=422,
        )
    if partition > 0:
        # Later partitions carry only data, as in Snowflake.
        return JSONResponse({"data": partitions[partition]})
    body = {
        "resultSetMetaData": {
            "numRows": len(rows),
            "format": "jsonv2",
            "partitionInfo": [{"rowCount": len(p), "uncompressedSize": len(json.dumps(p))} for p in partitions],
            "rowType": stmt.result["rowType"],
        },
        "data": partitions[0],
        "code": SUCCESS,
        "statementStatusUrl": status_url(stmt),
        "requestId": stmt.request_id,
        "sqlState": "00000",
        "statementHandle": stmt.handle,
        "message": "Statement executed successfully.",
        "createdOn": stmt.created_on,
    }
    if stmt.children:
        body["statementHandles"] = stmt.children
    return JSONResponse(body)


def bad_request(code: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "sqlState": "22023"}, status_code=status)


async def submit(request: Request) -> JSONResponse:
    if denied := check_auth(request):
        return denied
    try:
        body = await request.json()
    except ValueError:
        return bad_request("391902", "the request body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("statement"), str):
        return bad_request("391903", "the request body needs a string field 'statement'")
    request_id = request.query_params.get("requestId")
    retry = request.query_params.get("retry", "").lower() == "true"
    run_async = request.query_params.get("async", "").lower() == "true"
    if request_id is not None:
        try:
            uuid.UUID(request_id)
        except ValueError:
            return bad_request("391904", f"requestId {request_id!r} is not a UUID")
    try:
        raw = body.get("bindings") or {}
        bindings = [bound_value(raw[str(i)]) for i in range(1, len(raw) + 1)]
    except (KeyError, ValueError, TypeError) as e:
        return bad_request("391905", f"bindings must be numbered 1..n with a type and a string value ({e})")

    with STATE.lock:
        STATE.last_context = {k: body.get(k) for k in ("database", "schema", "warehouse", "role", "timeout")}
        earlier = STATE.statements.get(STATE.by_request_id.get(request_id or "", ""))
        if earlier is not None and not retry:
            # Real Snowflake's rule is looser; the stand-in is strict so a client that forgets
            # retry=true on a resubmission is caught by the tests.
            return bad_request(
                "391906", f"requestId {request_id} was already used: resubmit with retry=true", 422
            )
        if earlier is None:
            stmt = Statement(str(uuid.uuid4()), request_id, body["statement"], now_ms())
            STATE.statements[stmt.handle] = stmt
            if request_id:
                STATE.by_request_id[request_id] = stmt.handle
    if earlier is not None:
        # A retry: the earlier statement's outcome, never a second execution.
        stmt = earlier
    else:
        STATE.pool.submit(execute, stmt, body, bindings)
        if any(marker in stmt.sql for marker in STATE.settings.lose_answer_markers):
            # Fault injection: the statement runs, but its answer is "lost" behind a 503.
            await run_in_threadpool(stmt.done.wait)
            return JSONResponse({"code": "390400", "message": "stand-in: injected 503"}, status_code=503)
    if run_async or STATE.settings.sync_limit <= 0:
        # Snowflake answers an async submission 202 even when it is already done.
        return answer(stmt, still_running=True)
    await run_in_threadpool(stmt.done.wait, STATE.settings.sync_limit)
    return answer(stmt)


async def status(request: Request) -> JSONResponse:
    if denied := check_auth(request):
        return denied
    with STATE.lock:
        stmt = STATE.statements.get(request.path_params["handle"])
    if stmt is None:
        return bad_request("333333", "Statement not found", 404)
    try:
        partition = int(request.query_params.get("partition", "0"))
    except ValueError:
        return bad_request("391907", "partition must be a number")
    return answer(stmt, partition)


async def cancel(request: Request) -> JSONResponse:
    if denied := check_auth(request):
        return denied
    with STATE.lock:
        stmt = STATE.statements.get(request.path_params["handle"])
    if stmt is None:
        return bad_request("333333", "Statement not found", 404)
    if not stmt.cancel.is_set():
        stmt.cancel.set()
        with STATE.lock:
            STATE.canceled += 1
    return JSONResponse(
        {
            "code": "000000",
            "sqlState": "00000",
            "message": "successfully canceled",
            "statementHandle": stmt.handle,
            "statementStatusUrl": status_url(stmt),
        }
    )


async def stats(_: Request) -> JSONResponse:
    """Stand-in only (not Snowflake): what tests check that no API response shows."""
    with STATE.lock:
        return JSONResponse(
            {
                "distinctTokens": len(STATE.tokens_seen),
                "executions": STATE.executions,
                "statements": len(STATE.statements),
                "canceled": STATE.canceled,
                "lastContext": STATE.last_context,
            }
        )


app = Starlette(
    routes=[
        Route("/api/v2/statements", submit, methods=["POST"]),
        Route("/api/v2/statements/{handle}", status, methods=["GET"]),
        Route("/api/v2/statements/{handle}/cancel", cancel, methods=["POST"]),
        Route("/_standin/stats", stats, methods=["GET"]),
    ]
)


def main() -> None:
    global STATE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--public-key", required=True, help="PEM file of the user's RSA public key")
    p.add_argument("--account", required=True, help="account identifier as it appears in the JWT")
    p.add_argument("--user", required=True)
    p.add_argument("--sync-limit-seconds", type=float, default=45.0,
                   help="answer 202 when a statement runs longer (Snowflake: 45); 0 = always 202")
    p.add_argument("--lose-answer-when-contains", action="append", default=[], metavar="TEXT",
                   help="fault injection: run a new submission whose SQL contains TEXT, then answer 503")
    p.add_argument("--partition-rows", type=int, default=0, help="rows per result partition (0 = one)")
    p.add_argument("--s3-endpoint", help="S3 endpoint (moto) that s3:// stages read from")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--database", default="SLUICE", help="database when a request names none")
    p.add_argument("--schema", default="PUBLIC", help="schema when a request names none")
    args = p.parse_args()

    with open(args.public_key, "rb") as f:
        pem = f.read()
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    mirror = tempfile.mkdtemp(prefix="sluice-standin-s3-")
    STATE = State(
        Settings(
            public_key_der=der,
            public_key_pem=pem,
            account=args.account,
            user=args.user,
            sync_limit=args.sync_limit_seconds,
            lose_answer_markers=args.lose_answer_when_contains,
            partition_rows=args.partition_rows,
            s3_endpoint=args.s3_endpoint,
            s3_region=args.s3_region,
            mirror_dir=mirror,
            default_database=args.database,
            default_schema=args.schema,
        )
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    print(f"sluice-snowflake-standin ready on http://127.0.0.1:{port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
