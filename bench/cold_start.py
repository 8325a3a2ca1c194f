#!/usr/bin/env python3
"""Cold start: process exec to the first `GET /healthz` and the first `GET /readyz` answered 200,
against a running database.

Usage: python3 bench/cold_start.py [RUNS]      (default 20; builds nothing: run `cargo build --release` first)

The database is a `serve --dev` cluster in a temporary folder, started once and kept running
for all runs; each run execs a fresh `serve` against it and polls /healthz, then /readyz, every
millisecond.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The build every script measures as "this build". BENCH_BINARY names another (a trial built
# elsewhere), so a trial never has to sit in target/release, where it outlives the trial.
BINARY = os.environ.get("BENCH_BINARY") or os.path.join(ROOT, "target", "release", "dailyreps-backup-server")
SECRET = "bench-signing-secret-0123456789abcdef0123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev_database(folder):
    """Starts `serve --dev` (for its PostgreSQL) and returns (process, database URL)."""
    dev = subprocess.Popen(
        [BINARY, "serve", "--dev", "--dev-data-dir", folder, "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "LOG_FORMAT": "json"},
    )
    for line in dev.stdout:
        match = re.search(r"Database: (postgres://\S+)", line)
        if match:
            # The cluster asks for the password it keeps there; every tool run from here reads it.
            os.environ["PGPASSFILE"] = os.path.join(os.path.abspath(folder), "pgpass")
            return dev, match.group(1)
    sys.exit("serve --dev did not print its database URL")


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def one_cold_start(database_url):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "APP_SIGNING_SECRET": SECRET, "RUST_LOG": "warn"}
    started = time.perf_counter()
    server = subprocess.Popen(
        [BINARY, "serve", "--bind", f"127.0.0.1:{port}", "--metrics-bind", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    elapsed = []
    for path in ("/healthz", "/readyz"):
        while not ready(f"http://127.0.0.1:{port}{path}"):
            if server.poll() is not None:
                sys.exit("the server exited during start-up")
            time.sleep(0.001)
        elapsed.append((time.perf_counter() - started) * 1000)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    return elapsed


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    if not os.path.exists(BINARY):
        sys.exit("build first: cargo build --release")
    with tempfile.TemporaryDirectory(prefix="drb-bench-") as folder:
        os.chmod(folder, 0o755)
        dev, database_url = start_dev_database(folder)
        try:
            samples = [one_cold_start(database_url) for _ in range(runs)]
        finally:
            dev.send_signal(signal.SIGINT)
            dev.wait(timeout=60)
    for index, path in enumerate(("/healthz", "/readyz")):
        times = sorted(sample[index] for sample in samples)
        print(f"cold start, exec to {path} 200, {runs} runs: "
              f"median {statistics.median(times):.1f} ms, min {times[0]:.1f} ms, max {times[-1]:.1f} ms")


if __name__ == "__main__":
    main()
