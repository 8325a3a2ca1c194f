#!/usr/bin/env python3
"""Fuzzes the whole API from its own OpenAPI document with schemathesis.

Starts the release binary with `serve --dev` (its own PostgreSQL) in a throwaway folder,
signs every generated request (hooks.py), and fails on any 5xx or any response that breaks
the document's schemas. Run by .ci/run:

    python3 tests/fuzz/run_api_fuzz.py target/release/dailyreps-backup-server [seconds]

FUZZ_SEED=N replays one seed; FUZZ_SEED=random explores (each run prints its seed). CI passes
a fixed seed so that its verdict depends on our change, not on the draw: hunt for new cases
with random seeds and longer runs locally, then fix what they find.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Every check schemathesis has but one. `ignored_auth` sends made-up credentials and expects a
# 401, but the signature covers the exact body bytes, so hooks.py can only make credentials
# valid on the prepared request, where it cannot tell made-up from generated ones. Cases that
# leave credentials out are still sent without them (negative_data_rejection and
# missing_required_header check those), and tests/integration/api_signature.rs covers bad
# signatures and tokens.
EXCLUDED_CHECKS = "ignored_auth"
# Each must be answered 2xx at least once, or the run did not reach the handlers.
OPERATIONS = [
    "POST /api/users",
    "GET /api/users/me",
    "DELETE /api/users/me",
    "POST /api/backup",
    "GET /api/backups",
    "GET /api/backups/latest",
    "GET /api/backups/{id}",
    "DELETE /api/backups/{id}",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, limit_seconds: float) -> None:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server was not ready within {limit_seconds} s")


def answered_by_route(metrics_url: str) -> dict:
    """(route, status) -> count, from the server's own request counter."""
    counts = {}
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            match = re.match(r'dailyreps_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} (\d+)', line)
            if match:
                method, route, status, count = match.groups()
                counts[(f"{method} {route}", int(status))] = int(count)
    return counts


def check_reach(counts: dict) -> list:
    """What the server's own counts say went wrong: any 5xx, or an operation never answered
    2xx (the signing hook failed to get generated requests through to the handlers)."""
    problems = [f"{count} x {status} on {route}" for (route, status), count in counts.items() if status >= 500]
    for operation in OPERATIONS:
        if not any(route == operation and 200 <= status < 300 for (route, status) in counts):
            problems.append(f"no generated request to {operation} was answered 2xx")
    return problems


def main() -> int:
    binary = Path(sys.argv[1]).resolve()
    seconds = sys.argv[2] if len(sys.argv) > 2 else "120"
    seed = os.environ.get("FUZZ_SEED", "random")
    workdir = Path(tempfile.mkdtemp(prefix="dailyreps-fuzz-"))
    # As root, PostgreSQL runs as another user, which must reach the cluster's folder.
    workdir.chmod(0o755)
    data_dir = workdir / "dev"
    data_dir.mkdir()
    signing_secret = secrets.token_urlsafe(32)
    (data_dir / "signing-secret").write_text(signing_secret)
    url = f"http://127.0.0.1:{free_port()}"
    metrics_url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DEV_DATA_DIR": str(data_dir),
        "PORT": url.removeprefix("http://"),
        "METRICS_BIND": metrics_url.removeprefix("http://"),
        "RATE_LIMIT_REGISTER_PER_MINUTE": "0",
        "RATE_LIMIT_USER_PER_MINUTE": "0",
        "RATE_LIMIT_IP_PER_MINUTE": "0",
        "RUST_LOG": "warn",
    }
    env.pop("DATABASE_URL", None)
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen([binary, "serve", "--dev"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(url, server, 120)
        fuzz_env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "hooks",
            "PYTHONPATH": str(HERE),
            "FUZZ_BASE_URL": url,
            "FUZZ_SIGNING_SECRET": signing_secret,
        }
        command = [
            "schemathesis", "run", f"{url}/api/openapi.json",
            "--checks", "all",
            "--exclude-checks", EXCLUDED_CHECKS,
            "--max-time", seconds,
            # One worker: with two threads, CPython 3.11's ast.parse (hypothesis calls it to
            # describe strategies) can fail with "AST constructor recursion depth mismatch".
            "--workers", "1",
            "--generation-database", "none",
            *(["--seed", seed] if seed != "random" else []),
            "--no-color",
        ]
        print(" ".join(command), flush=True)
        result = subprocess.run(command, env=fuzz_env, cwd=workdir)
        counts = answered_by_route(metrics_url)
        for (route, status), count in sorted(counts.items()):
            print(f"{count:>7}  {status}  {route}")
        problems = check_reach(counts)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return result.returncode or (1 if problems else 0)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if server.returncode not in (0, -signal.SIGTERM):
            print((workdir / "server.log").read_text()[-4000:], file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
