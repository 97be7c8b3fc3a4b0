"""A local stand-in for Snowflake's SQL API v2, for sluice's tests and demo.

What is real here: the HTTP protocol of the SQL API v2 (request and response shapes, 200/202/
422/401, polling, cancel, multi-statement, bindings, requestId + retry=true), the key-pair JWT
(RS256 signature checked against the configured public key, iss/sub/exp checked), and the SQL
semantics as far as fakesnow provides them on DuckDB (MERGE, QUALIFY, VARIANT, COPY INTO).
What is not: Snowflake itself. Procedures are a narrow subset (see README.md), results come in
one partition unless --partition-rows says otherwise, and roles, warehouses, users, grants,
integrations and external functions are records in the server's memory, shown in Snowflake's
shapes (DESC, SHOW, CURRENT_*()) but enforcing no privilege (README.md, "Account objects").
The rules it enforces as strictly as Snowflake, each with its documentation, are listed in
README.md ("What is real") and cited beside the code that checks them.

Run: server.py --port 0 --public-key key.pub --account ACCT --user USER [--s3-endpoint URL]
It prints one line "sluice-snowflake-standin ready on http://127.0.0.1:PORT" when it listens.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import email.utils
import gzip
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
import zoneinfo
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
from fakesnow.transforms.file_format import lookup_file_format
import fakesnow.transforms as fakesnow_transforms
from sqlglot import exp as sqlglot_exp
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


# SUM keeps NUMBER exact: "Numeric values are summed into an equivalent or larger data type.
# When passed a VARCHAR expression, this function implicitly casts the input to floating point
# values" (https://docs.snowflake.com/en/sql-reference/functions/sum, usage notes). fakesnow
# wraps every SUM argument in TRY_CAST(… AS DOUBLE), so a sum of NUMBER(14,2) came back as a
# FLOAT with rounding errors. Only a text literal is cast now; a VARCHAR column inside SUM is
# refused by DuckDB (stricter than Snowflake, which would cast it to a float).
_fakesnow_numeric_agg_cast = fakesnow_transforms.numeric_agg_implicit_cast


def _sum_keeps_numbers_exact(expression):
    if not isinstance(expression, sqlglot_exp.Sum):
        return _fakesnow_numeric_agg_cast(expression)
    arg = expression.this
    keep_cast = isinstance(arg, (sqlglot_exp.Cast, sqlglot_exp.TryCast)) or (
        isinstance(arg, sqlglot_exp.Literal) and arg.is_string
    )
    result = _fakesnow_numeric_agg_cast(expression)
    if keep_cast:
        return result
    summed = result if isinstance(result, sqlglot_exp.Sum) else result.find(sqlglot_exp.Sum)
    if summed is not None and isinstance(summed.this, sqlglot_exp.TryCast):
        summed.set("this", summed.this.this)
    return result


fakesnow_transforms.numeric_agg_implicit_cast = _sum_keeps_numbers_exact

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
    # The arguments' types as declared (SHOW PROCEDURES, DROP PROCEDURE name(types)).
    arg_types: list[str] = field(default_factory=list)
    created_on: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


class State:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.fs = FakeSnow()
        # fakesnow shares one DuckDB database; statements run one at a time, like one session.
        # Re-entrant so a COPY can hold it across its load and the NULL_IF pass over the rows
        # it added, while the statements it runs take it again.
        self.sql_lock = threading.RLock()
        self.lock = threading.Lock()
        self.statements: dict[str, Statement] = {}
        self.by_request_id: dict[str, str] = {}
        self.procedures: dict[str, Procedure] = {}
        # The FILE_FORMAT of each stage (fakesnow keeps none), by (database, schema, name).
        self.stage_formats: dict[tuple[str, str, str], dict[str, Any]] = {}
        # Account objects and the metadata fakesnow lacks (see "Account objects" below), under
        # objects_lock: roles, warehouses, users and integrations by name, the grants, external
        # functions by (database, schema, name, argument types), file formats' and stages'
        # definitions by (database, schema, name), and the owner of each database created here.
        self.objects_lock = threading.RLock()
        self.roles: dict[str, AccountObject] = {}
        self.warehouses: dict[str, AccountObject] = {}
        self.users: dict[str, AccountObject] = {}
        self.integrations: dict[str, AccountObject] = {}
        self.grants: list[Grant] = []
        self.external_functions: dict[tuple, ExternalFunction] = {}
        self.file_formats: dict[tuple[str, str, str], FileFormatMeta] = {}
        self.stage_meta: dict[tuple[str, str, str], StageMeta] = {}
        self.database_owners: dict[str, tuple[str, datetime.datetime]] = {}
        # (database, schema) -> (owner role, created): the role that creates a schema owns it.
        self.schema_owners: dict[tuple[str, str], tuple[str, datetime.datetime]] = {}
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


# --- Session parameters (the request body's `parameters`) -------------------------------------

# The SQL API ignores the account's and the user's settings of the output parameters and of
# TIMEZONE: only what the request's `parameters` carries applies ("Snowflake ignores the
# account-level and user-level settings for these parameters",
# https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses, "Formatting the
# output of query results"). So a request without TIMEZONE runs in the parameter's default,
# America/Los_Angeles (https://docs.snowflake.com/en/sql-reference/parameters#timezone).
DEFAULT_TIMEZONE = "America/Los_Angeles"
TIMEZONES = zoneinfo.available_timezones()

# The output-format parameters the SQL API accepts change the text of every value in `data`
# (a DATE becomes "03/27/2019" rather than a day count; same handling-responses page). The
# stand-in does not format values, so it refuses them rather than answer in the wrong form.
OUTPUT_FORMAT_PARAMETERS = {
    "BINARY_OUTPUT_FORMAT",
    "DATE_OUTPUT_FORMAT",
    "TIME_OUTPUT_FORMAT",
    "TIMESTAMP_OUTPUT_FORMAT",
    "TIMESTAMP_LTZ_OUTPUT_FORMAT",
    "TIMESTAMP_NTZ_OUTPUT_FORMAT",
    "TIMESTAMP_TZ_OUTPUT_FORMAT",
}

# The stand-in's own codes (Snowflake documents none for these refusals).
PARAMETER_NOT_ACCEPTED = "391909"
PARAMETER_INVALID = "391910"
PARAMETER_NOT_EMULATED = "391912"
MULTI_STATEMENT_BINDINGS = "391913"


def invalid_parameter(name: str, value: object) -> SqlError:
    # The message is Snowflake's for a bad session parameter value, as captured by a public
    # emulator's live-verified tests ("invalid value [Not/AZone] for parameter 'TIMEZONE'").
    shown = json.dumps(value) if not isinstance(value, str) else value
    message = f"SQL compilation error:\ninvalid value [{shown}] for parameter '{name}'"
    return SqlError(PARAMETER_INVALID, "22023", message)


def integer_parameter(name: str, value: object, low: int = 0, high: int | None = None) -> str:
    """An integer sent as a JSON number or a string of digits, within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise invalid_parameter(name, value)
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?\d+", text) or int(text) < low or (high is not None and int(text) > high):
        raise invalid_parameter(name, value)
    return str(int(text))


def boolean_parameter(name: str, value: object) -> str:
    """TRUE/FALSE sent as a JSON boolean or a string in any case."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str) and value.strip().upper() in ("TRUE", "FALSE"):
        return value.strip().upper()
    raise invalid_parameter(name, value)


# IANA names by their lower-case spelling: the SQL API reference's own example for the
# request's `timezone` is "america/los_angeles"
# (https://docs.snowflake.com/en/developer-guide/sql-api/reference, "parameters").
TIMEZONES_BY_LOWER = {zone.lower(): zone for zone in TIMEZONES}


def timezone_parameter(name: str, value: object) -> str:
    # TIMEZONE takes an IANA zone name (https://docs.snowflake.com/en/sql-reference/parameters#timezone);
    # any case, as the reference's example spells it in lower case.
    zone = TIMEZONES_BY_LOWER.get(value.lower()) if isinstance(value, str) else None
    if zone is None:
        raise invalid_parameter(name, value)
    return zone


def query_tag_parameter(name: str, value: object) -> str:
    # "String (up to 2000 characters)" (https://docs.snowflake.com/en/sql-reference/parameters#query-tag).
    if not isinstance(value, str) or len(value) > 2000:
        raise invalid_parameter(name, value)
    return value


# The parameters the SQL API documents for the request body, as Snowflake's own OpenAPI
# description of the API lists them (SessionParameters: timezone, query_tag, the output
# formats, multi_statement_count, client_result_chunk_size, rows_per_resultset,
# use_cached_result; https://docs.snowflake.com/en/developer-guide/sql-api/reference, request
# body, "parameters"). Names are matched in any case, as Snowflake's parameter names are.
PARAMETER_CHECKS = {
    "TIMEZONE": timezone_parameter,
    "QUERY_TAG": query_tag_parameter,
    # "0 implies variable number of statements. Negative numbers are not allowed."
    "MULTI_STATEMENT_COUNT": integer_parameter,
    # 0 means no limit (https://docs.snowflake.com/en/sql-reference/parameters#rows-per-resultset).
    "ROWS_PER_RESULTSET": integer_parameter,
    # 48 to 160 MB (https://docs.snowflake.com/en/sql-reference/parameters#client-result-chunk-size).
    "CLIENT_RESULT_CHUNK_SIZE": lambda n, v: integer_parameter(n, v, 48, 160),
    "USE_CACHED_RESULT": boolean_parameter,
}

PARAMETER_DEFAULTS = {
    "TIMEZONE": DEFAULT_TIMEZONE,
    "QUERY_TAG": "",
    "MULTI_STATEMENT_COUNT": "1",
    "ROWS_PER_RESULTSET": "0",
    "CLIENT_RESULT_CHUNK_SIZE": "160",
    "USE_CACHED_RESULT": "TRUE",
}


def effective_parameters(sent: object) -> dict[str, str]:
    """The session parameters a request runs with: the defaults, overridden by what it sent.

    Raises SqlError for a name outside the documented list, a value the parameter refuses, or
    an output format the stand-in cannot apply.
    """
    if sent is None:
        sent = {}
    if not isinstance(sent, dict):
        raise SqlError(PARAMETER_INVALID, "22023", "stand-in: the request body's 'parameters' must be a JSON object")
    effective = dict(PARAMETER_DEFAULTS)
    for name, value in sent.items():
        key = str(name).upper()
        if key in OUTPUT_FORMAT_PARAMETERS:
            raise SqlError(
                PARAMETER_NOT_EMULATED,
                "0A000",
                f"stand-in: the SQL API accepts {key}, but the stand-in does not format values; send no output format",
            )
        check = PARAMETER_CHECKS.get(key)
        if check is None:
            raise SqlError(
                PARAMETER_NOT_ACCEPTED,
                "22023",
                f"stand-in: session parameter '{key}' is not one the SQL API documents for a request's 'parameters' "
                f"({', '.join(sorted([*PARAMETER_CHECKS, *OUTPUT_FORMAT_PARAMETERS]))})",
            )
        effective[key] = check(key, value)
    return effective


def parameter_context(sent: object) -> object:
    """What /_standin/stats shows of a request's parameters: the effective ones, or, for a
    request they fail, exactly what it sent."""
    try:
        return effective_parameters(sent)
    except SqlError:
        return sent


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


def blank_comments(sql: str) -> str:
    """sql with every comment's characters (newlines kept) turned into spaces, so that the
    line and position of what follows stay where Snowflake counts them."""
    return re.sub(r"--[^\n]*|/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m[0]), sql, flags=re.S)


# Backslash escapes of a single-quoted string constant; "If a backslash is used in sequences
# other than the ones listed above, the backslash is ignored" ('\z' is 'z')
# (https://docs.snowflake.com/en/sql-reference/data-types-text#escape-sequences-in-single-quoted-string-constants).
SIMPLE_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def string_constant(literal: str) -> str:
    """The value of a Snowflake '…' string constant (quotes included)."""
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "'" and body.startswith("''", i):
            out.append("'")
            i += 2
        elif c != "\\" or i + 1 >= len(body):
            out.append(c)
            i += 1
        elif m := re.match(r"\\(?:([0-7]{3})|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4}))", body[i:]):
            out.append(chr(int(m[1], 8) if m[1] else int(m[2] or m[3], 16)))
            i += len(m[0])
        else:
            out.append(SIMPLE_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
    return "".join(out)


QUOTED_OR_WORD = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"]|\"\")*\"|[^\s=(),']+", re.S)
STRING = r"'(?:[^'\\]|\\.|'')*'"
NAME_PART = r"(?:\"(?:[^\"]|\"\")*\"|[\w$]+)"
# An object name of one to three parts, or a string constant (FORMAT_NAME = 'db.schema.name').
OPTION_TOKEN = re.compile(rf"{STRING}|{NAME_PART}(?:\.{NAME_PART})*")
# NAME = value in an option list: a parenthesized list, a string constant, or a word.
OPTION = re.compile(rf"([A-Za-z_]\w*)\s*=\s*(\((?:[^()'\"]|{STRING}|\"[^\"]*\")*\)|{STRING}|\S+)")


def top_level_option(sql: str, name: str) -> str | None:
    """The text of `name = value` in sql outside quotes and outside parentheses: a balanced
    '(…)' (with its parentheses) or one value token ('…', an identifier path, a word)."""
    depth, i, n = 0, 0, len(sql)
    pattern = re.compile(rf"\b{name}\s*=\s*", re.I)
    while i < n:
        c = sql[i]
        if c in "'\"":
            quoted = QUOTED_OR_WORD.match(sql, i)
            i = quoted.end() if quoted else i + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and (m := pattern.match(sql, i)) and (i == 0 or not re.match(r"\w", sql[i - 1])):
            start = m.end()
            if start < n and sql[start] == "(":
                return sql[start : balanced_end(sql, start)]
            token = OPTION_TOKEN.match(sql, start)
            return token[0] if token else None
        i += 1
    return None


def balanced_end(sql: str, start: int) -> int:
    """The index just past the ')' closing the '(' at start, quotes skipped."""
    depth, i = 0, start
    while i < len(sql):
        c = sql[i]
        if c in "'\"":
            m = QUOTED_OR_WORD.match(sql, i)
            i = m.end() if m else i + 1
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
        if depth == 0:
            return i
    raise SqlError("001003", "42000", "SQL compilation error:\nsyntax error: unbalanced parentheses")


def format_options(text: str) -> dict[str, Any]:
    """A file format's options, `( NAME = value … )`: string constants decoded, a list
    `( '…', … )` as a list of strings, anything else as its word."""
    inner = text.strip()
    inner = inner[1:-1] if inner.startswith("(") and inner.endswith(")") else inner
    options: dict[str, Any] = {}
    for m in OPTION.finditer(inner):
        options[m[1].upper()] = option_value(m[2])
    return options


def option_value(text: str) -> Any:
    if text.startswith("("):
        return [option_value(t) for t in QUOTED_OR_WORD.findall(text[1:-1])]
    if text.startswith("'"):
        return string_constant(text)
    return text


def stored_option(value: Any) -> Any:
    """An option of a named file format as fakesnow keeps it (a string constant's text, with
    its escapes undecoded), read as Snowflake reads the constant."""
    if isinstance(value, list):
        return [stored_option(v) for v in value]
    if isinstance(value, str):
        return string_constant("'" + value + "'")
    return value


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
EXECUTE_IMMEDIATE_RE = re.compile(r"^EXECUTE\s+IMMEDIATE\s+(?P<body>\$\$.*\$\$|'.*')\s*$", re.I | re.S)
CALL_RE = re.compile(r"^CALL\s+(?P<name>[\w.$\"]+)\s*\((?P<args>.*)\)\s*$", re.I | re.S)
WAIT_RE = re.compile(r"^(?:SELECT|CALL)\s+SYSTEM\$WAIT\(\s*(?P<secs>\d+(?:\.\d+)?)\s*\)\s*$", re.I)
SHOW_PARAMETERS_RE = re.compile(
    r"^SHOW\s+PARAMETERS(?:\s+LIKE\s+(?P<like>'(?:[^'\\]|\\.|'')*'))?"
    r"(?:\s+(?:IN|FOR)\s+(?:SESSION|(?P<user>USER)(?:\s+(?P<name>\"(?:[^\"]|\"\")*\"|[A-Za-z_][\w$]*))?))?\s*$",
    re.I,
)
CREATE_FILE_FORMAT_RE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY|VOLATILE)\s+)?FILE\s+FORMAT\b", re.I)
STAGE_URL_RE = re.compile(r"(\bURL\s*=\s*)'s3://([^']*)'", re.I)
CREATE_STAGE_RE = re.compile(
    r"^CREATE\s+(?P<replace>OR\s+REPLACE\s+)?(?:(?:TEMP|TEMPORARY)\s+)?STAGE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{NAME_PART}(?:\.{NAME_PART}){{0,2}})",
    re.I,
)
COPY_RE = re.compile(r"^COPY\s+INTO\b", re.I)
COPY_TARGET_RE = re.compile(rf"^COPY\s+INTO\s+(?P<t>{NAME_PART}(?:\.{NAME_PART}){{0,2}})", re.I)
FILES_RE = re.compile(r"\bFILES\s*=\s*\((?P<list>[^)]*)\)", re.I)
INCLUDE_METADATA_RE = re.compile(r"\bINCLUDE_METADATA\s*=\s*\((?P<list>[^)]*)\)", re.I)
UNSUPPORTED_SCRIPTING = re.compile(
    r"^(LET|IF|FOR|WHILE|REPEAT|LOOP|CASE|DECLARE|EXCEPTION|OPEN|FETCH|CLOSE|BREAK|CONTINUE)\b", re.I
)
# The session parameters SHOW PARAMETERS reports: the ones a request can set, and two the
# stand-in keeps at their defaults (it does not emulate other values of either).
SHOWN_PARAMETERS = [
    ("CLIENT_RESULT_CHUNK_SIZE", "NUMBER", "Maximum size of each set (chunk) of query results to download (in MB)."),
    ("MULTI_STATEMENT_COUNT", "NUMBER", "Number of statement included in submitted query text."),
    ("QUERY_TAG", "STRING", "String (up to 2000 characters) used to tag statements executed by the session"),
    ("QUOTED_IDENTIFIERS_IGNORE_CASE", "BOOLEAN", "If true, the case of quoted identifiers is ignored"),
    ("ROWS_PER_RESULTSET", "NUMBER", "Maximum number of rows returned in a result set."),
    ("TIMESTAMP_TYPE_MAPPING", "STRING", "If TIMESTAMP type is used, what specific TIMESTAMP* type it should map to."),
    ("TIMEZONE", "STRING", "time zone"),
    ("USE_CACHED_RESULT", "BOOLEAN", "If enabled, query results can be reused between invocations of the same query."),
]
FIXED_PARAMETERS = {"QUOTED_IDENTIFIERS_IGNORE_CASE": "false", "TIMESTAMP_TYPE_MAPPING": "TIMESTAMP_NTZ"}


@dataclass
class Block:
    """A Snowflake Scripting block of the supported subset: its statements and RETURN."""

    statements: list[str]
    returns: str | None


def scripting_block(body: str) -> Block:
    """Parses `BEGIN stmt; … [RETURN expr;] END;` as Snowflake's compiler does for the rules it
    states (https://docs.snowflake.com/en/sql-reference/snowflake-scripting/begin, usage notes):
    "The keyword END must be followed immediately by a semicolon, or followed immediately by a
    label that is immediately followed by a semicolon." and "The keyword BEGIN must not be
    followed immediately by a semicolon." A body that breaks either is a syntax error (001003,
    42000), placed where the compiler meets it: for a missing ';' at the end of the text
    ('<EOF>'), just after END. Lines and positions count within the body, from 1 and 0."""
    text = blank_comments(body)
    block = re.match(r"^\s*BEGIN\b(?P<inner>.*)\bEND\b(?P<tail>.*)$", text, re.I | re.S)
    if not block:
        raise unsupported_body("the body must be BEGIN … END;")
    if semicolon := re.match(r"\s*;", text[block.start("inner") :]):
        raise syntax_error(text, block.start("inner") + semicolon.end() - 1, "';'")
    tail, start = block["tail"], block.start("tail")
    end = re.match(r"(?:\s*[A-Za-z_]\w*)?\s*(?P<semi>;)?\s*", tail)
    if end.end() == len(tail) and not end["semi"]:
        # Nothing after END (or its label) but the end of the text: the compiler meets '<EOF>'
        # where that last token ends.
        raise syntax_error(text, start + len(tail.rstrip()), "'<EOF>'")
    if end.end() < len(tail):
        token = re.match(r"[\w$]+|\S", tail[end.end() :])
        raise syntax_error(text, start + end.end(), f"'{token[0]}'")
    statements, returns = [], None
    for stmt_text, _ in split_statements(strip_comments(block["inner"])):
        if returns is not None:
            raise unsupported_body("RETURN must be the last statement")
        if r := re.match(r"^RETURN\s+(?P<expr>.*)$", stmt_text, re.I | re.S):
            returns = r["expr"]
        elif UNSUPPORTED_SCRIPTING.match(stmt_text):
            raise unsupported_body(f"Snowflake Scripting {stmt_text.split()[0].upper()} is not in the subset")
        else:
            statements.append(stmt_text)
    return Block(statements, returns)


def syntax_error(text: str, offset: int, unexpected: str) -> SqlError:
    line = text.count("\n", 0, offset) + 1
    position = offset - (text.rfind("\n", 0, offset) + 1)
    message = f"SQL compilation error:\nsyntax error line {line} at position {position} unexpected {unexpected}."
    return SqlError("001003", "42000", message)


def quoted_body(body: str) -> str:
    """The text of a $$…$$ or '…' body."""
    return body[2:-2] if body.startswith("$$") else string_constant(body)


# --- Account objects: roles, warehouses, users, grants, integrations, external functions -----
#
# fakesnow has none of these (CREATE ROLE/WAREHOUSE/USER and GRANT are DuckDB parser errors,
# DESC INTEGRATION an AssertionError), so the stand-in keeps them in the server's memory, like
# its procedures, and answers the statements sluice's one-time set-up and `sluice snowflake
# doctor` send in the shapes Snowflake documents (each cited where it is emulated). Nothing is
# enforced beyond what is cited: privileges are recorded and shown, not checked (README).


class Tok:
    __slots__ = ("kind", "text", "start")

    def __init__(self, kind: str, text: str, start: int):
        self.kind, self.text, self.start = kind, text, start


TOKEN = re.compile(
    r"(?P<skip>\s+|--[^\n]*|/\*.*?\*/)"
    r"|(?P<str>'(?:[^'\\]|\\.|'')*')"
    r"|(?P<dollar>\$\$.*?\$\$)"
    r"|(?P<qid>\"(?:[^\"]|\"\")*\")"
    r"|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z_][\w$]*)"
    r"|(?P<punct>.)",
    re.S,
)


def tokenize(sql: str) -> list[Tok]:
    out = []
    for m in TOKEN.finditer(sql):
        if m.lastgroup != "skip":
            out.append(Tok(m.lastgroup or "punct", m[0], m.start()))
    return out


def ident_part(tok: Tok) -> str:
    """An identifier as Snowflake resolves it: "quoted" as written, unquoted in upper case
    (https://docs.snowflake.com/en/sql-reference/identifiers-syntax)."""
    return tok.text[1:-1].replace('""', '"') if tok.kind == "qid" else tok.text.upper()


def display_name(parts: list[str]) -> str:
    """A name as Snowflake shows it in messages and SHOW/DESC output: parts joined with '.',
    a part quoted only when it is not a plain upper-case identifier."""
    return ".".join(p if re.fullmatch(r"[A-Z_][A-Z0-9_$]*", p) else quote(p) for p in parts)


@dataclass
class Val:
    """A property value as written: 'str' (decoded), 'word' (upper case), 'num', 'ident'
    (a name, parts), 'list' (of Val) or 'pair' ((Val, Val), as in HEADERS = ('a' = 'b'))."""

    kind: str
    value: Any
    text: str


class Parser:
    """Just enough of Snowflake's statement grammar for the statements emulated here; an
    unexpected token is Snowflake's syntax error (001003, 42000, "syntax error line L at
    position P unexpected 'X'."), line and position counted within the statement."""

    def __init__(self, sql: str):
        self.sql = sql
        self.toks = tokenize(sql)
        while self.toks and self.toks[-1].text == ";":
            self.toks.pop()
        self.i = 0

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def next(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise self.unexpected()
        self.i += 1
        return tok

    def is_word(self, *words: str, k: int = 0) -> bool:
        for j, word in enumerate(words):
            tok = self.peek(k + j)
            if tok is None or tok.kind != "word" or tok.text.upper() != word:
                return False
        return True

    def accept(self, *words: str) -> bool:
        if self.is_word(*words):
            self.i += len(words)
            return True
        return False

    def expect(self, *words: str) -> None:
        for word in words:
            if not self.accept(word):
                raise self.unexpected()

    def is_punct(self, ch: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok is not None and tok.kind == "punct" and tok.text == ch

    def accept_punct(self, ch: str) -> bool:
        if self.is_punct(ch):
            self.i += 1
            return True
        return False

    def expect_punct(self, ch: str) -> None:
        if not self.accept_punct(ch):
            raise self.unexpected()

    def unexpected(self, tok: Tok | None = None) -> SqlError:
        tok = tok or self.peek()
        if tok is None:
            return syntax_error(self.sql, len(self.sql.rstrip().rstrip(";").rstrip()), "'<EOF>'")
        return syntax_error(self.sql, tok.start, f"'{tok.text}'")

    def name(self) -> list[str]:
        """An object name of one or more parts."""
        parts = []
        while True:
            tok = self.next()
            if tok.kind not in ("qid", "word"):
                raise self.unexpected(tok)
            parts.append(ident_part(tok))
            if not self.accept_punct("."):
                return parts

    def value(self) -> Val:
        tok = self.peek()
        if tok is None:
            raise self.unexpected()
        start = tok.start
        if self.accept_punct("("):
            items: list[Val] = []
            while not self.accept_punct(")"):
                item = self.value()
                if self.accept_punct("="):
                    other = self.value()
                    item = Val("pair", (item, other), f"{item.text} = {other.text}")
                items.append(item)
                # Lists of values take commas; option lists (CREDENTIALS = (AWS_KEY_ID = '…'
                # AWS_SECRET_KEY = '…')) take blanks.
                self.accept_punct(",")
            return Val("list", items, self.sql[start : self.toks[self.i - 1].start + 1])
        if tok.kind == "str":
            self.i += 1
            return Val("str", string_constant(tok.text), tok.text)
        if tok.kind == "dollar":
            self.i += 1
            return Val("str", tok.text[2:-2], tok.text)
        if tok.kind == "num":
            self.i += 1
            return Val("num", tok.text, tok.text)
        if tok.kind == "punct" and tok.text in ("+", "-") and (n := self.peek(1)) is not None and n.kind == "num":
            self.i += 2
            return Val("num", tok.text + n.text, tok.text + n.text)
        if tok.kind in ("qid", "word"):
            parts = self.name()
            end = self.toks[self.i - 1]
            text = self.sql[start : end.start + len(end.text)]
            if len(parts) == 1 and tok.kind == "word":
                return Val("word", parts[0], text)
            return Val("ident", parts, text)
        raise self.unexpected(tok)

    def rest_text(self) -> str:
        """The statement's text from the current token on."""
        tok = self.peek()
        return "" if tok is None else self.sql[tok.start :].strip().rstrip(";").strip()


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class AccountObject:
    """A role, warehouse, user or integration: account-level, one namespace per kind."""

    name: str
    owner: str
    created_on: datetime.datetime
    props: dict[str, Any] = field(default_factory=dict)
    # Integrations: STORAGE or API.
    category: str = ""


@dataclass
class Grant:
    created_on: datetime.datetime
    privilege: str
    granted_on: str  # WAREHOUSE, DATABASE, INTEGRATION, ROLE, SCHEMA, ACCOUNT, …
    name: str  # the object, as SHOW GRANTS shows it
    granted_to: str  # ROLE or USER
    grantee: str
    grant_option: bool
    granted_by: str


@dataclass
class ExternalFunction:
    database: str
    schema: str
    name: str
    args: list[tuple[str, str]]  # (name, type as declared)
    returns: str
    not_null: bool
    null_handling: str
    volatility: str
    secure: bool
    comment: str
    api_integration: str
    headers: list[tuple[str, str]]
    context_headers: list[str]
    max_batch_rows: int | None
    compression: str
    request_translator: str | None
    response_translator: str | None
    url: str
    owner: str
    created_on: datetime.datetime


@dataclass
class FileFormatMeta:
    format_type: str
    options: dict[str, Any]  # as written: bool, str, int or list[str]
    comment: str
    owner: str
    created_on: datetime.datetime


@dataclass
class StageMeta:
    url: str | None  # as written (s3://…), None for an internal stage
    storage_integration: str | None
    file_format: dict[str, Any]  # {"FORMAT_NAME": parts} or inline options
    copy_options: dict[str, Any]
    comment: str
    owner: str
    created_on: datetime.datetime
    aws_key_id: str = ""


# The system-defined roles and their hierarchy: ACCOUNTADMIN holds SECURITYADMIN and SYSADMIN,
# SECURITYADMIN holds USERADMIN, and every role holds PUBLIC
# (https://docs.snowflake.com/en/user-guide/security-access-control-overview#system-defined-roles).
SYSTEM_ROLES = ("ACCOUNTADMIN", "SECURITYADMIN", "USERADMIN", "SYSADMIN", "ORGADMIN", "PUBLIC")
SYSTEM_ROLE_CHILDREN = {"ACCOUNTADMIN": ["SECURITYADMIN", "SYSADMIN"], "SECURITYADMIN": ["USERADMIN"]}

# The stand-in's own codes (Snowflake documents none for these refusals).
CLAUSES_EXCLUSIVE = "391914"
NOT_ALLOWED_BY_INTEGRATION = "391915"
MISSING_PROPERTY = "391916"
OPTION_NOT_FOR_TYPE = "391917"


def not_found(kind: str, name: str) -> SqlError:
    """Snowflake's answer for an object it cannot see: 002003, "<Kind> '<name>' does not exist
    or not authorized." (the form fakesnow also uses for file formats)."""
    return SqlError("002003", "02000", f"SQL compilation error:\n{kind} '{name}' does not exist or not authorized.")


def already_exists(name: str) -> SqlError:
    return SqlError("002002", "42710", f"SQL compilation error:\nObject '{name}' already exists.")


def status_result(message: str) -> dict[str, Any]:
    return text_result("status", message)


def plain(val: Val) -> Any:
    """A value as Python: strings decoded, words upper case, lists as lists."""
    if val.kind == "list":
        return [plain(v) for v in val.value]
    if val.kind == "pair":
        return (plain(val.value[0]), plain(val.value[1]))
    if val.kind == "ident":
        return display_name(val.value)
    return val.value


# Property kinds: ("bool",), ("str",), ("int",), ("list",), ("name",), ("any",), ("enum", {…})
# (a word or a string constant, compared in upper case), ("word", {…}) (unquoted only).
def coerce(name: str, spec: tuple, val: Val) -> Any:
    kind = spec[0]
    if kind == "bool":
        if val.kind in ("word", "str") and str(val.value).upper() in ("TRUE", "FALSE"):
            return str(val.value).upper() == "TRUE"
    elif kind == "str":
        if val.kind == "str":
            return val.value
    elif kind == "int":
        if val.kind == "num" and re.fullmatch(r"[+-]?\d+", val.value):
            return int(val.value)
        if val.kind == "word" and val.value == "NULL" and "null" in spec[1:]:
            return None
    elif kind == "list":
        if val.kind == "list" and all(v.kind == "str" for v in val.value):
            return [v.value for v in val.value]
        if val.kind == "str":
            return [val.value]
    elif kind == "name":
        if val.kind == "word":
            return val.value
        if val.kind == "ident":
            return ".".join(val.value)
        if val.kind == "str":
            return val.value
    elif kind == "enum":
        if val.kind in ("word", "str") and str(val.value).upper() in spec[1]:
            return spec[1][str(val.value).upper()] if isinstance(spec[1], dict) else str(val.value).upper()
    elif kind == "word":
        if val.kind == "word" and val.value in spec[1]:
            return val.value
    else:
        return plain(val)
    raise invalid_parameter(name, val.text)


def parse_properties(p: Parser, specs: dict[str, tuple], stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """`NAME = value …` (optionally after WITH, and a TAG ( … ) clause) up to the end or a
    word in stop. A name the statement does not take is a syntax error where it stands: the
    properties are keywords of the grammar."""
    props: dict[str, Any] = {}
    while not p.done() and not any(p.is_word(w) for w in stop):
        tok = p.peek()
        assert tok is not None
        if tok.kind != "word":
            raise p.unexpected(tok)
        key = tok.text.upper()
        if key == "WITH":
            p.next()
            continue
        if key == "TAG" and p.is_punct("(", 1):
            p.next()
            p.value()
            continue
        if key not in specs:
            raise p.unexpected(tok)
        p.next()
        p.expect_punct("=")
        props[key] = coerce(key, specs[key], p.value())
    return props


STORAGE_INTEGRATION_PROPS: dict[str, tuple] = {
    # https://docs.snowflake.com/en/sql-reference/sql/create-storage-integration
    "TYPE": ("enum", {"EXTERNAL_STAGE", "POSTGRES_EXTERNAL_STORAGE", "POSTGRES_INTERNAL_STORAGE"}),
    "STORAGE_PROVIDER": ("enum", {"S3", "S3CHINA", "S3GOV", "GCS", "AZURE"}),
    "STORAGE_AWS_ROLE_ARN": ("str",),
    "STORAGE_AWS_EXTERNAL_ID": ("str",),
    "STORAGE_AWS_OBJECT_ACL": ("str",),
    "USE_PRIVATELINK_ENDPOINT": ("bool",),
    "AZURE_TENANT_ID": ("str",),
    "ENABLED": ("bool",),
    "STORAGE_ALLOWED_LOCATIONS": ("list",),
    "STORAGE_BLOCKED_LOCATIONS": ("list",),
    "COMMENT": ("str",),
}
API_PROVIDERS = {
    "AWS_API_GATEWAY", "AWS_PRIVATE_API_GATEWAY", "AWS_GOV_API_GATEWAY", "AWS_GOV_PRIVATE_API_GATEWAY",
    "AZURE_API_MANAGEMENT", "GOOGLE_API_GATEWAY", "GIT_HTTPS_API", "EXTERNAL_MCP",
}
API_INTEGRATION_PROPS: dict[str, tuple] = {
    # https://docs.snowflake.com/en/sql-reference/sql/create-api-integration: the provider is
    # a keyword that "should not be in quotation marks".
    "API_PROVIDER": ("word", API_PROVIDERS),
    "API_AWS_ROLE_ARN": ("str",),
    "API_KEY": ("str",),
    "API_ALLOWED_PREFIXES": ("list",),
    "API_BLOCKED_PREFIXES": ("list",),
    "ENABLED": ("bool",),
    "COMMENT": ("str",),
    "AZURE_TENANT_ID": ("str",),
    "AZURE_AD_APPLICATION_ID": ("str",),
    "GOOGLE_AUDIENCE": ("str",),
    "ALLOWED_AUTHENTICATION_SECRETS": ("any",),
    "API_USER_AUTHENTICATION": ("any",),
    "USE_PRIVATELINK_ENDPOINT": ("bool",),
    "TLS_TRUSTED_CERTIFICATES": ("any",),
}
WAREHOUSE_SIZES = {
    "XSMALL": "X-Small", "X-SMALL": "X-Small", "SMALL": "Small", "MEDIUM": "Medium", "LARGE": "Large",
    "XLARGE": "X-Large", "X-LARGE": "X-Large", "XXLARGE": "2X-Large", "X2LARGE": "2X-Large",
    "2X-LARGE": "2X-Large", "XXXLARGE": "3X-Large", "X3LARGE": "3X-Large", "3X-LARGE": "3X-Large",
    "X4LARGE": "4X-Large", "4X-LARGE": "4X-Large", "X5LARGE": "5X-Large", "5X-LARGE": "5X-Large",
    "X6LARGE": "6X-Large", "6X-LARGE": "6X-Large",
}
WAREHOUSE_PROPS: dict[str, tuple] = {
    # https://docs.snowflake.com/en/sql-reference/sql/create-warehouse
    "WAREHOUSE_TYPE": ("enum", {"STANDARD", "SNOWPARK-OPTIMIZED", "ADAPTIVE"}),
    "WAREHOUSE_SIZE": ("enum", WAREHOUSE_SIZES),
    "GENERATION": ("enum", {"1", "2"}),
    "RESOURCE_CONSTRAINT": ("enum", {
        "STANDARD_GEN_1", "STANDARD_GEN_2", "MEMORY_1X", "MEMORY_1X_X86", "MEMORY_16X", "MEMORY_16X_X86",
        "MEMORY_64X", "MEMORY_64X_X86",
    }),
    "MAX_CLUSTER_COUNT": ("int",),
    "MIN_CLUSTER_COUNT": ("int",),
    "SCALING_POLICY": ("enum", {"STANDARD", "ECONOMY"}),
    "AUTO_SUSPEND": ("int", "null"),
    "AUTO_RESUME": ("bool",),
    "INITIALLY_SUSPENDED": ("bool",),
    "RESOURCE_MONITOR": ("name",),
    "COMMENT": ("str",),
    "ENABLE_QUERY_ACCELERATION": ("bool",),
    "QUERY_ACCELERATION_MAX_SCALE_FACTOR": ("int",),
    "MAX_CONCURRENCY_LEVEL": ("int",),
    "STATEMENT_QUEUED_TIMEOUT_IN_SECONDS": ("int",),
    "STATEMENT_TIMEOUT_IN_SECONDS": ("int",),
}
# Session parameters a user can carry (CREATE USER's sessionParams and the session parameters
# of https://docs.snowflake.com/en/sql-reference/parameters; the stand-in knows these).
USER_SESSION_PARAMETERS = {
    "ABORT_DETACHED_QUERY", "AUTOCOMMIT", "BINARY_INPUT_FORMAT", "BINARY_OUTPUT_FORMAT", "CLIENT_MEMORY_LIMIT",
    "CLIENT_PREFETCH_THREADS", "CLIENT_RESULT_CHUNK_SIZE", "CLIENT_RESULT_COLUMN_CASE_INSENSITIVE",
    "CLIENT_SESSION_KEEP_ALIVE", "CLIENT_SESSION_KEEP_ALIVE_HEARTBEAT_FREQUENCY", "CLIENT_TIMESTAMP_TYPE_MAPPING",
    "DATE_INPUT_FORMAT", "DATE_OUTPUT_FORMAT", "DEFAULT_NULL_ORDERING", "ENABLE_GET_DDL_USE_DATA_TYPE_ALIAS",
    "ERROR_ON_NONDETERMINISTIC_MERGE", "ERROR_ON_NONDETERMINISTIC_UPDATE", "GEOGRAPHY_OUTPUT_FORMAT",
    "GEOMETRY_OUTPUT_FORMAT", "JDBC_TREAT_DECIMAL_AS_INT", "JDBC_TREAT_TIMESTAMP_NTZ_AS_UTC",
    "JDBC_USE_SESSION_TIMEZONE", "JSON_INDENT", "LOCK_TIMEOUT", "LOG_LEVEL", "MULTI_STATEMENT_COUNT",
    "NOORDER_SEQUENCE_AS_DEFAULT", "ODBC_TREAT_DECIMAL_AS_INT", "OPT_OUT_ERROR_LOGGING", "QUERY_TAG",
    "QUOTED_IDENTIFIERS_IGNORE_CASE", "ROWS_PER_RESULTSET", "SEARCH_PATH", "SIMULATED_DATA_SHARING_CONSUMER",
    "STATEMENT_QUEUED_TIMEOUT_IN_SECONDS", "STATEMENT_TIMEOUT_IN_SECONDS", "STRICT_JSON_OUTPUT",
    "TIMESTAMP_DAY_IS_ALWAYS_24H", "TIMESTAMP_INPUT_FORMAT", "TIMESTAMP_LTZ_OUTPUT_FORMAT",
    "TIMESTAMP_NTZ_OUTPUT_FORMAT", "TIMESTAMP_OUTPUT_FORMAT", "TIMESTAMP_TYPE_MAPPING",
    "TIMESTAMP_TZ_OUTPUT_FORMAT", "TIMEZONE", "TIME_INPUT_FORMAT", "TIME_OUTPUT_FORMAT", "TRACE_LEVEL",
    "TRANSACTION_ABORT_ON_ERROR", "TRANSACTION_DEFAULT_ISOLATION_LEVEL", "TWO_DIGIT_CENTURY_START",
    "UNSUPPORTED_DDL_ACTION", "USE_CACHED_RESULT", "WEEK_OF_YEAR_POLICY", "WEEK_START",
}
USER_PROPS: dict[str, tuple] = {
    # https://docs.snowflake.com/en/sql-reference/sql/create-user (objectProperties, objectParams)
    "PASSWORD": ("str",), "LOGIN_NAME": ("any",), "DISPLAY_NAME": ("any",), "FIRST_NAME": ("any",),
    "MIDDLE_NAME": ("any",), "LAST_NAME": ("any",), "EMAIL": ("any",), "MUST_CHANGE_PASSWORD": ("bool",),
    "DISABLED": ("bool",), "ALLOWED_INTERFACES": ("any",), "DAYS_TO_EXPIRY": ("any",), "MINS_TO_UNLOCK": ("any",),
    "DEFAULT_WAREHOUSE": ("name",), "DEFAULT_NAMESPACE": ("any",), "DEFAULT_ROLE": ("name",),
    "DEFAULT_SECONDARY_ROLES": ("any",), "MINS_TO_BYPASS_MFA": ("any",), "RSA_PUBLIC_KEY": ("any",),
    "RSA_PUBLIC_KEY_FP": ("any",), "RSA_PUBLIC_KEY_2": ("any",), "RSA_PUBLIC_KEY_2_FP": ("any",),
    "TYPE": ("enum", {"PERSON", "SERVICE", "SERVICE_AGENT", "LEGACY_SERVICE"}), "WORKLOAD_IDENTITY": ("any",),
    "COMMENT": ("str",), "ENABLE_UNREDACTED_QUERY_SYNTAX_ERROR": ("bool",),
    "ENABLE_UNREDACTED_SECURE_OBJECT_ERROR": ("bool",), "NETWORK_POLICY": ("any",),
    **{p: ("any",) for p in USER_SESSION_PARAMETERS},
    "QUOTED_IDENTIFIERS_IGNORE_CASE": ("bool",),
}
ROLE_PROPS: dict[str, tuple] = {"COMMENT": ("str",)}

# CONTEXT_HEADERS takes these context functions only
# (https://docs.snowflake.com/en/sql-reference/sql/create-external-function).
CONTEXT_HEADER_FUNCTIONS = {
    "CURRENT_ACCOUNT", "CURRENT_CLIENT", "CURRENT_DATABASE", "CURRENT_DATE", "CURRENT_IP_ADDRESS",
    "CURRENT_REGION", "CURRENT_ROLE", "CURRENT_SCHEMA", "CURRENT_SCHEMAS", "CURRENT_SESSION",
    "CURRENT_STATEMENT", "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_TRANSACTION", "CURRENT_USER",
    "CURRENT_VERSION", "CURRENT_WAREHOUSE", "LAST_QUERY_ID", "LAST_TRANSACTION", "LOCALTIME", "LOCALTIMESTAMP",
}
EXTERNAL_FUNCTION_PROPS: dict[str, tuple] = {
    "COMMENT": ("str",),
    "API_INTEGRATION": ("name",),
    "HEADERS": ("any",),
    "CONTEXT_HEADERS": ("any",),
    "MAX_BATCH_ROWS": ("any",),
    "COMPRESSION": ("enum", {"NONE", "GZIP", "DEFLATE", "AUTO"}),
    "REQUEST_TRANSLATOR": ("any",),
    "RESPONSE_TRANSLATOR": ("any",),
}

# Data type synonyms, so overloads are told apart by their types however they are spelled
# (https://docs.snowflake.com/en/sql-reference/intro-summary-data-types).
TYPE_SYNONYMS = {
    "STRING": "VARCHAR", "TEXT": "VARCHAR", "CHAR": "VARCHAR", "CHARACTER": "VARCHAR", "NCHAR": "VARCHAR",
    "NVARCHAR": "VARCHAR", "NVARCHAR2": "VARCHAR", "CHAR VARYING": "VARCHAR", "NCHAR VARYING": "VARCHAR",
    "INT": "NUMBER", "INTEGER": "NUMBER", "BIGINT": "NUMBER", "SMALLINT": "NUMBER", "TINYINT": "NUMBER",
    "BYTEINT": "NUMBER", "DECIMAL": "NUMBER", "NUMERIC": "NUMBER", "DOUBLE": "FLOAT", "DOUBLE PRECISION": "FLOAT",
    "REAL": "FLOAT", "FLOAT4": "FLOAT", "FLOAT8": "FLOAT", "DATETIME": "TIMESTAMP_NTZ", "TIMESTAMP": "TIMESTAMP_NTZ",
    "VARBINARY": "BINARY",
}


def canonical_type(declared: str) -> str:
    base = re.sub(r"\s+", " ", re.sub(r"\(.*\)", "", declared)).strip().upper()
    return TYPE_SYNONYMS.get(base, base)


def parse_type(p: Parser) -> str:
    """A data type as declared: words, with a parenthesized size (NUMBER(38,0))."""
    words = [p.next().text.upper()]
    while p.peek() is not None and p.peek().kind == "word" and p.peek().text.upper() in ("PRECISION", "VARYING"):  # type: ignore[union-attr]
        words.append(p.next().text.upper())
    text = " ".join(words)
    if p.is_punct("("):
        start = p.peek().start  # type: ignore[union-attr]
        p.value()
        text += p.sql[start : p.toks[p.i - 1].start + 1].replace(" ", "")
    return text


def like_pattern(like: str | None) -> re.Pattern[str] | None:
    """SHOW … LIKE: case-insensitive, % and _ as wildcards."""
    if like is None:
        return None
    wild = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in like)
    return re.compile(wild, re.I | re.S)


def role_closure(role: str) -> set[str]:
    """The roles a role holds: itself, PUBLIC, the roles granted to it, and theirs."""
    held, todo = {"PUBLIC"}, [role]
    with STATE.objects_lock:
        grants = list(STATE.grants)
    while todo:
        r = todo.pop()
        if r in held and r != "PUBLIC":
            continue
        held.add(r)
        todo.extend(SYSTEM_ROLE_CHILDREN.get(r, []))
        todo.extend(g.name for g in grants if g.granted_on == "ROLE" and g.granted_to == "ROLE" and g.grantee == r)
    return held


def role_exists(name: str) -> bool:
    with STATE.objects_lock:
        return name in SYSTEM_ROLES or name in STATE.roles


def aws_iam_user_arn() -> str:
    """The one IAM user Snowflake provisions per account for its integrations ("Snowflake
    provisions a single IAM user for your entire Snowflake account",
    https://docs.snowflake.com/en/user-guide/data-load-s3-config-storage-integration): made up,
    but stable for the stand-in's account."""
    digest = hashlib.sha256(STATE.settings.account.upper().encode()).hexdigest()
    return f"arn:aws:iam::{int(digest[:12], 16) % 10**12:012d}:user/{digest[12:16]}1000-s"


def external_id(integration: str, created_on: datetime.datetime) -> str:
    """An external ID in the form Snowflake generates (ACCOUNT_SFCRole=N_base64=), new for each
    (re)creation: "Re-creating the API object changes its external ID"."""
    digest = hashlib.sha1(f"{integration}/{created_on.isoformat()}".encode()).digest()
    locator = re.sub(r"\W", "_", STATE.settings.account.upper())
    return f"{locator}_SFCRole=2_{base64.b64encode(digest).decode()}"


def s3_client():
    s = STATE.settings
    if not s.s3_endpoint:
        raise SqlError("091016", "22000", "stand-in: an s3:// stage needs --s3-endpoint")
    import boto3  # only s3 stages need it

    return boto3.client(
        "s3",
        endpoint_url=s.s3_endpoint,
        region_name=s.s3_region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def stage_area_failure(e: Exception) -> SqlError:
    """A stage's storage failing: "Failure using stage area. Cause: [<the cloud's message>]"
    (Snowflake's 091003, e.g. for a bucket that does not exist or denies access)."""
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        cause = f"{err.get('Message') or err.get('Code')} (Status Code: {code}; Error Code: {err.get('Code')})"
    else:
        cause = f"{type(e).__name__}: {e}"
    return SqlError("091003", "22000", f"Failure using stage area. Cause: [{cause}]")


def escape_shown(text: str) -> str:
    """A string option as DESC shows it: a backslash doubled, control characters escaped (the
    CSV defaults show as `\\n` and `\\\\` in https://docs.snowflake.com/en/sql-reference/sql/desc-file-format)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def shown_list(items: list[str]) -> str:
    """NULL_IF as DESC FILE FORMAT shows it: `[\\\\N]`, `[]`, `[a, b]`."""
    return "[" + ", ".join(escape_shown(i) for i in items) + "]"


# DESC FILE FORMAT's properties by format type, with their types and defaults as the
# examples of https://docs.snowflake.com/en/sql-reference/sql/desc-file-format list them (the
# default column is the option's own default; TYPE's is CSV). Parquet also has the options
# https://docs.snowflake.com/en/sql-reference/sql/create-file-format#type-parquet adds since
# (USE_LOGICAL_TYPE, whose default the page does not give, REPLACE_INVALID_CHARACTERS,
# USE_VECTORIZED_SCANNER).
NULL_IF_DEFAULT = ["\\N"]
FORMAT_PROPERTIES: dict[str, list[tuple[str, str, Any]]] = {
    "CSV": [
        ("TYPE", "String", "CSV"), ("RECORD_DELIMITER", "String", "\n"), ("FIELD_DELIMITER", "String", ","),
        ("FILE_EXTENSION", "String", ""), ("SKIP_HEADER", "Integer", 0), ("PARSE_HEADER", "Boolean", False),
        ("DATE_FORMAT", "String", "AUTO"), ("TIME_FORMAT", "String", "AUTO"), ("TIMESTAMP_FORMAT", "String", "AUTO"),
        ("BINARY_FORMAT", "String", "HEX"), ("ESCAPE", "String", "NONE"), ("ESCAPE_UNENCLOSED_FIELD", "String", "\\"),
        ("TRIM_SPACE", "Boolean", False), ("FIELD_OPTIONALLY_ENCLOSED_BY", "String", "NONE"),
        ("NULL_IF", "List", NULL_IF_DEFAULT), ("COMPRESSION", "String", "AUTO"),
        ("ERROR_ON_COLUMN_COUNT_MISMATCH", "Boolean", True), ("VALIDATE_UTF8", "Boolean", True),
        ("SKIP_BLANK_LINES", "Boolean", False), ("REPLACE_INVALID_CHARACTERS", "Boolean", False),
        ("EMPTY_FIELD_AS_NULL", "Boolean", True), ("SKIP_BYTE_ORDER_MARK", "Boolean", True),
        ("ENCODING", "String", "UTF8"),
    ],
    "JSON": [
        ("TYPE", "String", "CSV"), ("FILE_EXTENSION", "String", ""), ("DATE_FORMAT", "String", "AUTO"),
        ("TIME_FORMAT", "String", "AUTO"), ("TIMESTAMP_FORMAT", "String", "AUTO"), ("BINARY_FORMAT", "String", "HEX"),
        ("TRIM_SPACE", "Boolean", False), ("NULL_IF", "List", NULL_IF_DEFAULT), ("COMPRESSION", "String", "AUTO"),
        ("ENABLE_OCTAL", "Boolean", False), ("ALLOW_DUPLICATE", "Boolean", False),
        ("STRIP_OUTER_ARRAY", "Boolean", False), ("STRIP_NULL_VALUES", "Boolean", False),
        ("IGNORE_UTF8_ERRORS", "Boolean", False), ("REPLACE_INVALID_CHARACTERS", "Boolean", False),
        ("SKIP_BYTE_ORDER_MARK", "Boolean", True),
    ],
    "PARQUET": [
        ("TYPE", "String", "CSV"), ("TRIM_SPACE", "Boolean", False), ("NULL_IF", "List", NULL_IF_DEFAULT),
        ("COMPRESSION", "String", "AUTO"), ("BINARY_AS_TEXT", "Boolean", True),
        ("USE_LOGICAL_TYPE", "Boolean", False), ("REPLACE_INVALID_CHARACTERS", "Boolean", False),
        ("USE_VECTORIZED_SCANNER", "Boolean", False),
    ],
}
# Every format option of https://docs.snowflake.com/en/sql-reference/sql/create-file-format
# (formatTypeOptions), by type; an option of no type is a syntax error.
FORMAT_OPTIONS: dict[str, set[str]] = {
    "CSV": {
        "COMPRESSION", "RECORD_DELIMITER", "FIELD_DELIMITER", "MULTI_LINE", "FILE_EXTENSION", "PARSE_HEADER",
        "SKIP_HEADER", "SKIP_BLANK_LINES", "DATE_FORMAT", "TIME_FORMAT", "TIMESTAMP_FORMAT", "BINARY_FORMAT",
        "ESCAPE", "ESCAPE_UNENCLOSED_FIELD", "TRIM_SPACE", "FIELD_OPTIONALLY_ENCLOSED_BY", "NULL_IF",
        "ERROR_ON_COLUMN_COUNT_MISMATCH", "REPLACE_INVALID_CHARACTERS", "EMPTY_FIELD_AS_NULL",
        "SKIP_BYTE_ORDER_MARK", "ENCODING", "VALIDATE_UTF8",
    },
    "JSON": {
        "COMPRESSION", "DATE_FORMAT", "TIME_FORMAT", "TIMESTAMP_FORMAT", "BINARY_FORMAT", "TRIM_SPACE",
        "MULTI_LINE", "NULL_IF", "FILE_EXTENSION", "ENABLE_OCTAL", "ALLOW_DUPLICATE", "STRIP_OUTER_ARRAY",
        "STRIP_NULL_VALUES", "REPLACE_INVALID_CHARACTERS", "IGNORE_UTF8_ERRORS", "SKIP_BYTE_ORDER_MARK",
    },
    "AVRO": {"COMPRESSION", "TRIM_SPACE", "REPLACE_INVALID_CHARACTERS", "NULL_IF"},
    "ORC": {"TRIM_SPACE", "REPLACE_INVALID_CHARACTERS", "NULL_IF"},
    "PARQUET": {
        "COMPRESSION", "SNAPPY_COMPRESSION", "BINARY_AS_TEXT", "USE_LOGICAL_TYPE", "TRIM_SPACE",
        "USE_VECTORIZED_SCANNER", "REPLACE_INVALID_CHARACTERS", "NULL_IF",
    },
    "XML": {
        "COMPRESSION", "IGNORE_UTF8_ERRORS", "PRESERVE_SPACE", "STRIP_OUTER_ELEMENT", "DISABLE_AUTO_CONVERT",
        "REPLACE_INVALID_CHARACTERS", "SKIP_BYTE_ORDER_MARK",
    },
}
ALL_FORMAT_OPTIONS = set().union(*FORMAT_OPTIONS.values())


def name_of(val: Val) -> list[str]:
    """An object name given as an identifier or as a string constant ('db.schema.name')."""
    if val.kind == "ident":
        return list(val.value)
    if val.kind == "str":
        return [ident_part(t) for t in tokenize(val.value) if t.kind in ("qid", "word")]
    return [str(val.value)]


def escape_constant(text: str) -> str:
    """The inside of a '…' constant whose value is text (fakesnow keeps a format's strings so)."""
    return text.replace("\\", "\\\\").replace("'", "''")


def format_option(val: Val) -> Any:
    """A format option's value as written: TRUE/FALSE as booleans, a list of strings, a
    number, a string constant decoded, any other word in upper case."""
    if val.kind == "list":
        return [format_option(v) for v in val.value]
    if val.kind == "word" and val.value in ("TRUE", "FALSE"):
        return val.value == "TRUE"
    if val.kind == "num" and re.fullmatch(r"\d+", val.value):
        return int(val.value)
    return plain(val)


def parse_format_options(p: Parser, stop: tuple[str, ...] = ()) -> tuple[str | None, dict[str, Any], str | None]:
    """[TYPE = t] options [COMMENT = '…'] of CREATE FILE FORMAT (or a stage's FILE_FORMAT =
    ( … )): the type, the options as written, and the comment (FORMAT_NAME is an option)."""
    format_type, options, comment = None, {}, None
    while not p.done() and not any(p.is_word(w) for w in stop) and not p.is_punct(")"):
        tok = p.next()
        key = tok.text.upper()
        if tok.kind != "word" or (key not in ALL_FORMAT_OPTIONS and key not in ("TYPE", "COMMENT", "FORMAT_NAME")):
            raise p.unexpected(tok)
        p.expect_punct("=")
        val = p.value()
        if key == "TYPE":
            format_type = str(plain(val)).upper()
            if format_type not in FORMAT_OPTIONS:
                raise invalid_parameter("TYPE", val.text)
        elif key == "COMMENT":
            comment = plain(val)
        elif key == "FORMAT_NAME":
            options[key] = name_of(val)
        else:
            options[key] = format_option(val)
    if format_type is not None:
        for key in options:
            if key != "FORMAT_NAME" and key not in FORMAT_OPTIONS[format_type]:
                raise SqlError(
                    OPTION_NOT_FOR_TYPE,
                    "42601",
                    f"stand-in: file format option {key} is not one of TYPE = {format_type}'s "
                    "(https://docs.snowflake.com/en/sql-reference/sql/create-file-format)",
                )
    return format_type, options, comment


def format_rows(format_type: str, options: dict[str, Any], upper_booleans: bool) -> list[tuple[str, str, str, str]]:
    """(property, type, value, default) of a format type: a value as given, else the default.
    DESC FILE FORMAT shows booleans as TRUE/FALSE, DESC STAGE as true/false (both pages'
    examples)."""

    def shown(kind: str, value: Any) -> str:
        if kind == "Boolean":
            text = "true" if value else "false"
            return text.upper() if upper_booleans else text
        if kind == "List":
            return shown_list([str(v) for v in (value if isinstance(value, list) else [value])])
        return escape_shown(str(value))

    spec = FORMAT_PROPERTIES.get(format_type)
    if spec is None:  # AVRO, ORC, XML: the type and what was given
        spec = [("TYPE", "String", "CSV")] + [
            (k, "Boolean" if isinstance(v, bool) else "List" if isinstance(v, list) else "String", "")
            for k, v in options.items()
        ]
    rows = []
    for name, kind, default in spec:
        value = format_type if name == "TYPE" else options.get(name, default)
        rows.append((name, kind, shown(kind, value), shown(kind, default)))
    return rows


CONTEXT_FUNCTIONS = (
    "CURRENT_USER", "CURRENT_ROLE", "CURRENT_WAREHOUSE", "CURRENT_DATABASE", "CURRENT_SCHEMA",
    "CURRENT_ACCOUNT", "CURRENT_ACCOUNT_NAME", "CURRENT_ORGANIZATION_NAME",
)
CONTEXT_ITEM = r"(?P<f>CURRENT_\w+)\s*\(\s*\)(?:\s+(?:AS\s+)?(?P<alias>\"(?:[^\"]|\"\")*\"|[A-Za-z_]\w*))?"
CONTEXT_ITEM_ANY = re.sub(r"\?P<\w+>", "", CONTEXT_ITEM)
CONTEXT_SELECT_RE = re.compile(rf"^SELECT\s+(?:{CONTEXT_ITEM_ANY}\s*,\s*)*{CONTEXT_ITEM_ANY}\s*;?\s*$", re.I | re.S)
CREATE_BOTH_RE = re.compile(r"^\s*CREATE\s+OR\s+REPLACE\s+(?:[A-Za-z_]+\s+){1,4}?IF\s+NOT\s+EXISTS\b", re.I)
CREATE_DATABASE_RE = re.compile(
    rf"^CREATE\s+(?P<replace>OR\s+REPLACE\s+)?(?:TRANSIENT\s+)?DATABASE\s+(?P<exists>IF\s+NOT\s+EXISTS\s+)?(?P<name>{NAME_PART})\s*$",
    re.I,
)
# "Each securable object is owned by a single role, which by default is the role used to
# create the object" (https://docs.snowflake.com/en/user-guide/security-access-control-overview,
# "Securable objects"): SHOW GRANTS ON SCHEMA lists the creating role's OWNERSHIP.
CREATE_SCHEMA_RE = re.compile(
    rf"^CREATE\s+(?P<replace>OR\s+REPLACE\s+)?(?:TRANSIENT\s+)?SCHEMA\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{NAME_PART}(?:\.{NAME_PART})?)\s*(?:;\s*)?$",
    re.I,
)
DROP_SCHEMA_RE = re.compile(
    rf"^DROP\s+SCHEMA\s+(?:IF\s+EXISTS\s+)?(?P<name>{NAME_PART}(?:\.{NAME_PART})?)(?:\s+(?:CASCADE|RESTRICT))?\s*(?:;\s*)?$",
    re.I,
)
LIST_RE = re.compile(
    r"^(?:LIST|LS)\s+(?:'@(?P<quoted>(?:[^'\\]|\\.|'')*)'|@(?P<plain>[^\s']+))"
    r"(?:\s+PATTERN\s*=\s*(?P<pattern>'(?:[^'\\]|\\.|'')*'))?\s*$",
    re.I | re.S,
)


class AccountStatements:
    """The statements on account objects, stages' and file formats' metadata, and the
    metadata queries, for Session (below). Each returns a result, or None when the statement
    is not one of them (it then goes to fakesnow)."""

    conn: Any
    database: str
    schema: str
    role: str | None
    warehouse: str | None
    use_role: str | None
    use_warehouse: str | None

    # --- session context ---

    def cur_database(self) -> str:
        return getattr(self.conn, "database", None) or self.database

    def cur_schema(self) -> str:
        return getattr(self.conn, "schema", None) or self.schema

    def current_user(self) -> str:
        # The JWT's user (check_auth accepts only the configured one, upper case).
        return STATE.settings.user.upper()

    def user_record(self) -> AccountObject | None:
        with STATE.objects_lock:
            return STATE.users.get(self.current_user())

    def current_role(self) -> str:
        """USE ROLE, else the request's `role`, else the user's DEFAULT_ROLE, else PUBLIC. The
        request's role is not checked against the roles that exist (Snowflake refuses a role
        the user lacks at sign-in; the stand-in's tests send one that is never created)."""
        if self.use_role:
            return self.use_role
        if self.role:
            return self.role
        user = self.user_record()
        if user is not None and user.props.get("DEFAULT_ROLE"):
            return user.props["DEFAULT_ROLE"]
        return "PUBLIC"

    def current_warehouse(self) -> str | None:
        """The session's warehouse (USE WAREHOUSE, the request's `warehouse`, else the user's
        DEFAULT_WAREHOUSE) if it exists and the role can use it, else NULL: a session whose
        warehouse does not exist or is not usable signs in without one, and statements that
        need one fail later ("No active warehouse selected in the current session",
        https://github.com/snowflakedb/snowpark-python/issues/695; the role is validated at
        sign-in, the warehouse is not, https://github.com/snowflakedb/gosnowflake/issues/110)."""
        name = self.use_warehouse or self.warehouse
        if not name:
            user = self.user_record()
            name = user.props.get("DEFAULT_WAREHOUSE") if user is not None else None
        if not name:
            return None
        with STATE.objects_lock:
            warehouse = STATE.warehouses.get(name)
            grants = list(STATE.grants)
        if warehouse is None:
            return None
        held = role_closure(self.current_role())
        if warehouse.owner in held or any(
            g.granted_on == "WAREHOUSE" and g.name == name and g.granted_to == "ROLE" and g.grantee in held
            and g.privilege in ("USAGE", "OWNERSHIP")
            for g in grants
        ):
            return name
        return None

    def qualify(self, parts: list[str]) -> tuple[str, str, str]:
        if len(parts) > 3:
            raise SqlError("001003", "42000", f"SQL compilation error:\ninvalid identifier '{'.'.join(parts)}'")
        full = [self.cur_database(), self.cur_schema()][: 3 - len(parts)] + parts
        return (full[0], full[1], full[2])

    def schema_exists(self, database: str, schema: str) -> bool:
        with STATE.sql_lock:
            row = STATE.fs.duck_conn.cursor().execute(
                "SELECT 1 FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
                [database, schema],
            ).fetchone()
        return row is not None

    def database_exists(self, database: str) -> bool:
        with STATE.sql_lock:
            row = STATE.fs.duck_conn.cursor().execute(
                "SELECT 1 FROM duckdb_databases() WHERE database_name = ?", [database]
            ).fetchone()
        return row is not None and not database.startswith("_fs") and database not in ("system", "temp", "memory")

    # --- dispatch ---

    def account_statement(self, sql: str) -> dict[str, Any] | None:
        text = blank_comments(sql)
        head = re.sub(r"\s+", " ", text.strip()).upper()
        # "The OR REPLACE and IF NOT EXISTS clauses are mutually exclusive. They can't both be
        # used in the same statement." (usage notes of every CREATE, e.g.
        # https://docs.snowflake.com/en/sql-reference/sql/create-api-integration). Snowflake's
        # code and message for the refusal are not documented: the stand-in's.
        if CREATE_BOTH_RE.match(text):
            raise SqlError(
                CLAUSES_EXCLUSIVE,
                "42601",
                "stand-in: OR REPLACE and IF NOT EXISTS are mutually exclusive; use one of them",
            )
        if CONTEXT_SELECT_RE.match(text.strip()) and all(
            f.upper() in CONTEXT_FUNCTIONS for f, _ in re.findall(CONTEXT_ITEM, text.strip()[len("SELECT") :], re.I)
        ):
            return self.select_context(text.strip())
        if m := re.match(r"^CREATE (?:OR REPLACE )?(?:SECURE )?(ROLE|WAREHOUSE|USER|STORAGE INTEGRATION|API INTEGRATION|EXTERNAL FUNCTION)\b", head):
            return {
                "ROLE": self.create_role,
                "WAREHOUSE": self.create_warehouse,
                "USER": self.create_user,
                "STORAGE INTEGRATION": self.create_integration,
                "API INTEGRATION": self.create_integration,
                "EXTERNAL FUNCTION": self.create_external_function,
            }[m[1]](text)
        if head.startswith(("GRANT ", "REVOKE ")):
            return self.grant(text)
        if re.match(r"^ALTER USER\b", head):
            return self.alter_user(text)
        if re.match(r"^ALTER (?:STORAGE |API )?INTEGRATION\b", head):
            return self.alter_integration(text)
        if re.match(r"^ALTER FILE FORMAT\b", head):
            return self.alter_file_format(text)
        if re.match(r"^ALTER STAGE\b", head):
            return self.alter_stage(text)
        if re.match(r"^USE (ROLE|WAREHOUSE)\b", head):
            return self.use(text)
        if re.match(r"^DESC(?:RIBE)? (?:STORAGE |API )?INTEGRATION\b", head):
            return self.desc_integration(text)
        if re.match(r"^DESC(?:RIBE)? FILE FORMAT\b", head):
            return self.desc_file_format(text)
        if re.match(r"^DESC(?:RIBE)? STAGE\b", head):
            return self.desc_stage(text)
        if re.match(r"^DESC(?:RIBE)? FUNCTION\b", head):
            return self.desc_function(text)
        if re.match(r"^SHOW (?:STORAGE |API )?INTEGRATIONS\b", head):
            return self.show_integrations(text)
        if re.match(r"^SHOW GRANTS\b", head):
            return self.show_grants(text)
        if re.match(r"^SHOW (?:EXTERNAL|USER) FUNCTIONS\b", head):
            return self.show_functions(text)
        if re.match(r"^SHOW (?:USER )?PROCEDURES\b", head):
            return self.show_procedures(text)
        if re.match(r"^(?:LIST|LS) ", head):
            return self.list_stage(text.strip().rstrip(";").strip())
        if m := re.match(r"^DROP (PROCEDURE|FUNCTION|ROLE|WAREHOUSE|USER|(?:STORAGE |API )?INTEGRATION)\b", head):
            return self.drop(text, m[1])
        return None

    # --- SELECT CURRENT_…() ---

    def select_context(self, text: str) -> dict[str, Any]:
        """SELECT of context functions only (https://docs.snowflake.com/en/sql-reference/functions-context):
        one text column each, named after the call as Snowflake names it (CURRENT_WAREHOUSE())."""
        items = re.findall(CONTEXT_ITEM, text[len("SELECT") :], re.I)
        account = STATE.settings.account.upper()
        values = {
            "CURRENT_USER": self.current_user,
            "CURRENT_ROLE": self.current_role,
            "CURRENT_WAREHOUSE": self.current_warehouse,
            "CURRENT_DATABASE": self.cur_database,
            "CURRENT_SCHEMA": self.cur_schema,
            "CURRENT_ACCOUNT": lambda: account,
            "CURRENT_ACCOUNT_NAME": lambda: account.split("-", 1)[-1],
            "CURRENT_ORGANIZATION_NAME": lambda: account.split("-", 1)[0],
        }
        columns, row = [], []
        for function, alias in items:
            f = function.upper()
            if f not in values:
                raise SqlError("002140", "42601", f"SQL compilation error:\nUnknown function {f}")
            name = (alias[1:-1].replace('""', '"') if alias.startswith('"') else alias.upper()) if alias else f"{f}()"
            columns.append(column(name, "text"))
            row.append(values[f]())
        return result_set(columns, [row])

    # --- CREATE ROLE / WAREHOUSE / USER / … INTEGRATION ---

    def create_header(self, p: Parser, *kind: str) -> tuple[bool, bool, list[str]]:
        """CREATE [OR REPLACE] <kind> [IF NOT EXISTS] <name>: (replace, if_not_exists, name)."""
        p.expect("CREATE")
        replace = p.accept("OR", "REPLACE")
        p.accept("SECURE")
        p.expect(*kind)
        if_not_exists = p.accept("IF", "NOT", "EXISTS")
        return replace, if_not_exists, p.name()

    def create_account_object(
        self, text: str, kind: tuple[str, ...], label: str, registry: dict[str, AccountObject], specs: dict[str, tuple],
        check=None, category: str = "",
    ) -> dict[str, Any]:
        p = Parser(text)
        replace, if_not_exists, parts = self.create_header(p, *kind)
        if len(parts) != 1:
            raise SqlError("001003", "42000", f"SQL compilation error:\ninvalid identifier '{'.'.join(parts)}'")
        name = parts[0]
        props = parse_properties(p, specs)
        if check is not None:
            check(props)
        with STATE.objects_lock:
            if name in registry or (kind == ("ROLE",) and name in SYSTEM_ROLES):
                if if_not_exists:
                    return status_result(f"{name} already exists, statement succeeded.")
                if not replace or kind == ("ROLE",) and name in SYSTEM_ROLES:
                    raise already_exists(name)
                if category and registry[name].category != category:
                    raise already_exists(name)
                if kind == ("ROLE",):
                    # Replacing a role drops it, and with it the grants to it.
                    STATE.grants = [g for g in STATE.grants if not (g.granted_to == "ROLE" and g.grantee == name)]
            registry[name] = AccountObject(name, self.current_role(), now_utc(), props, category)
        return status_result(f"{label} {name} successfully created.")

    def create_role(self, text: str) -> dict[str, Any]:
        # https://docs.snowflake.com/en/sql-reference/sql/create-role
        return self.create_account_object(text, ("ROLE",), "Role", STATE.roles, ROLE_PROPS)

    def create_warehouse(self, text: str) -> dict[str, Any]:
        # https://docs.snowflake.com/en/sql-reference/sql/create-warehouse
        return self.create_account_object(text, ("WAREHOUSE",), "Warehouse", STATE.warehouses, WAREHOUSE_PROPS)

    def create_user(self, text: str) -> dict[str, Any]:
        # https://docs.snowflake.com/en/sql-reference/sql/create-user: DEFAULT_ROLE and
        # DEFAULT_WAREHOUSE are not checked ("the CREATE USER operation does not verify that
        # the role exists"), and a default role is not a grant.
        return self.create_account_object(text, ("USER",), "User", STATE.users, USER_PROPS)

    def create_integration(self, text: str) -> dict[str, Any]:
        storage = bool(re.match(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?STORAGE\b", text, re.I))
        kind = ("STORAGE", "INTEGRATION") if storage else ("API", "INTEGRATION")
        specs = STORAGE_INTEGRATION_PROPS if storage else API_INTEGRATION_PROPS
        return self.create_account_object(
            text, kind, "Integration", STATE.integrations, specs,
            check=self.check_storage_integration if storage else self.check_api_integration,
            category="STORAGE" if storage else "API",
        )

    @staticmethod
    def require(props: dict[str, Any], names: list[str], what: str, doc: str) -> None:
        missing = [n for n in names if n not in props]
        if missing:
            raise SqlError(
                MISSING_PROPERTY,
                "42601",
                f"stand-in: {what} needs {', '.join(missing)} ({doc})",
            )

    def check_storage_integration(self, props: dict[str, Any]) -> None:
        # TYPE, ENABLED, STORAGE_ALLOWED_LOCATIONS and, for S3, STORAGE_PROVIDER and
        # STORAGE_AWS_ROLE_ARN are required (the syntax of
        # https://docs.snowflake.com/en/sql-reference/sql/create-storage-integration).
        doc = "https://docs.snowflake.com/en/sql-reference/sql/create-storage-integration"
        self.require(props, ["TYPE", "STORAGE_PROVIDER", "ENABLED", "STORAGE_ALLOWED_LOCATIONS"], "CREATE STORAGE INTEGRATION", doc)
        if props["STORAGE_PROVIDER"].startswith("S3"):
            self.require(props, ["STORAGE_AWS_ROLE_ARN"], "a storage integration for S3", doc)

    def check_api_integration(self, props: dict[str, Any]) -> None:
        doc = "https://docs.snowflake.com/en/sql-reference/sql/create-api-integration"
        self.require(props, ["API_PROVIDER", "API_ALLOWED_PREFIXES", "ENABLED"], "CREATE API INTEGRATION", doc)
        if props["API_PROVIDER"].startswith("AWS_"):
            self.require(props, ["API_AWS_ROLE_ARN"], "an API integration for Amazon API Gateway", doc)

    # --- CREATE EXTERNAL FUNCTION ---

    def create_external_function(self, text: str) -> dict[str, Any]:
        """https://docs.snowflake.com/en/sql-reference/sql/create-external-function: kept by
        name and argument types (overloads), checked against its API integration."""
        p = Parser(text)
        p.expect("CREATE")
        replace = p.accept("OR", "REPLACE")
        secure = p.accept("SECURE")
        p.expect("EXTERNAL", "FUNCTION")
        if_not_exists = p.accept("IF", "NOT", "EXISTS")
        database, schema, name = self.qualify(p.name())
        p.expect_punct("(")
        args: list[tuple[str, str]] = []
        while not p.accept_punct(")"):
            arg = p.next()
            if arg.kind not in ("word", "qid"):
                raise p.unexpected(arg)
            args.append((ident_part(arg), parse_type(p)))
            if not p.is_punct(")"):
                p.expect_punct(",")
        p.expect("RETURNS")
        returns = parse_type(p)
        not_null = p.accept("NOT", "NULL")
        if not not_null:
            p.accept("NULL")
        null_handling = "CALLED ON NULL INPUT"
        if p.accept("CALLED", "ON", "NULL", "INPUT"):
            pass
        elif p.accept("RETURNS", "NULL", "ON", "NULL", "INPUT") or p.accept("STRICT"):
            null_handling = "RETURNS NULL ON NULL INPUT"
        volatility = "VOLATILE"
        if p.accept("IMMUTABLE"):
            volatility = "IMMUTABLE"
        else:
            p.accept("VOLATILE")
        props = parse_properties(p, EXTERNAL_FUNCTION_PROPS, stop=("AS",))
        p.expect("AS")
        body = p.value()
        if body.kind != "str":
            raise p.unexpected(p.toks[p.i - 1])
        if not p.done():
            raise p.unexpected()
        url = body.value
        if "API_INTEGRATION" not in props:
            raise SqlError(
                MISSING_PROPERTY, "42601",
                "stand-in: CREATE EXTERNAL FUNCTION needs API_INTEGRATION "
                "(https://docs.snowflake.com/en/sql-reference/sql/create-external-function)",
            )
        max_batch_rows = None
        if "MAX_BATCH_ROWS" in props:
            # "This specifies the maximum number of rows in each batch": a positive integer.
            raw = str(props["MAX_BATCH_ROWS"])
            if not re.fullmatch(r"\+?\d+", raw) or int(raw) < 1:
                raise invalid_parameter("MAX_BATCH_ROWS", raw)
            max_batch_rows = int(raw)
        headers = []
        if "HEADERS" in props:
            raw = props["HEADERS"]
            if not isinstance(raw, list) or not all(isinstance(h, tuple) for h in raw):
                raise invalid_parameter("HEADERS", str(raw))
            headers = [(str(k), str(v)) for k, v in raw]
        context_headers = []
        if "CONTEXT_HEADERS" in props:
            raw = props["CONTEXT_HEADERS"]
            raw = raw if isinstance(raw, list) else [raw]
            for h in raw:
                if str(h).upper() not in CONTEXT_HEADER_FUNCTIONS:
                    raise invalid_parameter("CONTEXT_HEADERS", str(h))
            context_headers = [str(h).upper() for h in raw]
        if not self.schema_exists(database, schema):
            raise not_found("Schema", display_name([database, schema]))
        integration_name = props["API_INTEGRATION"]
        with STATE.objects_lock:
            integration = STATE.integrations.get(integration_name)
        if integration is None or integration.category != "API":
            raise not_found("Integration", integration_name)
        # API_ALLOWED_PREFIXES "Explicitly limits external functions that use the integration
        # to reference one or more HTTPS proxy service endpoints … Each URL … is treated as a
        # prefix", and API_BLOCKED_PREFIXES "takes precedence over API_ALLOWED_PREFIXES"
        # (https://docs.snowflake.com/en/sql-reference/sql/create-api-integration). The page
        # does not say when Snowflake checks it; the stand-in checks when the function is
        # created, with a code of its own.
        allowed = integration.props.get("API_ALLOWED_PREFIXES", [])
        blocked = integration.props.get("API_BLOCKED_PREFIXES", [])
        if not any(url.startswith(a) for a in allowed) or any(url.startswith(b) for b in blocked):
            raise SqlError(
                NOT_ALLOWED_BY_INTEGRATION,
                "42601",
                f"stand-in: URL '{url}' is not allowed by integration '{integration_name}' "
                f"(API_ALLOWED_PREFIXES {allowed}, API_BLOCKED_PREFIXES {blocked})",
            )
        types = tuple(canonical_type(t) for _, t in args)
        key = (database, schema, name, types)
        function = ExternalFunction(
            database, schema, name, args, returns, not_null, null_handling, volatility, secure,
            props.get("COMMENT", "user-defined function"), integration_name, headers, context_headers,
            max_batch_rows, props.get("COMPRESSION", "AUTO"),
            str(props["REQUEST_TRANSLATOR"]) if "REQUEST_TRANSLATOR" in props else None,
            str(props["RESPONSE_TRANSLATOR"]) if "RESPONSE_TRANSLATOR" in props else None,
            url, self.current_role(), now_utc(),
        )
        with STATE.objects_lock:
            if key in STATE.external_functions:
                if if_not_exists:
                    return status_result(f"{name} already exists, statement succeeded.")
                if not replace:
                    raise already_exists(name)
            STATE.external_functions[key] = function
        return status_result(f"Function {name} successfully created.")

    def function_signature(self, p: Parser) -> tuple[str, str, str, tuple[str, ...], list[str]]:
        """name(type, …) of DESC/DROP FUNCTION|PROCEDURE: qualified name, canonical types, types."""
        database, schema, name = self.qualify(p.name())
        p.expect_punct("(")
        declared = []
        while not p.accept_punct(")"):
            declared.append(parse_type(p))
            if not p.is_punct(")"):
                p.expect_punct(",")
        return database, schema, name, tuple(canonical_type(t) for t in declared), declared

    def find_function(self, database: str, schema: str, name: str, types: tuple[str, ...]) -> ExternalFunction | None:
        with STATE.objects_lock:
            return STATE.external_functions.get((database, schema, name, types))

    def desc_function(self, text: str) -> dict[str, Any]:
        """DESC FUNCTION name(types) of an external function: property, value
        (https://docs.snowflake.com/en/sql-reference/sql/desc-function). The rows and their
        forms are the ones Snowflake's own Terraform provider reads back from a live account
        (signature "(X VARCHAR)", language EXTERNAL, "null handling", headers and
        context_headers as JSON or "null", max_batch_rows a number or "not set";
        https://github.com/Snowflake-Labs/terraform-provider-snowflake, pkg/resources/external_function.go
        and pkg/sdk/testint/external_functions_integration_test.go)."""
        p = Parser(text)
        p.accept("DESC") or p.expect("DESCRIBE")
        p.expect("FUNCTION")
        database, schema, name, types, _ = self.function_signature(p)
        if not p.done():
            raise p.unexpected()
        f = self.find_function(database, schema, name, types)
        if f is None:
            raise not_found("Function", f"{display_name([database, schema, name])}({', '.join(types)})")
        rows = [
            ("signature", "(" + ", ".join(f"{n} {t}" for n, t in f.args) + ")"),
            ("returns", f.returns + (" NOT NULL" if f.not_null else "")),
            ("language", "EXTERNAL"),
            ("null handling", f.null_handling),
            ("volatility", f.volatility),
            ("body", f.url),
            ("headers", json.dumps(dict(f.headers), separators=(",", ":")) if f.headers else "null"),
            ("context_headers", json.dumps(f.context_headers, separators=(",", ":")) if f.context_headers else "null"),
            ("max_batch_rows", str(f.max_batch_rows) if f.max_batch_rows is not None else "not set"),
            ("compression", f.compression),
            ("api_integration", f.api_integration),
            ("request_translator", f.request_translator or "null"),
            ("response_translator", f.response_translator or "null"),
        ]
        return result_set([column("property", "text"), column("value", "text")], [list(r) for r in rows])

    # --- SHOW … FUNCTIONS / PROCEDURES ---

    def show_scope(self, p: Parser, default: str) -> tuple[re.Pattern[str] | None, str, tuple[str, ...]]:
        """[LIKE '…'] [IN ACCOUNT | DATABASE [d] | SCHEMA [s] | s]: the pattern and the scope
        ("ACCOUNT", "DATABASE" (db,), "SCHEMA" (db, schema))."""
        like = None
        if p.accept("LIKE"):
            val = p.value()
            if val.kind != "str":
                raise p.unexpected(p.toks[p.i - 1])
            like = val.value
        scope: tuple[str, tuple[str, ...]] = (default, ())
        if p.accept("IN"):
            if p.accept("ACCOUNT"):
                scope = ("ACCOUNT", ())
            elif p.accept("DATABASE"):
                scope = ("DATABASE", (p.name()[0],) if not p.done() else (self.cur_database(),))
            else:
                p.accept("SCHEMA")
                if p.done():
                    scope = ("SCHEMA", (self.cur_database(), self.cur_schema()))
                else:
                    parts = p.name()
                    full = ([self.cur_database()] + parts)[-2:]
                    scope = ("SCHEMA", (full[0], full[1]))
        if not p.done():
            raise p.unexpected()
        kind, where = scope
        if kind == "DATABASE" and not where:
            where = (self.cur_database(),)
        if kind == "SCHEMA" and not where:
            where = (self.cur_database(), self.cur_schema())
        return like_pattern(like), kind, where

    @staticmethod
    def in_scope(kind: str, where: tuple[str, ...], database: str, schema: str) -> bool:
        return kind == "ACCOUNT" or (kind == "DATABASE" and database == where[0]) or (
            kind == "SCHEMA" and (database, schema) == where
        )

    FUNCTION_COLUMNS = [
        "created_on", "name", "schema_name", "is_builtin", "is_aggregate", "is_ansi", "min_num_arguments",
        "max_num_arguments", "arguments", "description", "catalog_name", "is_table_function",
        "valid_for_clustering", "is_secure", "secrets", "external_access_integrations", "is_external_function",
        "language", "is_memoizable", "is_data_metric",
    ]

    @staticmethod
    def show_columns(names: list[str]) -> list[dict[str, Any]]:
        types = {"created_on": "timestamp_ltz", "min_num_arguments": "fixed", "max_num_arguments": "fixed"}
        return [column(n, types.get(n, "text")) for n in names]

    def show_functions(self, text: str) -> dict[str, Any]:
        """SHOW EXTERNAL FUNCTIONS / SHOW USER FUNCTIONS: the columns of
        https://docs.snowflake.com/en/sql-reference/sql/show-user-functions (SHOW EXTERNAL
        FUNCTIONS, https://docs.snowflake.com/en/sql-reference/sql/show-external-functions,
        lists the account's external functions in the same form). Only the stand-in's external
        functions exist (fakesnow keeps no UDFs)."""
        p = Parser(text)
        p.expect("SHOW")
        external = p.accept("EXTERNAL")
        if not external:
            p.expect("USER")
        p.expect("FUNCTIONS")
        pattern, kind, where = self.show_scope(p, "ACCOUNT" if external else "DATABASE")
        with STATE.objects_lock:
            functions = sorted(STATE.external_functions.values(), key=lambda f: (f.database, f.schema, f.name, len(f.args)))
        rows = []
        for f in functions:
            if not self.in_scope(kind, where, f.database, f.schema) or (pattern and not pattern.fullmatch(f.name)):
                continue
            types = ", ".join(canonical_type(t) for _, t in f.args)
            rows.append([
                encode(f.created_on, "timestamp_ltz"), f.name, f.schema, "N", "N", "N", str(len(f.args)),
                str(len(f.args)), f"{f.name}({types}) RETURN {canonical_type(f.returns)}", f.comment, f.database,
                "N", "N", "Y" if f.secure else "N", None, None, "Y", "EXTERNAL", "N", "N",
            ])
        return result_set(self.show_columns(self.FUNCTION_COLUMNS), rows)

    PROCEDURE_COLUMNS = [
        "created_on", "name", "schema_name", "is_builtin", "is_aggregate", "is_ansi", "min_num_arguments",
        "max_num_arguments", "arguments", "description", "catalog_name", "is_table_function",
        "valid_for_clustering", "is_secure", "secrets", "external_access_integrations",
    ]

    def show_procedures(self, text: str) -> dict[str, Any]:
        """SHOW [USER] PROCEDURES [LIKE] [IN …]: the stand-in's procedures, in the columns of
        https://docs.snowflake.com/en/sql-reference/sql/show-procedures (and secrets,
        external_access_integrations, which a live account adds: Snowflake's Terraform
        provider reads them, pkg/sdk/procedures_gen.go)."""
        p = Parser(text)
        p.expect("SHOW")
        p.accept("USER")
        p.expect("PROCEDURES")
        pattern, kind, where = self.show_scope(p, "DATABASE")
        with STATE.lock:
            procedures = sorted(STATE.procedures.items())
        rows = []
        for key, proc in procedures:
            database, schema, name = key.split(".", 2) if key.count(".") >= 2 else ("", "", key)
            if not self.in_scope(kind, where, database, schema) or (pattern and not pattern.fullmatch(name)):
                continue
            types = ", ".join(canonical_type(t) for t in proc.arg_types)
            table = proc.return_type.startswith("TABLE")
            rows.append([
                encode(proc.created_on, "timestamp_ltz"), name, schema, "N", "N", "N", str(len(proc.params)),
                str(len(proc.params)), f"{name}({types}) RETURN {proc.return_type}", "user-defined procedure",
                database, "Y" if table else "N", "N", "N", None, None,
            ])
        return result_set(self.show_columns(self.PROCEDURE_COLUMNS), rows)

    # --- DROP ---

    def drop(self, text: str, what: str) -> dict[str, Any]:
        p = Parser(text)
        p.expect("DROP")
        what = what.upper()
        p.expect(*what.split())
        if_exists = p.accept("IF", "EXISTS")
        if what in ("PROCEDURE", "FUNCTION"):
            # https://docs.snowflake.com/en/sql-reference/sql/drop-procedure (and drop-function):
            # the argument types tell overloads apart.
            database, schema, name, types, _ = self.function_signature(p)
            if not p.done():
                raise p.unexpected()
            with STATE.objects_lock, STATE.lock:
                if what == "FUNCTION":
                    found = STATE.external_functions.pop((database, schema, name, types), None) is not None
                else:
                    key = ".".join((database, schema, name))
                    proc = STATE.procedures.get(key)
                    found = proc is not None and tuple(canonical_type(t) for t in proc.arg_types) == types
                    if found:
                        del STATE.procedures[key]
            label = f"{display_name([database, schema, name])}({', '.join(types)})"
            kind = "Function" if what == "FUNCTION" else "Procedure"
        else:
            parts = p.name()
            if not p.done():
                raise p.unexpected()
            name = parts[-1]
            registry = {"ROLE": STATE.roles, "WAREHOUSE": STATE.warehouses, "USER": STATE.users}.get(what, STATE.integrations)
            with STATE.objects_lock:
                found = name in registry
                if found:
                    del registry[name]
                    if what == "ROLE":
                        STATE.grants = [g for g in STATE.grants if not (g.granted_to == "ROLE" and g.grantee == name)]
                    else:
                        on = what.split()[-1]
                        STATE.grants = [g for g in STATE.grants if not (g.granted_on == on and g.name == name)]
            label = name
            kind = what.split()[-1].capitalize()
        if found:
            return status_result(f"{name} successfully dropped.")
        if if_exists:
            return status_result(f"Drop statement executed successfully ({name} already dropped).")
        raise not_found(kind, label)

    # --- GRANT / REVOKE ---

    OBJECT_TYPES = (
        ("RESOURCE", "MONITOR"), ("FILE", "FORMAT"), ("EXTERNAL", "TABLE"), ("MATERIALIZED", "VIEW"),
        ("DYNAMIC", "TABLE"), ("EXTERNAL", "VOLUME"), ("COMPUTE", "POOL"), ("NETWORK", "RULE"),
        ("DATABASE", "ROLE"), ("WAREHOUSE",), ("DATABASE",), ("SCHEMA",), ("INTEGRATION",), ("USER",),
        ("TABLE",), ("VIEW",), ("STAGE",), ("FUNCTION",), ("PROCEDURE",), ("SEQUENCE",), ("STREAM",),
        ("TASK",), ("PIPE",), ("SECRET",), ("ROLE",),
    )

    def grant(self, text: str) -> dict[str, Any] | None:
        """GRANT <privileges> ON <object> TO ROLE <role> [WITH GRANT OPTION]
        (https://docs.snowflake.com/en/sql-reference/sql/grant-privilege), GRANT ROLE <role> TO
        {ROLE | USER} <name> (https://docs.snowflake.com/en/sql-reference/sql/grant-role), and
        the REVOKEs of both. The grantee role must exist, as must a warehouse, integration,
        database or schema granted on, and a user granted a role: else "… does not exist or
        not authorized." Grants to shares, applications or database roles go to fakesnow."""
        p = Parser(text)
        revoke = p.accept("REVOKE")
        if not revoke:
            p.expect("GRANT")
        p.accept("GRANT", "OPTION", "FOR")
        role_grant = p.is_word("ROLE") and not p.is_word("ROLE", "ON")
        if role_grant:
            p.expect("ROLE")
            role = p.name()[-1]
            p.expect("FROM" if revoke else "TO")
            if not (p.is_word("ROLE") or p.is_word("USER")):
                return None
            grantee_kind = p.next().text.upper()
            grantee = p.name()[-1]
            if not p.done():
                raise p.unexpected()
            if not role_exists(role):
                raise not_found("Role", role)
            if grantee_kind == "ROLE" and not role_exists(grantee):
                raise not_found("Role", grantee)
            if grantee_kind == "USER":
                with STATE.objects_lock:
                    if grantee not in STATE.users:
                        raise not_found("User", grantee)
            grants = [("USAGE", "ROLE", role)]
            grant_option = False
        else:
            privileges: list[str] = []
            words: list[str] = []
            while not p.is_word("ON"):
                tok = p.next()
                if tok.kind == "punct" and tok.text == ",":
                    privileges.append(" ".join(words))
                    words = []
                elif tok.kind == "word":
                    words.append(tok.text.upper())
                else:
                    raise p.unexpected(tok)
            privileges.append(" ".join(words))
            if not all(privileges):
                raise p.unexpected()
            p.expect("ON")
            if p.is_word("ALL") or p.is_word("FUTURE"):
                return None  # bulk and future grants: not emulated (fakesnow answers)
            on, parts = self.object_after_on(p)
            if parts is None:
                name = STATE.settings.account.upper()
            else:
                if on in ("FUNCTION", "PROCEDURE") and p.is_punct("("):
                    p.value()
                if on in ("WAREHOUSE", "INTEGRATION", "DATABASE", "USER", "ROLE", "RESOURCE_MONITOR", "EXTERNAL_VOLUME", "COMPUTE_POOL"):
                    name = parts[-1]
                elif on == "SCHEMA":
                    name = display_name(([self.cur_database()] + parts)[-2:])
                else:
                    name = display_name(list(self.qualify(parts)))
                self.check_granted_on(on, parts, name)
            p.expect("FROM" if revoke else "TO")
            if not p.accept("ROLE"):
                return None
            grantee_kind = "ROLE"
            grantee = p.name()[-1]
            grant_option = p.accept("WITH", "GRANT", "OPTION")
            p.accept("CASCADE") or p.accept("RESTRICT")
            p.accept("COPY", "CURRENT", "GRANTS") or p.accept("REVOKE", "CURRENT", "GRANTS")
            if not p.done():
                raise p.unexpected()
            if not role_exists(grantee):
                raise not_found("Role", grantee)
            if privileges in (["ALL"], ["ALL PRIVILEGES"]):
                privileges = {
                    "WAREHOUSE": ["MODIFY", "MONITOR", "OPERATE", "USAGE"],
                    "DATABASE": ["CREATE SCHEMA", "MODIFY", "MONITOR", "USAGE"],
                    "INTEGRATION": ["USAGE"],
                }.get(on, ["USAGE"])
            grants = [(priv, on, name) for priv in privileges]
        with STATE.objects_lock:
            for privilege, on, name in grants:
                if privilege == "OWNERSHIP" and not revoke:
                    self.transfer_ownership(on, name, grantee)
                    continue
                same = [
                    g for g in STATE.grants
                    if (g.privilege, g.granted_on, g.name, g.granted_to, g.grantee) == (privilege, on, name, grantee_kind, grantee)
                ]
                if revoke:
                    STATE.grants = [g for g in STATE.grants if g not in same]
                elif same:
                    same[0].grant_option = same[0].grant_option or grant_option
                else:
                    STATE.grants.append(
                        Grant(now_utc(), privilege, on, name, grantee_kind, grantee, grant_option, self.current_role())
                    )
        return status_result("Statement executed successfully.")

    def check_granted_on(self, on: str, parts: list[str], name: str) -> None:
        with STATE.objects_lock:
            registry = {"WAREHOUSE": STATE.warehouses, "INTEGRATION": STATE.integrations, "USER": STATE.users}.get(on)
            missing = registry is not None and parts[-1] not in registry
        if on == "ROLE":
            missing = not role_exists(parts[-1])
        elif on == "DATABASE":
            missing = not self.database_exists(parts[-1])
        elif on == "SCHEMA":
            database, schema = ([self.cur_database()] + parts)[-2:]
            missing = not self.schema_exists(database, schema)
        if missing:
            raise not_found(on.replace("_", " ").capitalize(), name)

    def transfer_ownership(self, on: str, name: str, role: str) -> None:
        registry = {"WAREHOUSE": STATE.warehouses, "INTEGRATION": STATE.integrations, "USER": STATE.users, "ROLE": STATE.roles}.get(on)
        if registry is not None and name in registry:
            registry[name].owner = role
        elif on == "DATABASE":
            STATE.database_owners[name] = (role, STATE.database_owners.get(name, (role, now_utc()))[1])
        elif on == "SCHEMA":
            for key, (_, created) in list(STATE.schema_owners.items()):
                if display_name(list(key)) == name:
                    STATE.schema_owners[key] = (role, created)

    def owned(self) -> list[tuple[str, str, str, datetime.datetime]]:
        """(granted_on, name, owner, created_on) of every object whose owner the stand-in knows."""
        out = []
        with STATE.objects_lock:
            for on, registry in (("ROLE", STATE.roles), ("WAREHOUSE", STATE.warehouses), ("USER", STATE.users), ("INTEGRATION", STATE.integrations)):
                out += [(on, o.name, o.owner, o.created_on) for o in registry.values()]
            out += [("DATABASE", d, owner, created) for d, (owner, created) in STATE.database_owners.items()]
            out += [
                ("SCHEMA", display_name([d, s]), owner, created)
                for (d, s), (owner, created) in STATE.schema_owners.items()
            ]
            for f in STATE.external_functions.values():
                signature = ", ".join(f"{n} {t}" for n, t in f.args)
                name = display_name([f.database, f.schema]) + "." + quote(f"{f.name}({signature}):{f.returns}")
                out.append(("FUNCTION", name, f.owner, f.created_on))
        return out

    def object_after_on(self, p: "Parser") -> tuple[str, list[str] | None]:
        """The object after GRANT … ON / SHOW GRANTS ON: ("ACCOUNT", None), or its type (words
        joined by "_") and its name's parts."""
        if p.accept("ACCOUNT"):
            return "ACCOUNT", None
        on_words = next((t for t in self.OBJECT_TYPES if p.is_word(*t)), None)
        if on_words is None:
            raise p.unexpected()
        p.expect(*on_words)
        return "_".join(on_words), p.name()

    def show_grants(self, text: str) -> dict[str, Any]:
        """SHOW GRANTS ON <object> | TO ROLE <role> | TO USER <user> | OF ROLE <role>
        (https://docs.snowflake.com/en/sql-reference/sql/show-grants): one row per privilege,
        the owner's OWNERSHIP (grant_option true) first for ON; TO ROLE adds what the role
        owns. grant_option is 'true'/'false'; created_on a timestamp."""
        p = Parser(text)
        p.expect("SHOW", "GRANTS")
        with STATE.objects_lock:
            grants = list(STATE.grants)
        ts = lambda d: encode(d, "timestamp_ltz")  # noqa: E731
        if p.accept("ON"):
            on, parts = self.object_after_on(p)
            if parts is None:
                name = STATE.settings.account.upper()
            else:
                name = parts[-1] if on not in ("SCHEMA",) and len(parts) == 1 else display_name(parts)
                if on in ("WAREHOUSE", "INTEGRATION", "DATABASE", "USER", "ROLE", "SCHEMA"):
                    self.check_granted_on(on, parts, name)
            if not p.done():
                raise p.unexpected()
            names = ["created_on", "privilege", "granted_on", "name", "granted_to", "grantee_name", "grant_option",
                     "granted_by_role_type", "granted_by"]
            rows = [
                [ts(created), "OWNERSHIP", on, n, "ROLE", owner, "true", "ROLE", owner]
                for o_on, n, owner, created in self.owned() if o_on == on and n == name
            ]
            rows += [
                [ts(g.created_on), g.privilege, g.granted_on, g.name, g.granted_to, g.grantee,
                 "true" if g.grant_option else "false", "ROLE", g.granted_by]
                for g in grants if g.granted_on == on and g.name == name
            ]
            return result_set([column(n, "timestamp_ltz" if n == "created_on" else "text") for n in names], rows)
        if p.accept("TO", "ROLE"):
            role = p.name()[-1]
            if not p.done():
                raise p.unexpected()
            if not role_exists(role):
                raise not_found("Role", role)
            names = ["created_on", "privilege", "granted_on", "name", "granted_to", "grantee_name", "grant_option", "granted_by"]
            rows = [
                [ts(created), "OWNERSHIP", on, n, "ROLE", role, "true", role]
                for on, n, owner, created in self.owned() if owner == role
            ]
            rows += [
                [ts(g.created_on), g.privilege, g.granted_on, g.name, "ROLE", role, "true" if g.grant_option else "false", g.granted_by]
                for g in grants if g.granted_to == "ROLE" and g.grantee == role
            ]
            return result_set([column(n, "timestamp_ltz" if n == "created_on" else "text") for n in names], rows)
        of = p.accept("OF", "ROLE")
        if of or p.accept("TO", "USER") or p.done():
            target = p.name()[-1] if not p.done() else self.current_user()
            if not p.done():
                raise p.unexpected()
            if of and not role_exists(target):
                raise not_found("Role", target)
            if not of:
                with STATE.objects_lock:
                    if target not in STATE.users:
                        raise not_found("User", target)
            names = ["created_on", "role", "granted_to", "grantee_name", "granted_by"]
            rows = [
                [ts(g.created_on), g.name, g.granted_to, g.grantee, g.granted_by]
                for g in grants
                if g.granted_on == "ROLE" and (g.name == target if of else (g.granted_to == "USER" and g.grantee == target))
            ]
            return result_set([column(n, "timestamp_ltz" if n == "created_on" else "text") for n in names], rows)
        raise p.unexpected()

    # --- USE ROLE / WAREHOUSE ---

    def use(self, text: str) -> dict[str, Any]:
        """USE ROLE / USE WAREHOUSE for the rest of the request
        (https://docs.snowflake.com/en/sql-reference/sql/use-role, .../use-warehouse)."""
        p = Parser(text)
        p.expect("USE")
        if p.accept("ROLE"):
            role = p.name()[-1]
            if not p.done():
                raise p.unexpected()
            if not role_exists(role):
                raise not_found("Role", role)
            self.use_role = role
        else:
            p.expect("WAREHOUSE")
            name = p.name()[-1]
            if not p.done():
                raise p.unexpected()
            with STATE.objects_lock:
                exists = name in STATE.warehouses
            if not exists:
                raise SqlError("002043", "02000", "SQL compilation error:\nObject does not exist, or operation cannot be performed.")
            self.use_warehouse = name
        return status_result("Statement executed successfully.")

    # --- ALTER USER / INTEGRATION / FILE FORMAT / STAGE ---

    def alter_header(self, p: Parser, *kind: str) -> tuple[bool, list[str]]:
        p.expect("ALTER", *kind)
        if_exists = p.accept("IF", "EXISTS")
        return if_exists, p.name()

    def alter_props(self, p: Parser, obj_props: dict[str, Any], specs: dict[str, tuple]) -> None:
        if p.accept("SET"):
            obj_props.update(parse_properties(p, specs))
        elif p.accept("UNSET"):
            while True:
                tok = p.next()
                if tok.kind != "word" or tok.text.upper() not in specs:
                    raise p.unexpected(tok)
                obj_props.pop(tok.text.upper(), None)
                if not p.accept_punct(","):
                    break
            if not p.done():
                raise p.unexpected()
        else:
            raise p.unexpected()

    def alter_user(self, text: str) -> dict[str, Any]:
        # https://docs.snowflake.com/en/sql-reference/sql/alter-user (SET / UNSET).
        p = Parser(text)
        if_exists, parts = self.alter_header(p, "USER")
        with STATE.objects_lock:
            user = STATE.users.get(parts[-1])
            if user is None:
                if if_exists:
                    return status_result("Statement executed successfully.")
                raise not_found("User", parts[-1])
            props = dict(user.props)
            self.alter_props(p, props, USER_PROPS)
            user.props = props
        return status_result("Statement executed successfully.")

    def alter_integration(self, text: str) -> dict[str, Any]:
        # https://docs.snowflake.com/en/sql-reference/sql/alter-storage-integration, alter-api-integration.
        p = Parser(text)
        p.expect("ALTER")
        category = "STORAGE" if p.accept("STORAGE") else "API" if p.accept("API") else ""
        p.expect("INTEGRATION")
        if_exists = p.accept("IF", "EXISTS")
        name = p.name()[-1]
        with STATE.objects_lock:
            integration = STATE.integrations.get(name)
            if integration is None or (category and integration.category != category):
                if if_exists:
                    return status_result("Statement executed successfully.")
                raise not_found("Integration", name)
            props = dict(integration.props)
            specs = STORAGE_INTEGRATION_PROPS if integration.category == "STORAGE" else API_INTEGRATION_PROPS
            self.alter_props(p, props, specs)
            integration.props = props
        return status_result("Statement executed successfully.")

    def alter_file_format(self, text: str) -> dict[str, Any]:
        """ALTER FILE FORMAT … SET options (fakesnow has no ALTER FILE FORMAT): the stand-in's
        record and fakesnow's, which COPY reads (https://docs.snowflake.com/en/sql-reference/sql/alter-file-format)."""
        p = Parser(text)
        if_exists, parts = self.alter_header(p, "FILE", "FORMAT")
        key = self.qualify(parts)
        meta = self.file_format(key)
        if meta is None:
            if if_exists:
                return status_result("Statement executed successfully.")
            raise not_found("File format", display_name(list(key)))
        p.expect("SET")
        format_type, options, comment = parse_format_options(p)
        if not p.done():
            raise p.unexpected()
        merged = {**meta.options, **options}
        for k in merged:
            if k not in FORMAT_OPTIONS[meta.format_type]:
                raise SqlError(OPTION_NOT_FOR_TYPE, "42601", f"stand-in: file format option {k} is not one of TYPE = {meta.format_type}'s")
        with STATE.objects_lock:
            STATE.file_formats[key] = FileFormatMeta(
                meta.format_type, merged, comment if comment is not None else meta.comment, meta.owner, meta.created_on
            )
        with STATE.sql_lock:
            cur = STATE.fs.duck_conn.cursor()
            row = cur.execute(
                "SELECT options FROM _fs_global._fs_information_schema._fs_file_formats "
                "WHERE database_name = ? AND schema_name = ? AND name = ?",
                list(key),
            ).fetchone()
            stored = json.loads(row[0]) if row else {"TYPE": meta.format_type}
            for k, v in options.items():
                stored[k] = [escape_constant(x) for x in v] if isinstance(v, list) else escape_constant(v) if isinstance(v, str) else v
            cur.execute(
                "UPDATE _fs_global._fs_information_schema._fs_file_formats SET options = ? "
                "WHERE database_name = ? AND schema_name = ? AND name = ?",
                [json.dumps(stored), *key],
            )
        return status_result("Statement executed successfully.")

    def alter_stage(self, text: str) -> dict[str, Any]:
        """ALTER STAGE … SET URL / STORAGE_INTEGRATION / FILE_FORMAT / COPY_OPTIONS / COMMENT
        (https://docs.snowflake.com/en/sql-reference/sql/alter-stage; fakesnow has none)."""
        p = Parser(text)
        if_exists, parts = self.alter_header(p, "STAGE")
        key = self.qualify(parts)
        meta = self.stage_meta(key)
        if meta is None:
            if if_exists:
                return status_result("Statement executed successfully.")
            raise not_found("Stage", display_name(list(key)))
        p.expect("SET")
        props = self.parse_stage_properties(p)
        with STATE.objects_lock:
            if "URL" in props:
                meta.url = props["URL"]
            if "STORAGE_INTEGRATION" in props:
                meta.storage_integration = props["STORAGE_INTEGRATION"]
            if "FILE_FORMAT" in props:
                meta.file_format = props["FILE_FORMAT"]
            if "COPY_OPTIONS" in props:
                meta.copy_options = props["COPY_OPTIONS"]
            if "COMMENT" in props:
                meta.comment = props["COMMENT"]
            if "CREDENTIALS" in props:
                meta.aws_key_id = self.aws_key_id(props)
            STATE.stage_meta[key] = meta
        self.check_stage_location(meta)
        with STATE.sql_lock:
            if "URL" in props and meta.url is not None:
                url = meta.url
                local = f"file://{mirror_path(url[len('s3://'):])}" if url.startswith("s3://") else url
                STATE.fs.duck_conn.cursor().execute(
                    "UPDATE _fs_global._fs_information_schema._fs_stages SET url = ? "
                    "WHERE database_name = ? AND schema_name = ? AND name = ?",
                    [local, *key],
                )
            self.sync_stage_integration(key, meta)
        clause = top_level_option(text, "FILE_FORMAT")
        if clause is not None:
            # What COPY reads, as remember_stage_format keeps it.
            with STATE.lock:
                STATE.stage_formats[key] = format_options(clause) if clause.startswith("(") else {"FORMAT_NAME": clause}
        return status_result("Statement executed successfully.")

    # --- integrations: DESC, SHOW ---

    def desc_integration(self, text: str) -> dict[str, Any]:
        """DESC [STORAGE | API] INTEGRATION: property, property_type, property_value,
        property_default (https://docs.snowflake.com/en/sql-reference/sql/desc-integration).
        The rows, types and value forms are those of
        https://docs.snowflake.com/en/user-guide/data-load-s3-config-storage-integration (Step 4)
        and of a live account as Snowflake's Terraform provider tests it
        (pkg/sdk/testint/storage_integration_gen_integration_test.go and
        api_integrations_gen_integration_test.go): ENABLED Boolean true|false (default false),
        lists as comma-joined values without spaces or brackets (default []), API_PROVIDER in
        upper case, strings with an empty default, COMMENT and API_KEY ('' when unset)."""
        p = Parser(text)
        p.accept("DESC") or p.expect("DESCRIBE")
        category = "STORAGE" if p.accept("STORAGE") else "API" if p.accept("API") else ""
        p.expect("INTEGRATION")
        name = p.name()[-1]
        if not p.done():
            raise p.unexpected()
        with STATE.objects_lock:
            integration = STATE.integrations.get(name)
        if integration is None or (category and integration.category != category):
            raise not_found("Integration", name)
        props = integration.props
        b = lambda v: "true" if v else "false"  # noqa: E731
        joined = lambda v: ",".join(v or [])  # noqa: E731
        if integration.category == "STORAGE":
            provider = props.get("STORAGE_PROVIDER", "")
            rows = [
                ("ENABLED", "Boolean", b(props.get("ENABLED")), "false"),
                ("STORAGE_PROVIDER", "String", provider, ""),
                ("STORAGE_ALLOWED_LOCATIONS", "List", joined(props.get("STORAGE_ALLOWED_LOCATIONS")), "[]"),
                ("STORAGE_BLOCKED_LOCATIONS", "List", joined(props.get("STORAGE_BLOCKED_LOCATIONS")), "[]"),
            ]
            if provider.startswith("S3"):
                rows += [
                    ("STORAGE_AWS_IAM_USER_ARN", "String", aws_iam_user_arn(), ""),
                    ("STORAGE_AWS_ROLE_ARN", "String", props.get("STORAGE_AWS_ROLE_ARN", ""), ""),
                    ("STORAGE_AWS_EXTERNAL_ID", "String",
                     props.get("STORAGE_AWS_EXTERNAL_ID") or external_id(name, integration.created_on), ""),
                    ("STORAGE_AWS_OBJECT_ACL", "String", props.get("STORAGE_AWS_OBJECT_ACL", ""), ""),
                ]
            elif provider == "GCS":
                rows.append(("STORAGE_GCP_SERVICE_ACCOUNT", "String", f"{hashlib.sha1(name.encode()).hexdigest()[:8]}@gcpuscentral1-1dfa.iam.gserviceaccount.com", ""))
            elif provider == "AZURE":
                rows += [
                    ("AZURE_TENANT_ID", "String", props.get("AZURE_TENANT_ID", ""), ""),
                    ("AZURE_CONSENT_URL", "String", "https://login.microsoftonline.com/consent", ""),
                    ("AZURE_MULTI_TENANT_APP_NAME", "String", "stand-in", ""),
                ]
            if "USE_PRIVATELINK_ENDPOINT" in props:
                rows.append(("USE_PRIVATELINK_ENDPOINT", "Boolean", b(props["USE_PRIVATELINK_ENDPOINT"]), "false"))
            rows.append(("COMMENT", "String", props.get("COMMENT", ""), ""))
        else:
            provider = props.get("API_PROVIDER", "")
            rows = [
                ("ENABLED", "Boolean", b(props.get("ENABLED")), "false"),
                # "The API_KEY displays a masked value if an API key was entered" (DESC
                # INTEGRATION usage notes); a live account shows "☺☺☺".
                ("API_KEY", "String", "☺☺☺" if props.get("API_KEY") else "", ""),
                ("API_PROVIDER", "String", provider, ""),
            ]
            if provider.startswith("AWS_"):
                rows += [
                    ("API_AWS_IAM_USER_ARN", "String", aws_iam_user_arn(), ""),
                    ("API_AWS_ROLE_ARN", "String", props.get("API_AWS_ROLE_ARN", ""), ""),
                    ("API_AWS_EXTERNAL_ID", "String", external_id(name, integration.created_on), ""),
                ]
            for extra in ("AZURE_TENANT_ID", "AZURE_AD_APPLICATION_ID", "GOOGLE_AUDIENCE"):
                if extra in props:
                    rows.append((extra, "String", props[extra], ""))
            rows += [
                ("API_ALLOWED_PREFIXES", "List", joined(props.get("API_ALLOWED_PREFIXES")), "[]"),
                ("API_BLOCKED_PREFIXES", "List", joined(props.get("API_BLOCKED_PREFIXES")), "[]"),
                ("COMMENT", "String", props.get("COMMENT", ""), ""),
            ]
        names = ["property", "property_type", "property_value", "property_default"]
        return result_set([column(n, "text") for n in names], [list(r) for r in rows])

    def show_integrations(self, text: str) -> dict[str, Any]:
        """SHOW [STORAGE | API] INTEGRATIONS [LIKE '…']: name, type, category, enabled, comment,
        created_on (https://docs.snowflake.com/en/sql-reference/sql/show-integrations)."""
        p = Parser(text)
        p.expect("SHOW")
        category = "STORAGE" if p.accept("STORAGE") else "API" if p.accept("API") else ""
        p.expect("INTEGRATIONS")
        pattern, _, _ = self.show_scope(p, "ACCOUNT")
        with STATE.objects_lock:
            integrations = sorted(STATE.integrations.values(), key=lambda i: i.name)
        rows = [
            [i.name, "EXTERNAL_STAGE" if i.category == "STORAGE" else "EXTERNAL_API", i.category,
             "true" if i.props.get("ENABLED") else "false", i.props.get("COMMENT"), encode(i.created_on, "timestamp_ltz")]
            for i in integrations
            if (not category or i.category == category) and (pattern is None or pattern.fullmatch(i.name))
        ]
        columns = [column(n, "text") for n in ("name", "type", "category")]
        columns += [column("enabled", "boolean"), column("comment", "text"), column("created_on", "timestamp_ltz")]
        return result_set(columns, rows)

    # --- file formats ---

    def file_format(self, key: tuple[str, str, str]) -> FileFormatMeta | None:
        """The stand-in's record of a named file format, else fakesnow's (its options as
        stored, with fakesnow's CSV defaults among them)."""
        with STATE.objects_lock:
            meta = STATE.file_formats.get(key)
        if meta is not None:
            return meta
        with STATE.sql_lock:
            row = STATE.fs.duck_conn.cursor().execute(
                "SELECT options, comment, created_on FROM _fs_global._fs_information_schema._fs_file_formats "
                "WHERE database_name = ? AND schema_name = ? AND name = ?",
                list(key),
            ).fetchone()
        if row is None:
            return None
        stored = {k.upper(): stored_option(v) for k, v in json.loads(row[0]).items()}
        format_type = str(stored.pop("TYPE", "CSV")).upper()
        return FileFormatMeta(format_type, stored, row[1] or "", "", row[2])

    def create_file_format(self, sql: str) -> tuple[tuple[str, str, str], bool, FileFormatMeta] | None:
        """Checks a CREATE FILE FORMAT's options (https://docs.snowflake.com/en/sql-reference/sql/create-file-format)
        before fakesnow runs it: (key, whether it replaces or creates, the record)."""
        p = Parser(blank_comments(sql))
        if not p.is_word("CREATE"):
            return None
        p.expect("CREATE")
        replace = p.accept("OR", "REPLACE")
        p.accept("TEMP") or p.accept("TEMPORARY") or p.accept("VOLATILE")
        if not p.accept("FILE", "FORMAT"):
            return None
        p.accept("IF", "NOT", "EXISTS")
        key = self.qualify(p.name())
        format_type, options, comment = parse_format_options(p)
        if not p.done():
            raise p.unexpected()
        format_type = format_type or "CSV"
        for k in options:
            if k not in FORMAT_OPTIONS[format_type]:
                raise SqlError(OPTION_NOT_FOR_TYPE, "42601", f"stand-in: file format option {k} is not one of TYPE = {format_type}'s")
        existed = self.file_format(key) is not None
        meta = FileFormatMeta(format_type, options, comment or "", self.current_role(), now_utc())
        return key, bool(replace) or not existed, meta

    def desc_file_format(self, text: str) -> dict[str, Any]:
        """DESC FILE FORMAT: property, property_type, property_value, property_default, the
        rows of the type's example in https://docs.snowflake.com/en/sql-reference/sql/desc-file-format
        (booleans TRUE/FALSE, NULL_IF as [\\\\N] / [] / [a, b], TYPE's default CSV), values as
        created (else the option's default)."""
        p = Parser(text)
        p.accept("DESC") or p.expect("DESCRIBE")
        p.expect("FILE", "FORMAT")
        key = self.qualify(p.name())
        if not p.done():
            raise p.unexpected()
        meta = self.file_format(key)
        if meta is None:
            raise not_found("File format", display_name(list(key)))
        rows = format_rows(meta.format_type, meta.options, upper_booleans=True)
        names = ["property", "property_type", "property_value", "property_default"]
        return result_set([column(n, "text") for n in names], [list(r) for r in rows])

    # --- stages ---

    STAGE_PROPS = ("URL", "STORAGE_INTEGRATION", "CREDENTIALS", "ENCRYPTION", "FILE_FORMAT", "COPY_OPTIONS",
                   "DIRECTORY", "COMMENT", "ENDPOINT", "USE_PRIVATELINK_ENDPOINT")

    def parse_stage_properties(self, p: Parser) -> dict[str, Any]:
        """A stage's properties (https://docs.snowflake.com/en/sql-reference/sql/create-stage):
        URL, STORAGE_INTEGRATION and COMMENT as written, FILE_FORMAT as a name
        ({"FORMAT_NAME": parts}) or its options, COPY_OPTIONS as options."""
        props: dict[str, Any] = {}
        while not p.done():
            tok = p.next()
            key = tok.text.upper()
            if tok.kind != "word":
                raise p.unexpected(tok)
            if key == "WITH":
                continue
            if key == "TAG" and p.is_punct("("):
                p.value()
                continue
            if key not in self.STAGE_PROPS:
                raise p.unexpected(tok)
            p.expect_punct("=")
            if key == "FILE_FORMAT" and p.is_punct("("):
                p.expect_punct("(")
                format_type, options, _ = parse_format_options(p)
                p.expect_punct(")")
                if format_type:
                    options["TYPE"] = format_type
                props[key] = options
                continue
            val = p.value()
            if key == "FILE_FORMAT":
                props[key] = {"FORMAT_NAME": name_of(val)}
            elif key in ("COPY_OPTIONS",):
                props[key] = {
                    str(plain(v.value[0])).upper(): format_option(v.value[1]) for v in (val.value if val.kind == "list" else []) if v.kind == "pair"
                } if val.kind == "list" else {}
            elif key == "STORAGE_INTEGRATION":
                props[key] = coerce(key, ("name",), val)
            elif key in ("URL", "COMMENT", "ENDPOINT"):
                props[key] = coerce(key, ("str",), val)
            else:
                props[key] = plain(val)
        return props

    def create_stage(self, sql: str) -> tuple[tuple[str, str, str], bool, StageMeta] | None:
        p = Parser(blank_comments(sql))
        p.expect("CREATE")
        replace = p.accept("OR", "REPLACE")
        p.accept("TEMP") or p.accept("TEMPORARY")
        p.expect("STAGE")
        p.accept("IF", "NOT", "EXISTS")
        key = self.qualify(p.name())
        props = self.parse_stage_properties(p)
        meta = StageMeta(
            props.get("URL"), props.get("STORAGE_INTEGRATION"), props.get("FILE_FORMAT", {}),
            props.get("COPY_OPTIONS", {}), props.get("COMMENT", ""), self.current_role(), now_utc(),
            self.aws_key_id(props),
        )
        self.check_stage_location(meta)
        return key, bool(replace) or self.stage_url(".".join(quote(k) for k in key)) is None, meta

    @staticmethod
    def aws_key_id(props: dict[str, Any]) -> str:
        """CREDENTIALS = (AWS_KEY_ID = '…' …)'s key id, which DESC STAGE shows (not the secret)."""
        pairs = props.get("CREDENTIALS")
        pairs = pairs if isinstance(pairs, list) else []
        return next((str(v) for p in pairs if isinstance(p, tuple) for k, v in [p] if str(k).upper() == "AWS_KEY_ID"), "")

    @staticmethod
    def check_stage_location(meta: StageMeta) -> None:
        """"The URL in the stage definition must align with the storage location specified for
        the STORAGE_ALLOWED_LOCATIONS parameter" (https://docs.snowflake.com/en/sql-reference/sql/create-storage-integration),
        checked when the integration exists; a missing integration is not (README)."""
        if meta.url is None or meta.storage_integration is None:
            return
        with STATE.objects_lock:
            integration = STATE.integrations.get(meta.storage_integration)
        if integration is None or integration.category != "STORAGE":
            return
        allowed = integration.props.get("STORAGE_ALLOWED_LOCATIONS", [])
        blocked = integration.props.get("STORAGE_BLOCKED_LOCATIONS", [])
        if not any(a == "*" or meta.url.startswith(a) for a in allowed) or any(meta.url.startswith(b) for b in blocked):
            raise SqlError(
                NOT_ALLOWED_BY_INTEGRATION,
                "42601",
                f"stand-in: URL '{meta.url}' is not allowed by integration '{meta.storage_integration}' "
                f"(STORAGE_ALLOWED_LOCATIONS {allowed}, STORAGE_BLOCKED_LOCATIONS {blocked})",
            )

    def sync_stage_integration(self, key: tuple[str, str, str], meta: StageMeta) -> None:
        """fakesnow's SHOW STAGES reads its own table: give it the stage's integration."""
        with STATE.sql_lock:
            STATE.fs.duck_conn.cursor().execute(
                "UPDATE _fs_global._fs_information_schema._fs_stages SET storage_integration = ? "
                "WHERE database_name = ? AND schema_name = ? AND name = ?",
                [meta.storage_integration, *key],
            )

    def stage_meta(self, key: tuple[str, str, str]) -> StageMeta | None:
        """The stand-in's record of a stage, else what fakesnow knows of it (its URL)."""
        with STATE.objects_lock:
            meta = STATE.stage_meta.get(key)
        if meta is not None:
            return meta
        url = self.stage_url(".".join(quote(k) for k in key))
        if url is None:
            return None
        local = "file://" + STATE.settings.mirror_dir + "/"
        s3 = "s3://" + url[len(local) :] if url.startswith(local) else (url or None)
        return StageMeta(s3, None, {}, {}, "", "", now_utc())

    def desc_stage(self, text: str) -> dict[str, Any]:
        """DESC STAGE: parent_property, property, property_type, property_value,
        property_default (https://docs.snowflake.com/en/sql-reference/sql/desc-stage, whose
        example gives the rows and forms: booleans true/false, URL as ["s3://…"]). A stage
        naming a file format shows STAGE_FILE_FORMAT FORMAT_NAME (and TYPE, the named
        format's), one with inline options their rows; STAGE_INTEGRATION STORAGE_INTEGRATION
        names its integration ('' for none)."""
        p = Parser(text)
        p.accept("DESC") or p.expect("DESCRIBE")
        p.expect("STAGE")
        key = self.qualify(p.name())
        if not p.done():
            raise p.unexpected()
        meta = self.stage_meta(key)
        if meta is None:
            raise not_found("Stage", display_name(list(key)))
        rows: list[tuple[str, str, str, str, str]] = []
        fmt = meta.file_format
        if "FORMAT_NAME" in fmt:
            parts = fmt["FORMAT_NAME"]
            format_key = self.qualify(list(parts))
            named = self.file_format(format_key)
            rows.append(("STAGE_FILE_FORMAT", "FORMAT_NAME", "String", display_name(list(parts)), ""))
            rows.append(("STAGE_FILE_FORMAT", "TYPE", "String", named.format_type if named else "CSV", "CSV"))
        else:
            options = {k: v for k, v in fmt.items() if k != "TYPE"}
            for r in format_rows(str(fmt.get("TYPE", "CSV")).upper(), options, upper_booleans=False):
                rows.append(("STAGE_FILE_FORMAT", *r))
        copy = meta.copy_options
        b = lambda k, d: "true" if copy.get(k, d) else "false"  # noqa: E731
        rows += [
            ("STAGE_COPY_OPTIONS", "ON_ERROR", "String", str(copy.get("ON_ERROR", "ABORT_STATEMENT")), "ABORT_STATEMENT"),
            ("STAGE_COPY_OPTIONS", "SIZE_LIMIT", "Long", str(copy.get("SIZE_LIMIT", "")), ""),
            ("STAGE_COPY_OPTIONS", "PURGE", "Boolean", b("PURGE", False), "false"),
            ("STAGE_COPY_OPTIONS", "RETURN_FAILED_ONLY", "Boolean", b("RETURN_FAILED_ONLY", False), "false"),
            ("STAGE_COPY_OPTIONS", "ENFORCE_LENGTH", "Boolean", b("ENFORCE_LENGTH", True), "true"),
            ("STAGE_COPY_OPTIONS", "TRUNCATECOLUMNS", "Boolean", b("TRUNCATECOLUMNS", False), "false"),
            ("STAGE_COPY_OPTIONS", "FORCE", "Boolean", b("FORCE", False), "false"),
            ("STAGE_LOCATION", "URL", "String", json.dumps([meta.url]) if meta.url else "", ""),
            ("STAGE_INTEGRATION", "STORAGE_INTEGRATION", "String", meta.storage_integration or "", ""),
            ("STAGE_CREDENTIALS", "AWS_KEY_ID", "String", meta.aws_key_id, ""),
            ("DIRECTORY", "ENABLE", "Boolean", "false", "false"),
            ("DIRECTORY", "AUTO_REFRESH", "Boolean", "false", "false"),
        ]
        names = ["parent_property", "property", "property_type", "property_value", "property_default"]
        return result_set([column(n, "text") for n in names], [list(r) for r in rows])

    def list_stage(self, text: str) -> dict[str, Any] | None:
        """LIST @stage[/path] [PATTERN = '…'] of an s3:// stage: the objects under its URL (and
        path) in the S3 endpoint (https://docs.snowflake.com/en/sql-reference/sql/list): name
        (s3://bucket/key), size, md5 (the S3 ETag: "Amazon S3 stages report the value via the
        S3 eTag field"), sha1 ("Not used": NULL), last_modified ("Mon, 11 Sep 2017 18:13:07
        GMT"). A storage failure is 091003 "Failure using stage area". Internal stages go to
        fakesnow."""
        m = LIST_RE.match(text)
        if not m:
            return None
        ref = string_constant("'" + m["quoted"] + "'") if m["quoted"] is not None else m["plain"]
        name = re.match(rf"{NAME_PART}(?:\.{NAME_PART}){{0,2}}", ref)
        if not name or ref.startswith(("~", "%")):
            return None
        parts = [ident_part(t) for t in tokenize(name[0]) if t.kind in ("qid", "word")]
        path = ref[name.end() :].lstrip("/")
        key = self.qualify(parts)
        meta = self.stage_meta(key)
        if meta is None:
            raise not_found("Stage", display_name(list(key)))
        if not meta.url or not meta.url.startswith("s3://"):
            return None
        pattern = re.compile(string_constant(m["pattern"]), re.S) if m["pattern"] else None
        bucket, _, prefix = meta.url[len("s3://") :].partition("/")
        prefix = prefix + path if not prefix or prefix.endswith("/") else prefix + "/" + path
        client = s3_client()
        rows = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    url = f"s3://{bucket}/{o['Key']}"
                    if pattern and not pattern.fullmatch(url):
                        continue
                    modified = email.utils.format_datetime(o["LastModified"].astimezone(datetime.timezone.utc), usegmt=True)
                    rows.append([url, str(o["Size"]), str(o.get("ETag", "")).strip('"'), None, modified])
        except SqlError:
            raise
        except Exception as e:
            raise stage_area_failure(e) from None
        columns = [column("name", "text"), column("size", "fixed", precision=38, scale=0), column("md5", "text"),
                   column("sha1", "text"), column("last_modified", "text")]
        return result_set(columns, rows)


class Session(AccountStatements):
    """One request's connection: fakesnow with the request's database, schema and parameters."""

    def __init__(
        self,
        database: str,
        schema: str,
        stmt: Statement,
        parameters: dict[str, str],
        sent: set[str],
        role: object = None,
        warehouse: object = None,
    ):
        with STATE.sql_lock:
            self.conn = STATE.fs.connect(database=database, schema=schema)
        self.database = self.conn.database
        self.schema = self.conn.schema
        self.stmt = stmt
        self.parameters = parameters
        # The parameters the request itself set (SHOW PARAMETERS reports them at level SESSION).
        self.sent = sent
        # The request's role and warehouse, as sent ("The values in these fields are
        # case-sensitive", https://docs.snowflake.com/en/developer-guide/sql-api/submitting-requests),
        # and what USE ROLE / USE WAREHOUSE chose since.
        self.role = role if isinstance(role, str) and role else None
        self.warehouse = warehouse if isinstance(warehouse, str) and warehouse else None
        self.use_role: str | None = None
        self.use_warehouse: str | None = None

    def close(self) -> None:
        # The connection wraps a cursor of the shared DuckDB database: closing it frees only that.
        with STATE.sql_lock:
            self.conn.close()

    def use_timezone(self) -> None:
        """Puts the session's TIMEZONE on its DuckDB connection, so that what depends on the
        session zone (a TIMESTAMP_TZ cast to DATE, CURRENT_TIMESTAMP, LTZ values, CONVERT_TIMEZONE
        with two arguments) follows it. DuckDB's SET is per connection, and each request has its
        own; set before every statement (under sql_lock) so nothing else can have changed it."""
        zone = self.parameters["TIMEZONE"]
        try:
            self.conn._duck_conn.execute(f"SET TimeZone = '{zone}'")  # noqa: SLF001 (zone is a checked IANA name)
        except Exception:  # DuckDB's ICU may lack a zone Python's tz database has
            raise invalid_parameter("TIMEZONE", zone) from None

    def run(self, sql: str, params: list[Any] | None) -> dict[str, Any]:
        """Runs one statement, returning {"rowType", "rows"} or raising SqlError."""
        if self.stmt.cancel.is_set():
            raise canceled()
        if m := WAIT_RE.match(sql):
            secs = float(m["secs"])
            if self.stmt.cancel.wait(secs):
                raise canceled()
            return text_result("SYSTEM$WAIT", f"waited {m['secs']} seconds")
        if m := SHOW_PARAMETERS_RE.match(sql):
            return self.show_parameters(m["like"], m["user"] is not None, m["name"])
        if (result := self.account_statement(sql)) is not None:
            return result
        if m := PROC_RE.match(sql):
            return self.create_procedure(m)
        if m := EXECUTE_IMMEDIATE_RE.match(sql):
            return self.execute_immediate(m, params)
        if m := CALL_RE.match(sql):
            return self.call(m, params)
        if COPY_RE.match(sql):
            return self.copy_into(sql, params)
        # CREATE FILE FORMAT / STAGE / DATABASE run on fakesnow; the stand-in checks the first
        # two's options first and keeps what DESC shows, and the owner of a new database.
        file_format = self.create_file_format(sql) if CREATE_FILE_FORMAT_RE.match(sql) else None
        stage = CREATE_STAGE_RE.match(sql)
        stage_plan = self.create_stage(sql) if stage else None
        existed = stage is not None and self.stage_url(stage["name"]) is not None
        database = CREATE_DATABASE_RE.match(sql.strip())
        database_name = None
        if database:
            database_name = self.table_parts(f"{database['name']}.X.X")[0]
            if self.database_exists(database_name) and not database["replace"]:
                if database["exists"]:
                    # Answered here: fakesnow's CREATE DATABASE IF NOT EXISTS fails once the
                    # database has a schema of the same name ("SLUICE"."SLUICE", sluice's).
                    return status_result(f"{database_name} already exists, statement succeeded.")
                database_name = None
        created_schema = None
        if schema := CREATE_SCHEMA_RE.match(sql.strip()):
            database_of, schema_name, _ = self.table_parts(f"{schema['name']}.X")
            if schema["replace"] or not self.schema_exists(database_of, schema_name):
                created_schema = (database_of, schema_name)
        dropped = DROP_SCHEMA_RE.match(sql.strip())
        sql = STAGE_URL_RE.sub(lambda m: f"{m[1]}'file://{mirror_path(m[2])}'", sql)
        result = self.fakesnow(sql, params)
        if created_schema is not None:
            with STATE.objects_lock:
                STATE.schema_owners[created_schema] = (self.current_role(), now_utc())
        if dropped:
            database_of, schema_name, _ = self.table_parts(f"{dropped['name']}.X")
            with STATE.objects_lock:
                STATE.schema_owners.pop((database_of, schema_name), None)
        if stage and (stage["replace"] or not existed):
            self.remember_stage_format(stage, sql)
        if stage_plan is not None and stage_plan[1]:
            with STATE.objects_lock:
                STATE.stage_meta[stage_plan[0]] = stage_plan[2]
            self.sync_stage_integration(stage_plan[0], stage_plan[2])
        if file_format is not None and file_format[1]:
            with STATE.objects_lock:
                STATE.file_formats[file_format[0]] = file_format[2]
        if database_name is not None:
            with STATE.objects_lock:
                STATE.database_owners[database_name] = (self.current_role(), now_utc())
        return result

    def fakesnow(self, sql: str, params: list[Any] | None) -> dict[str, Any]:
        with STATE.sql_lock:
            STATE.executions += 1
            self.use_timezone()
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

    def show_parameters(self, like: str | None, in_user: bool = False, user_name: str | None = None) -> dict[str, Any]:
        """SHOW PARAMETERS [LIKE '…'] [IN SESSION | IN USER [name]] with the session's effective
        values (fakesnow answers fixed ones): key, value, default, level, description, type, as
        Snowflake's columns (https://docs.snowflake.com/en/sql-reference/sql/show-parameters).
        A value the request set has level SESSION. QUOTED_IDENTIFIERS_IGNORE_CASE, which a
        request cannot set, is the user's (CREATE USER / ALTER USER … SET), level USER, when
        set ("Account » User » Session", https://docs.snowflake.com/en/sql-reference/parameters#quoted-identifiers-ignore-case).
        IN USER shows the user's own settings (level USER) and the defaults."""
        pattern = like_pattern(string_constant(like)) if like is not None else None
        if in_user:
            name = ident_part(tokenize(user_name)[0]) if user_name else self.current_user()
            with STATE.objects_lock:
                user = STATE.users.get(name)
            if user is None:
                raise not_found("User", name)
        else:
            user = self.user_record()
        rows = []
        for key, kind, description in SHOWN_PARAMETERS:
            if pattern and not pattern.fullmatch(key):
                continue
            default = PARAMETER_DEFAULTS.get(key, FIXED_PARAMETERS.get(key, ""))
            level = ""
            if in_user:
                value = default
            else:
                value = self.parameters.get(key, FIXED_PARAMETERS.get(key, ""))
                level = "SESSION" if key in self.sent else ""
            if user is not None and key in user.props and (in_user or key == "QUOTED_IDENTIFIERS_IGNORE_CASE"):
                raw = user.props[key]
                value = ("TRUE" if raw else "FALSE") if isinstance(raw, bool) else str(raw)
                level = "USER"
            if kind == "BOOLEAN":
                value, default = value.lower(), default.lower()
            rows.append([key, value, default, level, description, kind])
        names = ["key", "value", "default", "level", "description", "type"]
        return result_set([column(n, "text") for n in names], rows)

    # --- procedures and anonymous blocks ---

    def qualified(self, name: str) -> str:
        parts = [p.strip('"') if p.startswith('"') else p.upper() for p in name.split(".")]
        parts = [self.database, self.schema][: 3 - len(parts)] + parts
        return ".".join(p or "" for p in parts)

    def create_procedure(self, m: re.Match[str]) -> dict[str, Any]:
        params, types = [], []
        for arg in filter(None, (a.strip() for a in m["args"].split(","))):
            params.append(arg.split()[0].strip('"').upper())
            types.append(" ".join(arg.split()[1:2]).upper())
        block = scripting_block(quoted_body(m["body"]))
        name = self.qualified(m["name"])
        with STATE.lock:
            STATE.procedures[name] = Procedure(
                params, block.statements, block.returns, m["returns"].strip().upper(), types, now_utc()
            )
        return text_result("status", f"Function {name.split('.')[-1]} successfully created.")

    def execute_immediate(self, m: re.Match[str], params: list[Any] | None) -> dict[str, Any]:
        """EXECUTE IMMEDIATE $$…$$ / '…': a block (an anonymous block, whose one column is named
        "anonymous block") or one statement, run as if sent alone
        (https://docs.snowflake.com/en/sql-reference/sql/execute-immediate)."""
        body = quoted_body(m["body"])
        if not re.match(r"^\s*(BEGIN|DECLARE)\b", blank_comments(body), re.I):
            return self.run(body.strip().rstrip(";"), params)
        block = scripting_block(body)
        return self.run_block(block, {}, "anonymous block", "")

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
        return self.run_block(Block(proc.statements, proc.returns), bound, name.split(".")[-1], proc.return_type)

    def run_block(self, block: Block, bound: dict[str, Any], out_name: str, return_type: str) -> dict[str, Any]:
        """Runs a block's statements in this session (so in its time zone), with `:arg`
        references bound, and answers its RETURN value as one column named out_name."""
        for text in block.statements:
            self.run(*substitute(text, bound))
        if block.returns is None:
            return result_set([column(out_name, "text")], [[None]])
        result = self.run(*substitute(f"SELECT {block.returns}", bound))
        value = result["rows"][0][0] if result["rows"] else None
        sf_type = "variant" if return_type in ("VARIANT", "OBJECT", "ARRAY") else result["rowType"][0]["type"]
        return result_set([column(out_name, sf_type)], [[value]])

    def select_values(self, args: str, params: list[Any] | None) -> tuple[Any, ...]:
        with STATE.sql_lock:
            self.use_timezone()
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
            url = self.stage_url(stage["stage"]) or ""
            if url.startswith("file://" + STATE.settings.mirror_dir):
                s3 = "s3://" + url[len("file://" + STATE.settings.mirror_dir) + 1 :]
                prefix = s3.rstrip("/") + "/" + (stage["path"] or "/").strip("/")
                fetch_from_s3(prefix.rstrip("/") + "/", names)
        target = COPY_TARGET_RE.match(sql)
        assert target, "COPY_RE matched"
        table = self.table_parts(target["t"])
        load_format = self.copy_format(sql, stage["stage"] if stage else None)
        meta = INCLUDE_METADATA_RE.search(sql)
        # One lock from the first row loaded to the NULL_IF pass, so the rows after `before`
        # are this COPY's and no other statement's.
        with STATE.sql_lock:
            before = self.last_rowid(table)
            if meta:
                result, meta_columns = self.copy_with_metadata(sql, meta, stage, names, params)
            else:
                result, meta_columns = self.fakesnow(sql, params), []
            self.apply_parquet_options(sql, table, load_format, before, meta_columns)
        # Report files by their s3:// name, as Snowflake does, not by the local mirror's path.
        local = "file://" + STATE.settings.mirror_dir + "/"
        for row in result["rows"]:
            if row and row[0] and row[0].startswith(local):
                row[0] = "s3://" + row[0][len(local) :]
        return result

    def copy_with_metadata(
        self, sql: str, meta: re.Match[str], stage: re.Match[str] | None, names: list[str] | None, params: list[Any] | None
    ) -> tuple[dict[str, Any], list[str]]:
        """INCLUDE_METADATA, which fakesnow lacks: the COPY runs file by file without it, and the
        rows each file added (the ones whose metadata columns are still NULL) get the file's
        name (relative to the stage) and their 1-based position. Returns the result and the
        metadata columns."""
        pairs = [
            (col[1:-1].replace('""', '"') if col.startswith('"') else col, field.upper())
            for col, field in re.findall(r'("(?:[^"]|"")*"|[\w$]+)\s*=\s*METADATA\$(\w+)', meta["list"], re.I)
        ]
        if not pairs or any(f not in ("FILENAME", "FILE_ROW_NUMBER") for _, f in pairs):
            raise SqlError("009999", "0A000", "stand-in: INCLUDE_METADATA supports METADATA$FILENAME and METADATA$FILE_ROW_NUMBER only")
        if stage is None or names is None:
            raise SqlError("009999", "0A000", "stand-in: INCLUDE_METADATA needs COPY … FROM @stage FILES = (…)")
        target = COPY_TARGET_RE.match(sql)
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
        return result_set(rowtype, rows), [c for c, _ in pairs]

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

    def copy_format(self, sql: str, stage: str | None) -> dict[str, Any]:
        """The file format options a COPY loads with: its own FILE_FORMAT = ( … ), else the
        stage's FILE_FORMAT, else none (Snowflake's defaults). FORMAT_NAME = x takes the named
        format's options, which the clause's other options override. That the COPY's clause
        replaces the stage's whole is the stand-in's reading of
        https://docs.snowflake.com/en/sql-reference/sql/copy-into-table (FILE_FORMAT)."""
        clause = top_level_option(sql, "FILE_FORMAT")
        if clause is not None:
            options = format_options(clause) if clause.startswith("(") else {"FORMAT_NAME": clause}
        elif stage is not None:
            options = dict(STATE.stage_formats.get(self.stage_key(stage), {}))
        else:
            options = {}
        if name := options.pop("FORMAT_NAME", None):
            named = self.named_format(string_constant(name) if name.startswith("'") else name)
            options = {**named, **options}
        return options

    def named_format(self, name: str) -> dict[str, Any]:
        with STATE.sql_lock:
            try:
                named = lookup_file_format(STATE.fs.duck_conn.cursor(), name, self.database, self.schema)
            except snowflake.connector.errors.Error as e:
                raise sql_error(e) from None
        return {k.upper(): stored_option(v) for k, v in named.items()}

    def apply_parquet_options(
        self, sql: str, table: tuple[str, str, str], options: dict[str, Any], before: int, meta_columns: list[str]
    ) -> None:
        """NULL_IF and TRIM_SPACE of a Parquet load, which fakesnow ignores, applied to the rows
        this COPY added (rowid after `before`).

        CREATE FILE FORMAT, TYPE = PARQUET
        (https://docs.snowflake.com/en/sql-reference/sql/create-file-format#type-parquet):
        NULL_IF: "Snowflake replaces these strings in the data load source with SQL NULL ...
        applied ... only when loading Parquet data into separate columns using the
        MATCH_BY_COLUMN_NAME copy option ... Default: \\N"; TRIM_SPACE: "remove leading and
        trailing white space from strings", same condition, "Default: FALSE". Parquet has no
        EMPTY_FIELD_AS_NULL, so '' stays ''. `NULL_IF = ()` means no string becomes NULL.
        The stand-in trims before it compares (its reading) and looks at text columns only,
        never at the INCLUDE_METADATA columns, which come from no file."""
        if str(options.get("TYPE", "CSV")).upper() != "PARQUET":
            return
        match = top_level_option(sql, "MATCH_BY_COLUMN_NAME")
        if match is None or match.strip("'").upper() not in ("CASE_SENSITIVE", "CASE_INSENSITIVE"):
            return
        null_if = options.get("NULL_IF", ["\\N"])
        null_if = [null_if] if isinstance(null_if, str) else [str(v) for v in null_if]
        trim = str(options.get("TRIM_SPACE", "FALSE")).upper() == "TRUE"
        columns = [c for c in self.text_columns(table) if c not in meta_columns]
        if not columns or (not null_if and not trim):
            return
        name = ".".join(quote(p) for p in table)
        sets = []
        for col in columns:
            value = f"trim({quote(col)}, ' \t\n\r')" if trim else quote(col)
            if null_if:
                marks = ", ".join("?" for _ in null_if)
                value = f"CASE WHEN {value} IN ({marks}) THEN NULL ELSE {value} END"
            sets.append(f"{quote(col)} = {value}")
        values = null_if * len(columns)
        update = f"UPDATE {name} SET {', '.join(sets)} WHERE rowid > ?"
        with STATE.sql_lock:
            STATE.fs.duck_conn.cursor().execute(update, [*values, before])

    def text_columns(self, table: tuple[str, str, str]) -> list[str]:
        with STATE.sql_lock:
            rows = (
                STATE.fs.duck_conn.cursor()
                .execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
                    "AND table_name = ? AND data_type = 'VARCHAR' ORDER BY ordinal_position",
                    list(table),
                )
                .fetchall()
            )
        return [r[0] for r in rows]

    def last_rowid(self, table: tuple[str, str, str]) -> int:
        """The highest rowid of the table (-1 when empty): DuckDB appends a load's rows after it."""
        name = ".".join(quote(p) for p in table)
        with STATE.sql_lock:
            try:
                row = STATE.fs.duck_conn.cursor().execute(f"SELECT max(rowid) FROM {name}").fetchone()
            except Exception:  # no such table: the COPY itself will say so
                return -1
        return row[0] if row and row[0] is not None else -1

    def table_parts(self, name: str) -> tuple[str, str, str]:
        """A Snowflake table name's database, schema and table as DuckDB (under fakesnow) knows them."""
        parts = re.findall(r'"(?:[^"]|"")*"|[^.]+', name)
        parts = [p[1:-1].replace('""', '"') if p.startswith('"') else p.upper() for p in parts]
        database, schema, table = ([self.database, self.schema][: 3 - len(parts)] + parts)
        return (database or "", schema or "", table)

    def duck_table(self, name: str) -> str:
        """A Snowflake table name as DuckDB (under fakesnow) knows it, quoted."""
        return ".".join(quote(p) for p in self.table_parts(name))

    def stage_key(self, stage: str) -> tuple[str, str, str]:
        parts = [p.strip('"') if p.startswith('"') else p.upper() for p in stage.split(".")]
        database, schema, name = [self.database, self.schema][: 3 - len(parts)] + parts
        return (database or "", schema or "", name)

    def remember_stage_format(self, stage: re.Match[str], sql: str) -> None:
        """Keeps a created stage's FILE_FORMAT (fakesnow keeps none) for the COPYs that name
        none: `FILE_FORMAT = ( … )` as its options, `FILE_FORMAT = name` as a FORMAT_NAME."""
        key = self.stage_key(stage["name"])
        clause = top_level_option(sql, "FILE_FORMAT")
        with STATE.lock:
            if clause is None:
                STATE.stage_formats.pop(key, None)
            else:
                STATE.stage_formats[key] = format_options(clause) if clause.startswith("(") else {"FORMAT_NAME": clause}

    def stage_url(self, stage: str) -> str | None:
        """The stage's URL as fakesnow keeps it ('' for an internal stage), None if there is none."""
        with STATE.sql_lock:
            row = (
                STATE.fs.duck_conn.cursor()
                .execute(
                    "SELECT url FROM _fs_global._fs_information_schema._fs_stages "
                    "WHERE database_name = ? AND schema_name = ? AND name = ?",
                    list(self.stage_key(stage)),
                )
                .fetchone()
            )
        return (row[0] or "") if row else None


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
    bucket, _, prefix = prefix_url[len("s3://") :].partition("/")
    client = s3_client()
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
        sent = body.get("parameters") or {}
        parameters = effective_parameters(sent)
        session = Session(
            body.get("database") or s.default_database,
            body.get("schema") or s.default_schema,
            stmt,
            parameters,
            {str(k).upper() for k in sent},
            body.get("role"),
            body.get("warehouse"),
        )
        parts = split_statements(stmt.sql)
        wanted = parameters["MULTI_STATEMENT_COUNT"]
        if wanted != "1" and bindings:
            # "Snowflake does not currently support variable binding in multi-statement SQL
            # requests." (https://docs.snowflake.com/en/developer-guide/sql-api/submitting-multiple-statements
            # and .../submitting-requests, "Using bind variables in a statement"). No code is
            # documented for the refusal: the code is the stand-in's.
            raise SqlError(
                MULTI_STATEMENT_BINDINGS,
                "0A000",
                "stand-in: bind variables are not supported in a multi-statement request "
                f"(MULTI_STATEMENT_COUNT = {wanted}); Snowflake does not support variable binding in "
                "multi-statement SQL requests",
            )
        if wanted != "0" and int(wanted) != len(parts):
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
        limit = int(parameters["ROWS_PER_RESULTSET"])
        if len(parts) == 1 and wanted == "1":
            stmt.result = at_most(session.run(parts[0][0], bindings), limit)
            return
        for text, _ in parts:
            child = Statement(str(uuid.uuid4()), None, text, now_ms())
            with STATE.lock:
                STATE.statements[child.handle] = child
                stmt.children.append(child.handle)
            try:
                child.result = at_most(session.run(text, []), limit)
            except SqlError as e:
                child.error = e
                raise
            finally:
                child.done.set()
        stmt.result = text_result("multiple statement execution", MULTI_OK)
    except SqlError as e:
        stmt.error = e
    except Exception as e:  # a stand-in bug: still an answer, never a hang
        stmt.error = SqlError("000603", "XX000", f"stand-in internal error: {type(e).__name__}: {e}")
    finally:
        if session:
            session.close()
        stmt.done.set()


def at_most(result: dict[str, Any], limit: int) -> dict[str, Any]:
    """ROWS_PER_RESULTSET: "Specifies the maximum number of rows returned in a result set. A
    value of 0 specifies no maximum." (https://docs.snowflake.com/en/sql-reference/parameters#rows-per-resultset)"""
    if limit > 0:
        result["rows"] = result["rows"][:limit]
    return result


def now_ms() -> int:
    return int(time.time() * 1000)


# --- HTTP ----------------------------------------------------------------------------------------


def status_url(stmt: Statement) -> str:
    url = f"/api/v2/statements/{stmt.handle}"
    return f"{url}?requestId={stmt.request_id}" if stmt.request_id else url


def answer(stmt: Statement, partition: int = 0, still_running: bool = False) -> Response:
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
    if partition < 0 or partition >= len(partitions):
        return JSONResponse(
            {"code": "391908", "message": f"partition {partition} does not exist", "sqlState": "22023"},
            status_code=422,
        )
    if partition > 0:
        # "In the response for a GET /api/v2/statements/<handle>?partition=partition_number
        # request, the body contains JSON data in compressed form (using gzip). The response
        # includes the HTTP header Content-Encoding: gzip ... These responses do not contain any
        # metadata." (https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses,
        # "Retrieving additional partitions"). Whatever the request's Accept-Encoding says, so a
        # client that cannot decode gzip fails here as it would there.
        data = gzip.compress(json.dumps({"data": partitions[partition]}).encode())
        return Response(data, media_type="application/json", headers={"Content-Encoding": "gzip"})
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


async def submit(request: Request) -> Response:
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
        # The parameters the statement runs with (defaults included), or, when they are
        # refused, what was sent; and what was sent, as sent.
        STATE.last_context["parameters"] = parameter_context(body.get("parameters"))
        STATE.last_context["sentParameters"] = body.get("parameters")
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


async def status(request: Request) -> Response:
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
