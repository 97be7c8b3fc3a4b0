"""A local stand-in for Snowflake's SQL API v2, for sluice's tests and demo.

What is real here: the HTTP protocol of the SQL API v2 (request and response shapes, 200/202/
422/401, polling, cancel, multi-statement, bindings, requestId + retry=true), the key-pair JWT
(RS256 signature checked against the configured public key, iss/sub/exp checked), and the SQL
semantics as far as fakesnow provides them on DuckDB (MERGE, QUALIFY, VARIANT, COPY INTO).
What is not: Snowflake itself. Procedures are a narrow subset (see README.md), results come in
one partition unless --partition-rows says otherwise, and there are no warehouses, roles or
privileges (the request's warehouse and role are accepted, recorded for tests, and ignored).
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
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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
        # Re-entrant so a COPY can hold it across its load and the NULL_IF pass over the rows
        # it added, while the statements it runs take it again.
        self.sql_lock = threading.RLock()
        self.lock = threading.Lock()
        self.statements: dict[str, Statement] = {}
        self.by_request_id: dict[str, str] = {}
        self.procedures: dict[str, Procedure] = {}
        # The FILE_FORMAT of each stage (fakesnow keeps none), by (database, schema, name).
        self.stage_formats: dict[tuple[str, str, str], dict[str, Any]] = {}
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


def timezone_parameter(name: str, value: object) -> str:
    # TIMEZONE takes an IANA zone name (https://docs.snowflake.com/en/sql-reference/parameters#timezone),
    # matched as spelled: the same emulator's live-verified tests show 'utc' refused.
    if not isinstance(value, str) or value not in TIMEZONES:
        raise invalid_parameter(name, value)
    return value


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
    r"^SHOW\s+PARAMETERS(?:\s+LIKE\s+(?P<like>'(?:[^'\\]|\\.|'')*'))?(?:\s+(?:IN|FOR)\s+SESSION)?\s*$", re.I
)
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


class Session:
    """One request's connection: fakesnow with the request's database, schema and parameters."""

    def __init__(self, database: str, schema: str, stmt: Statement, parameters: dict[str, str], sent: set[str]):
        with STATE.sql_lock:
            self.conn = STATE.fs.connect(database=database, schema=schema)
        self.database = self.conn.database
        self.schema = self.conn.schema
        self.stmt = stmt
        self.parameters = parameters
        # The parameters the request itself set (SHOW PARAMETERS reports them at level SESSION).
        self.sent = sent

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
            return self.show_parameters(m["like"])
        if m := PROC_RE.match(sql):
            return self.create_procedure(m)
        if m := EXECUTE_IMMEDIATE_RE.match(sql):
            return self.execute_immediate(m, params)
        if m := CALL_RE.match(sql):
            return self.call(m, params)
        if COPY_RE.match(sql):
            return self.copy_into(sql, params)
        stage = CREATE_STAGE_RE.match(sql)
        existed = stage is not None and self.stage_url(stage["name"]) is not None
        sql = STAGE_URL_RE.sub(lambda m: f"{m[1]}'file://{mirror_path(m[2])}'", sql)
        result = self.fakesnow(sql, params)
        if stage and (stage["replace"] or not existed):
            self.remember_stage_format(stage, sql)
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

    def show_parameters(self, like: str | None) -> dict[str, Any]:
        """SHOW PARAMETERS [LIKE '…'] [IN SESSION] with the session's effective values (fakesnow
        answers fixed ones): key, value, default, level, description, type, as Snowflake's
        columns (https://docs.snowflake.com/en/sql-reference/sql/show-parameters). A value the
        request set has level SESSION."""
        pattern = None
        if like is not None:
            # LIKE is case-insensitive here, with % and _ as wildcards.
            wild = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in string_constant(like))
            pattern = re.compile(wild, re.I | re.S)
        rows = []
        for key, kind, description in SHOWN_PARAMETERS:
            if pattern and not pattern.fullmatch(key):
                continue
            value = self.parameters.get(key, FIXED_PARAMETERS.get(key, ""))
            default = PARAMETER_DEFAULTS.get(key, FIXED_PARAMETERS.get(key, ""))
            if kind == "BOOLEAN":
                value, default = value.lower(), default.lower()
            rows.append([key, value, default, "SESSION" if key in self.sent else "", description, kind])
        names = ["key", "value", "default", "level", "description", "type"]
        return result_set([column(n, "text") for n in names], rows)

    # --- procedures and anonymous blocks ---

    def qualified(self, name: str) -> str:
        parts = [p.strip('"') if p.startswith('"') else p.upper() for p in name.split(".")]
        parts = [self.database, self.schema][: 3 - len(parts)] + parts
        return ".".join(p or "" for p in parts)

    def create_procedure(self, m: re.Match[str]) -> dict[str, Any]:
        params = []
        for arg in filter(None, (a.strip() for a in m["args"].split(","))):
            params.append(arg.split()[0].strip('"').upper())
        block = scripting_block(quoted_body(m["body"]))
        name = self.qualified(m["name"])
        with STATE.lock:
            STATE.procedures[name] = Procedure(params, block.statements, block.returns, m["returns"].strip().upper())
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
        sent = body.get("parameters") or {}
        parameters = effective_parameters(sent)
        session = Session(
            body.get("database") or s.default_database,
            body.get("schema") or s.default_schema,
            stmt,
            parameters,
            {str(k).upper() for k in sent},
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
