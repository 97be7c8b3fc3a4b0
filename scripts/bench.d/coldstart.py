"""Cold start of the Lambda functions: time from exec to the first `GET .../invocation/next`
(the moment a function is ready for its first event), measured against a stand-in Lambda
Runtime API on 127.0.0.1, plus each function's zipped size.

usage: coldstart.py BIN_DIR [ZIP_DIR] [REPEAT]

BIN_DIR holds native release builds of trigger, extract and finalize (`cargo build --release
-p sluice-functions`); ZIP_DIR is where `scripts/package` left the arm64 zips
(target/lambda). Settings point at a closed loopback port: start-up builds clients and reads
settings but does not call AWS (the Snowflake key is fetched on the first finalize, not at
start-up).
"""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

FUNCTIONS = ["trigger", "extract", "finalize"]


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    first_poll = None
    event = threading.Event()

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.endswith("/invocation/next") and RuntimeApi.first_poll is None:
            RuntimeApi.first_poll = time.perf_counter()
            RuntimeApi.event.set()
        # Never answer: the function waits for an event, as a warm idle one does.
        time.sleep(30)

    def log_message(self, *args):
        pass


def measure(binary, port):
    RuntimeApi.first_poll = None
    RuntimeApi.event.clear()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(binary),
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "SLUICE_OUTPUT": "s3://coldstart/lake",
        "SLUICE_STATE_TABLE": "sluice-state",
        "SLUICE_CONFIG_TABLE": "sluice-config",
        "SLUICE_GLUE_DATABASE": "sluice_raw",
        "SLUICE_EXTRACT_FUNCTION": "extract",
        "SLUICE_FINALIZE_FUNCTION": "finalize",
        "RUST_LOG": "warn",
    }
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = RuntimeApi.event.wait(10)
    proc.kill()
    _, err = proc.communicate()
    if not ready:
        raise SystemExit(f"{binary} never polled for an event: {err.decode(errors='replace')[-500:]}")
    return (RuntimeApi.first_poll - start) * 1000


def main():
    bin_dir = sys.argv[1]
    zip_dir = sys.argv[2] if len(sys.argv) > 2 else None
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    print(f"{'function':<10} {'cold start (median of %d)' % repeat:>26} {'min':>8} {'zip (arm64)':>12}  target < 100 ms, < 15 MB")
    for name in FUNCTIONS:
        times = [measure(os.path.join(bin_dir, name), port) for _ in range(repeat)]
        size = "-"
        if zip_dir:
            path = os.path.join(zip_dir, name, "bootstrap.zip")
            if os.path.exists(path):
                size = f"{os.path.getsize(path) / 1e6:.2f} MB"
        print(f"{name:<10} {statistics.median(times):>23.1f} ms {min(times):>6.1f} ms {size:>12}")
    server.shutdown()


if __name__ == "__main__":
    main()
