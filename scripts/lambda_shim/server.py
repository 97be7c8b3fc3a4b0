"""A local shim for the Lambda Invoke API's asynchronous side, in front of `cargo lambda watch`.

Why: `cargo lambda watch` emulates `POST /2015-03-31/functions/{name}/invocations`, but always
synchronously: it ignores `X-Amz-Invocation-Type: Event`, and has no retries and no on-failure
destinations. sluice's functions fan out with async invokes, so the local stack points its Lambda
client at this shim, which forwards to `cargo lambda watch`.

What it emulates: `Event` invocations answered `202` at once (empty body, `x-amzn-RequestId`),
queued and delivered by a pool of workers as synchronous invokes upstream; a failed delivery
(non-2xx, `X-Amz-Function-Error`, or a JSON body with `errorType` and `errorMessage`) is retried
`--retries` more times (Lambda's default: 2); once retries are exhausted an `--on-failure SRC=DEST`
destination receives Lambda's destination record (`condition: RetriesExhausted`) as another async
invoke, itself retried; a failed destination delivery is logged and dropped (never chained).
`RequestResponse` (or no header) is relayed synchronously; `DryRun` answers 204.

Sync handler errors: cargo lambda watch answers a handler `Err` or a panic with HTTP 500 and a
`{"errorType", "errorMessage"}` body (no `X-Amz-Function-Error`), which AWS SDKs treat as a
retryable service error; real Lambda answers 200 + `X-Amz-Function-Error: Unhandled`. By default
the shim relays the 500 unchanged; `--lambda-sync-errors` rewrites it to Lambda's answer.

Duplicates: real async Lambda is at-least-once; `--duplicate FUNCTION` delivers every event of
FUNCTION that succeeded once more, after the first delivery ended (same request id).

What it does not: no other duplicate delivery, retry delays are
1 s then 2 s (Lambda: about 1 min then 2 min), no maximum event age, no throttling, no reserved
concurrency, no on-success destinations, no DLQ, and the function ARN in records is made up
(us-east-1, account 123456789012).

Run: server.py --host 127.0.0.1 --port PORT --upstream http://127.0.0.1:WATCHPORT
         [--retries 2] [--on-failure extract=finalize ...] [--workers 4] [--log FILE]
         [--lambda-sync-errors] [--timeout 900] [--duplicate extract ...]
It prints one line "sluice-lambda-shim ready on http://HOST:PORT" on stdout when it listens
(`--port 0` picks a free port). `GET /_shim/idle` tells the async work still pending.
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import queue
import re
import signal
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("lambda_shim")

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RETRY_DELAYS = (1.0, 2.0)  # Lambda: ~60 s, then ~120 s.
FAKE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}:$LATEST"
RELAYED_HEADERS = ("Content-Type", "X-Amz-Function-Error", "X-Amz-Executed-Version", "X-Amz-Log-Result")
MAX_BODY = 6 * 1024 * 1024 + 1024  # Lambda's sync payload limit (async is 256 KiB; not enforced).


# The upstream is local: never send it through an HTTP(S)_PROXY from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BadRequest(Exception):
    pass


def function_name(raw: str) -> str:
    """NAME from NAME, NAME:qualifier, ACCOUNT:function:NAME[:q] or a full function ARN."""
    name = urllib.parse.unquote(raw)
    parts = name.split(":")
    if parts[0] == "arn":
        if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
            raise BadRequest(f"not a Lambda function ARN: {name!r}")
        name = parts[6]
    elif len(parts) >= 3 and parts[1] == "function":
        name = parts[2]
    elif len(parts) == 2:
        name = parts[0]
    if not FUNCTION_NAME.match(name):
        raise BadRequest(f"invalid function name: {name!r}")
    return name


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_json(body: bytes) -> Any:
    """The body as JSON; None for an empty body; raises ValueError otherwise."""
    if not body.strip():
        return None
    return json.loads(body)


def is_error_body(body: bytes) -> bool:
    """True for a JSON object with errorType and errorMessage (cargo lambda's handler error/panic)."""
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        return False
    return isinstance(parsed, dict) and "errorType" in parsed and "errorMessage" in parsed


@dataclass
class Outcome:
    ok: bool
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""  # Set when the upstream could not be reached or answered nonsense.

    def describe(self) -> str:
        if self.error:
            return f"shim error: {self.error}"
        fe = self.headers.get("X-Amz-Function-Error")
        text = self.body[:300].decode("utf-8", "replace")
        return f"HTTP {self.status}" + (f" X-Amz-Function-Error={fe}" if fe else "") + f" body={text}"

    def error_payload(self) -> Any:
        """The last error as JSON for a destination record's responsePayload."""
        if not self.error:
            try:
                parsed = parse_json(self.body)
                if parsed is not None:
                    return parsed
            except ValueError:
                pass
        return {"errorType": "Shim", "errorMessage": self.error or self.describe()}


def call_upstream(upstream: str, name: str, body: bytes, client_context: str | None, timeout: float) -> Outcome:
    """One synchronous invoke upstream. Never raises."""
    url = f"{upstream}/2015-03-31/functions/{urllib.parse.quote(name)}/invocations"
    headers = {"X-Amz-Invocation-Type": "RequestResponse", "Content-Type": "application/json"}
    if client_context:
        headers["X-Amz-Client-Context"] = client_context
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with NO_PROXY.open(req, timeout=timeout) as resp:
            status, hdrs, data = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:  # Non-2xx: still an answer to relay.
        status, hdrs = e.code, dict(e.headers.items()) if e.headers else {}
        try:
            data = e.read()
        except Exception:  # noqa: BLE001
            data = b""
    except Exception as e:  # noqa: BLE001 - connection refused, timeout, reset...
        reason = getattr(e, "reason", None) or e
        return Outcome(ok=False, error=f"{type(e).__name__}: {reason} ({url})")
    # Header names are case-insensitive: normalise the ones we look at.
    norm = {}
    for k, v in hdrs.items():
        for want in RELAYED_HEADERS + ("x-amzn-RequestId",):
            if k.lower() == want.lower():
                norm[want] = v
    failed = not (200 <= status < 300) or "X-Amz-Function-Error" in norm or is_error_body(data)
    return Outcome(ok=not failed, status=status, headers=norm, body=data)


@dataclass
class AsyncEvent:
    name: str
    body: bytes
    request_id: str
    client_context: str | None = None
    is_destination: bool = False  # A destination delivery: on failure, log and drop.
    is_duplicate: bool = False  # A --duplicate copy: never duplicated again.


class Dispatcher:
    """The async queue, its workers, retries, destinations and the counters of /_shim/idle."""

    def __init__(self, upstream: str, retries: int, on_failure: dict[str, str], workers: int, timeout: float,
                 duplicate: frozenset[str] = frozenset()):
        self.upstream = upstream.rstrip("/")
        self.duplicate = duplicate
        self.retries = retries
        self.on_failure = on_failure
        self.timeout = timeout
        self.queue: queue.Queue[AsyncEvent | None] = queue.Queue()
        self.lock = threading.Lock()
        self.counts = {"queued": 0, "in_flight": 0, "completed": 0, "failed": 0, "destinations_sent": 0, "duplicates_sent": 0}
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._work, name=f"shim-worker-{i}", daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def stats(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def submit(self, ev: AsyncEvent) -> None:
        with self.lock:
            self.counts["queued"] += 1
        self.queue.put(ev)

    def stop(self, wait: float) -> None:
        self.stopping.set()
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join(timeout=wait / max(1, len(self.threads)))
        left = self.stats()
        if left["queued"] or left["in_flight"]:
            log.warning("stopping with %d queued and %d in-flight async events undelivered", left["queued"], left["in_flight"])

    def _work(self) -> None:
        while True:
            ev = self.queue.get()
            if ev is None or self.stopping.is_set():
                return
            with self.lock:  # Move queued -> in_flight atomically, so /_shim/idle never sees a gap.
                self.counts["queued"] -= 1
                self.counts["in_flight"] += 1
            try:
                self._deliver(ev)
            except Exception:  # noqa: BLE001 - a bug here must not kill the worker.
                log.exception("function=%s request=%s internal error", ev.name, ev.request_id)
                with self.lock:
                    self.counts["failed"] += 1
            finally:
                with self.lock:
                    self.counts["in_flight"] -= 1

    def _deliver(self, ev: AsyncEvent) -> None:
        kind = "destination" if ev.is_destination else "event"
        attempts = self.retries + 1
        outcome = Outcome(ok=False, error="not attempted")
        attempt = 0
        for attempt in range(1, attempts + 1):
            outcome = call_upstream(self.upstream, ev.name, ev.body, ev.client_context, self.timeout)
            if outcome.ok:
                log.info("function=%s %s=%s attempt=%d/%d outcome=ok HTTP %d", ev.name, kind, ev.request_id, attempt, attempts, outcome.status)
                if ev.name in self.duplicate and not ev.is_destination and not ev.is_duplicate:
                    # Lambda's queue may deliver an event again even after a success; here once more,
                    # after the first delivery ended, same request id. Before in_flight drops (idle).
                    log.info("function=%s event=%s delivered again (--duplicate)", ev.name, ev.request_id)
                    self.submit(AsyncEvent(name=ev.name, body=ev.body, request_id=ev.request_id,
                                           client_context=ev.client_context, is_duplicate=True))
                    with self.lock:
                        self.counts["duplicates_sent"] += 1
                with self.lock:
                    self.counts["completed"] += 1
                return
            log.info("function=%s %s=%s attempt=%d/%d outcome=failed %s", ev.name, kind, ev.request_id, attempt, attempts, outcome.describe())
            if attempt < attempts:
                delay = RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)]
                if self.stopping.wait(delay):
                    log.warning("function=%s %s=%s dropped: shim stopping", ev.name, kind, ev.request_id)
                    with self.lock:
                        self.counts["failed"] += 1
                    return
        with self.lock:
            self.counts["failed"] += 1
        if ev.is_destination:
            log.warning("function=%s destination=%s retries exhausted after %d attempts: dropped", ev.name, ev.request_id, attempt)
            return
        dest = self.on_failure.get(ev.name)
        if dest is None:
            log.warning("function=%s event=%s retries exhausted after %d attempts: no destination, dropped", ev.name, ev.request_id, attempt)
            return
        try:
            payload = parse_json(ev.body)
        except ValueError:
            payload = ev.body.decode("utf-8", "replace")
        record = {
            "version": "1.0",
            "timestamp": now_iso(),
            "requestContext": {
                "requestId": ev.request_id,
                "functionArn": FAKE_ARN.format(ev.name),
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempt,
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": outcome.error_payload(),
        }
        dest_ev = AsyncEvent(name=dest, body=json.dumps(record).encode(), request_id=str(uuid.uuid4()), is_destination=True)
        log.warning("function=%s event=%s retries exhausted after %d attempts: sending destination %s=%s", ev.name, ev.request_id, attempt, dest, dest_ev.request_id)
        self.submit(dest_ev)  # Before in_flight drops, so the shim never looks idle in between.
        with self.lock:
            self.counts["destinations_sent"] += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ShimServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name.
        log.debug("%s %s", self.address_string(), format % args)

    # --- answers -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, bad headers...) as JSON, not HTML."""
        self.close_connection = True
        try:
            self._json(code, {"Type": "User", "message": message or explain or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, kind: str, message: str) -> None:
        # Lambda's error shape: {"Type": "User", "message": ...} plus x-amzn-ErrorType.
        self._json(status, {"Type": "User", "message": message}, {"x-amzn-ErrorType": kind})

    # --- request reading ---------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BadRequest("malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(65537).strip():  # Trailers.
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise BadRequest("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if n < 0 or n > MAX_BODY:
            raise BadRequest("request body too large" if n > 0 else "bad Content-Length")
        return self.rfile.read(n)

    # --- routes --------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming.
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_shim/idle":
            self._json(200, self.server.dispatcher.stats())
        else:
            self._discard_body()
            self._error(404, "ResourceNotFoundException", f"no route for GET {path}")

    def do_POST(self) -> None:  # noqa: N802
        try:
            self._post()
        except BadRequest as e:
            self.close_connection = True  # The body may be unread: do not reuse the connection.
            self._error(400, "InvalidRequestContentException", str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - never let one request take the server down.
            log.exception("internal error on POST %s", self.path)
            self.close_connection = True
            try:
                self._error(500, "ServiceException", f"shim internal error: {e}")
            except OSError:
                pass

    def _discard_body(self) -> None:
        try:
            self._read_body()
        except BadRequest:
            self.close_connection = True

    def do_PUT(self) -> None:  # noqa: N802
        self._discard_body()
        self._error(404, "ResourceNotFoundException", f"no route for {self.command} {self.path}")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _post(self) -> None:
        path = urllib.parse.urlsplit(self.path).path  # ?Qualifier=... is ignored.
        m = INVOKE_PATH.match(path)
        if not m:
            self._discard_body()
            self._error(404, "ResourceNotFoundException", f"no route for POST {path}")
            return
        name = function_name(m.group(1))
        body = self._read_body()
        itype = self.headers.get("X-Amz-Invocation-Type", "RequestResponse").strip()
        client_context = self.headers.get("X-Amz-Client-Context")
        disp = self.server.dispatcher
        if itype.lower() == "event":
            try:
                parse_json(body)
            except ValueError as e:
                raise BadRequest(f"Could not parse request body into json: {e}") from None
            request_id = str(uuid.uuid4())
            disp.submit(AsyncEvent(name=name, body=body, request_id=request_id, client_context=client_context))
            log.info("function=%s event=%s queued (%d bytes)", name, request_id, len(body))
            self._send(202, b"", {"x-amzn-RequestId": request_id})
        elif itype.lower() == "dryrun":
            self._send(204, b"", {"x-amzn-RequestId": str(uuid.uuid4())})
        elif itype.lower() == "requestresponse":
            out = call_upstream(disp.upstream, name, body, client_context, disp.timeout)
            if out.error:
                log.info("function=%s sync outcome=failed %s", name, out.describe())
                self._json(502, {"errorType": "Shim", "errorMessage": out.error}, {"x-amzn-ErrorType": "ServiceException"})
                return
            log.info("function=%s sync outcome=%s HTTP %d", name, "ok" if out.ok else "failed", out.status)
            headers = {k: v for k, v in out.headers.items()}
            headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
            status = out.status
            if self.server.lambda_sync_errors and not out.ok and "X-Amz-Function-Error" not in headers and is_error_body(out.body):
                # cargo lambda watch answers a handler error or panic with HTTP 500; real Lambda
                # answers 200 + X-Amz-Function-Error: Unhandled (and SDKs do not retry that).
                status = 200
                headers.update({"X-Amz-Function-Error": "Unhandled", "Content-Type": "application/json"})
                headers.setdefault("X-Amz-Executed-Version", "$LATEST")
            self._send(status, out.body, headers)
        else:
            raise BadRequest(f"invalid X-Amz-Invocation-Type: {itype!r} (Event, RequestResponse or DryRun)")


class ShimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], dispatcher: Dispatcher, family: int, lambda_sync_errors: bool = False):
        self.address_family = family
        self.dispatcher = dispatcher
        self.lambda_sync_errors = lambda_sync_errors
        super().__init__(addr, Handler)


def loopback(host: str) -> tuple[str, int]:
    """The address to bind and its family, or SystemExit if host is not a loopback address."""
    if host == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise SystemExit(f"lambda_shim: refusing to bind {host!r}: only loopback addresses (127.0.0.1, ::1, localhost)")
    return str(ip), socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Async invoke, retries and on-failure destinations in front of cargo lambda watch.")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1, ::1, localhost)")
    ap.add_argument("--port", type=int, default=9001, help="port to bind (0 = any free port)")
    ap.add_argument("--upstream", required=True, help="cargo lambda watch base URL, e.g. http://127.0.0.1:9000")
    ap.add_argument("--retries", type=int, default=2, help="extra attempts for a failed async event (Lambda default: 2)")
    ap.add_argument("--on-failure", action="append", default=[], metavar="SRC=DEST", help="on-failure destination function for SRC; repeatable")
    ap.add_argument("--workers", type=int, default=4, help="worker threads delivering async events")
    ap.add_argument("--duplicate", action="append", default=[], metavar="FUNCTION",
                    help="deliver each successful async event of FUNCTION once more (at-least-once delivery); repeatable")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one upstream invoke (Lambda's max: 900)")
    ap.add_argument("--lambda-sync-errors", action="store_true",
                    help="answer a synchronous handler error as real Lambda does (200 + X-Amz-Function-Error: Unhandled) "
                         "instead of relaying cargo lambda's HTTP 500")
    ap.add_argument("--log", metavar="FILE", help="log here instead of stderr")
    ap.add_argument("-v", "--verbose", action="store_true", help="also log every HTTP request")
    args = ap.parse_args(argv)

    handler: logging.Handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s lambda_shim %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    host, family = loopback(args.host)
    if args.retries < 0 or args.workers < 1 or args.timeout <= 0:
        ap.error("--retries must be >= 0, --workers >= 1, --timeout > 0")
    on_failure: dict[str, str] = {}
    for spec in args.on_failure:
        src, sep, dest = spec.partition("=")
        try:
            on_failure[function_name(src.strip())] = function_name(dest.strip())
        except BadRequest as e:
            ap.error(f"--on-failure {spec!r}: {e}")
        if not sep:
            ap.error(f"--on-failure {spec!r}: expected SRC=DEST")
    upstream = args.upstream.rstrip("/")
    if urllib.parse.urlsplit(upstream).scheme not in ("http", "https"):
        ap.error(f"--upstream {upstream!r}: expected http://HOST:PORT")

    duplicate = frozenset(function_name(f.strip()) for f in args.duplicate)
    dispatcher = Dispatcher(upstream, args.retries, on_failure, args.workers, args.timeout, duplicate)
    try:
        server = ShimServer((host, args.port), dispatcher, family, args.lambda_sync_errors)
    except OSError as e:
        raise SystemExit(f"lambda_shim: cannot bind {host}:{args.port}: {e}") from None
    port = server.server_address[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("listening on http://%s:%d, upstream %s, retries %d, on-failure %s, workers %d",
             shown, port, upstream, args.retries, on_failure or "none", args.workers)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="shim-http", daemon=True)
    serving.start()
    print(f"sluice-lambda-shim ready on http://{shown}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("stopping")
    server.shutdown()
    server.server_close()
    dispatcher.stop(wait=5.0)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
