#!/usr/bin/env python3
"""Uploads and downloads against PostgreSQL's own rate for the same rows, and the server's
memory, in one run on one machine.

Usage:
    cargo build --release && cargo build --release --example load
    python3 bench/load.py [--seconds 20] [--steady 300]

A `serve --dev` cluster in a temporary folder holds the database; the server under test is a
plain `serve` (production settings, JSON logs, rate limits off) against it. For 8 and 32
clients, in this order: pgbench inserting the same 64 KiB rows into `backups` (same table,
same indexes, prepared statements, one row per transaction), then the load client uploading
64 KiB documents (examples/load.rs: signed, each document different), once with one account
per client and once with each client taking turns over 50 accounts; pgbench reading a
user's latest row, then the load client downloading the latest backup. Then 64 clients
uploading 10 MiB documents, and optionally a steady run watching RSS. pgbench's rows go into
`today_backups`, a copy of the table as it was before documents became chunks (the baseline
of every figure here). RSS comes from
/proc/PID/status (VmHWM reset through /proc/PID/clear_refs before each measured run).
"""

import argparse
import glob
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import BINARY, ROOT, SECRET, free_port, ready, start_dev_database  # noqa: E402

LOAD = os.path.join(ROOT, "target", "release", "examples", "load")
DOC_SIZE = 64 * 1024
BENCH_USERS = 64

# The backups table as it was before documents became chunks (migrations 1 and 3): pgbench's
# rows go into a copy of it, the baseline every figure of this benchmark was measured against.
TODAY_TABLE = """\
CREATE TABLE today_backups (
    id uuid PRIMARY KEY, user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(), size_bytes integer NOT NULL CHECK (size_bytes >= 0),
    sha256 bytea NOT NULL CHECK (length(sha256) = 32), document text COMPRESSION lz4 NOT NULL);
CREATE INDEX ON today_backups (user_id, created_at DESC, id DESC);
CREATE INDEX ON today_backups (created_at);
"""
INSERT_SQL = """\
INSERT INTO today_backups (id, user_id, size_bytes, sha256, document)
VALUES (gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad((:client_id + 1)::text, 12, '0'))::uuid,
        :size, decode(:sha, 'hex'), :doc);
"""
READ_SQL = """\
SELECT document FROM today_backups
WHERE user_id = ('00000000-0000-0000-0000-' || lpad((:client_id + 1)::text, 12, '0'))::uuid
ORDER BY created_at DESC, id DESC LIMIT 1;
"""


def document(size):
    """The same shape of workout log the load client sends."""
    sets = []
    body = '{"client":0,"n":           0,"sets":['
    i = 0
    while len(body) + sum(map(len, sets)) + 80 < size:
        sets.append(f'{{"exercise":"bench-press","set":{i % 5},"reps":{5 + i % 8},"kg":{40 + i % 60}.5}},')
        i += 1
    return body + "".join(sets) + '{"exercise":"plank","seconds":60}]}'


def psql(database_url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")


def stat_fields(pid):
    """/proc/PID/stat after the command name: fields[11:15] are utime, stime, cutime, cstime."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def process_cpu(pid):
    """Seconds of CPU a process has used (user + system)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_processes():
    """{pid: /proc/PID/stat fields} of every PostgreSQL process."""
    processes = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "postgres":
                    processes[pid] = stat_fields(pid)
        except OSError:
            pass
    return processes


def postgres_cpu():
    """Seconds of CPU used by PostgreSQL: its processes', and (through the postmaster's
    children's times) those of backends that have ended."""
    ticks = sum(sum(int(f) for f in fields[11:15]) for fields in postgres_processes().values())
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(database_url):
    """Pays the previous run's debts (dirty buffers, dead rows) before the next run starts, so
    neither side is measured while cleaning up after the other; returns once the backend that
    did it has ended, so its CPU is not counted in the next run."""
    before = len(postgres_processes())
    psql(database_url, "VACUUM ANALYZE")
    psql(database_url, "CHECKPOINT")
    deadline = time.monotonic() + 10
    while len(postgres_processes()) > before and time.monotonic() < deadline:
        time.sleep(0.01)


def run_measured(argv, env, server_pid=None):
    """Runs a load generator to its end; returns its stdout and the CPU seconds it, PostgreSQL
    and the server under test (when there is one) used meanwhile."""
    postgres_before = postgres_cpu()
    server_before = process_cpu(server_pid) if server_pid else 0.0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            sys.exit(f"{argv[0]} failed: {errors.read().decode()[-2000:]}")
    cpu = {"client": usage.ru_utime + usage.ru_stime, "postgres": postgres_cpu() - postgres_before}
    if server_pid:
        cpu["server"] = process_cpu(server_pid) - server_before
    return stdout, cpu


def per_request(cpu, requests):
    return {name: round(seconds * 1000 / max(requests, 1), 3) for name, seconds in cpu.items()}


def pgbench(database_url, folder, name, script, clients, seconds, variables, server_pid=None):
    path = os.path.join(folder, f"{name}.sql")
    with open(path, "w") as out:
        out.write(script)
    prefix = os.path.join(folder, f"log-{name}-{clients}")
    command = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
               "-f", path, "-l", f"--log-prefix={prefix}", "-d", database_url]
    for key, value in variables.items():
        command += ["-D", f"{key}={value}"]
    settle(database_url)
    output, cpu = run_measured(command, os.environ, server_pid)
    tps = float(next(line for line in output.splitlines() if line.startswith("tps")).split()[2])
    done = int(next(line for line in output.splitlines() if "actually processed" in line).split()[-1])
    latencies = []
    for log in glob.glob(prefix + "*"):
        with open(log) as lines:
            latencies += [int(line.split()[2]) / 1000 for line in lines]
        os.remove(log)
    latencies.sort()
    return {"ok_per_second": tps, "p50_ms": pick(latencies, 0.5), "p99_ms": pick(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else 0.0, "cpu_ms_per_request": per_request(cpu, done)}


def pick(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)] if sorted_values else 0.0


def load(url, database_url, server_pid, mode, clients, seconds, size, accounts=1):
    command = [LOAD, "--url", url, "--mode", mode, "--clients", str(clients), "--seconds", str(seconds),
               "--size", str(size), "--accounts", str(accounts)]
    settle(database_url)
    output, cpu = run_measured(command, {**os.environ, "APP_SIGNING_SECRET": SECRET}, server_pid)
    result = json.loads(output)
    result["cpu_ms_per_request"] = per_request(cpu, round(result["ok_per_second"] * result["seconds"]))
    return result


def watch_rss(pid, stop, samples, every):
    while not stop.wait(every):
        samples.append(rss_kib(pid, "VmRSS"))


def row(name, ours, base):
    ratio = ours["ok_per_second"] / base["ok_per_second"] if base["ok_per_second"] else 0
    p50 = ours["p50_ms"] / base["p50_ms"] if base["p50_ms"] else 0
    p99 = ours["p99_ms"] / base["p99_ms"] if base["p99_ms"] else 0
    return (f"| {name} | {ours['ok_per_second']:.0f} | {base['ok_per_second']:.0f} | {ratio:.2f} | "
            f"{ours['p50_ms']:.1f} / {base['p50_ms']:.1f} ({p50:.2f}x) | "
            f"{ours['p99_ms']:.1f} / {base['p99_ms']:.1f} ({p99:.2f}x) |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--steady", type=int, default=0, help="seconds of a steady 8-client run watching RSS")
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--accounts", default="1,50",
                        help="accounts per client for the upload runs (1: one user uploading non-stop)")
    args = parser.parse_args()
    for needed in (BINARY, LOAD):
        if not os.path.exists(needed):
            sys.exit("build first: cargo build --release && cargo build --release --example load")

    folder = tempfile.mkdtemp(prefix="drb-load-", dir="/var/tmp")
    os.chmod(folder, 0o755)
    dev, database_url = start_dev_database(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": database_url, "APP_SIGNING_SECRET": SECRET, "LOG_FORMAT": "json",
           "RATE_LIMIT_REGISTER_PER_MINUTE": "0", "RATE_LIMIT_USER_PER_MINUTE": "0", "RATE_LIMIT_IP_PER_MINUTE": "0"}
    server = subprocess.Popen([BINARY, "serve", "--bind", f"127.0.0.1:{port}", "--metrics-bind", "127.0.0.1:0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        while not ready(f"{url}/readyz"):
            time.sleep(0.05)
        urllib.request.urlopen(f"{url}/healthz").read()
        results["idle_rss_mib"] = rss_kib(server.pid, "VmRSS") / 1024

        doc = document(DOC_SIZE)
        variables = {"doc": doc, "size": len(doc), "sha": hashlib.sha256(doc.encode()).hexdigest()}
        psql(database_url, "INSERT INTO users (id, token_hash) SELECT ('00000000-0000-0000-0000-' || "
             f"lpad(n::text, 12, '0'))::uuid, sha256(n::text::bytea) FROM generate_series(1, {BENCH_USERS}) n")
        psql(database_url, TODAY_TABLE)

        for clients in [int(c) for c in args.clients.split(",")]:
            base = pgbench(database_url, folder, "insert", INSERT_SQL, clients, args.seconds, variables, server.pid)
            for accounts in [int(a) for a in args.accounts.split(",")]:
                reset_peak(server.pid)
                ours = load(url, database_url, server.pid, "upload", clients, args.seconds, DOC_SIZE, accounts)
                results[f"upload_{clients}_x_{accounts}_accounts"] = {
                    "server": ours, "pgbench": base, "peak_rss_mib": rss_kib(server.pid, "VmHWM") / 1024}
            base = pgbench(database_url, folder, "read", READ_SQL, clients, args.seconds, {}, server.pid)
            ours = load(url, database_url, server.pid, "download", clients, args.seconds, DOC_SIZE)
            results[f"download_{clients}"] = {"server": ours, "pgbench": base}

        reset_peak(server.pid)
        big = load(url, database_url, server.pid, "upload", 64, 10, 10 * 1024 * 1024)
        results["upload_64_x_10mib"] = {"server": big, "peak_rss_mib": rss_kib(server.pid, "VmHWM") / 1024}

        if args.steady:
            samples, stop = [], threading.Event()
            watcher = threading.Thread(target=watch_rss, args=(server.pid, stop, samples, 10))
            watcher.start()
            steady = load(url, database_url, server.pid, "upload", 8, args.steady, DOC_SIZE)
            stop.set()
            watcher.join()
            results["steady"] = {"server": steady, "rss_mib_every_10s": [round(s / 1024, 1) for s in samples]}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
        subprocess.run(["rm", "-rf", folder])

    print(json.dumps(results, indent=1))
    print()
    print("| run | server ok/s | pgbench tx/s | ratio | p50 ms server / pgbench | p99 ms server / pgbench |")
    print("|---|---|---|---|---|---|")
    for key, value in results.items():
        if isinstance(value, dict) and "pgbench" in value:
            print(row(key.replace("_", " ") + ", 64 KiB", value["server"], value["pgbench"]))
    print()
    print("| run | CPU ms per request: server | load client / pgbench | PostgreSQL, ours / pgbench's |")
    print("|---|---|---|---|")
    for key, value in results.items():
        if isinstance(value, dict) and "pgbench" in value:
            ours, base = value["server"]["cpu_ms_per_request"], value["pgbench"]["cpu_ms_per_request"]
            print(f"| {key.replace('_', ' ')} | {ours['server']:.3f} | {ours['client']:.3f} / {base['client']:.3f} | "
                  f"{ours['postgres']:.3f} / {base['postgres']:.3f} |")
    print()
    print(f"idle RSS {results['idle_rss_mib']:.1f} MiB")
    for key, value in results.items():
        if isinstance(value, dict) and "peak_rss_mib" in value:
            print(f"{key}: peak RSS {value['peak_rss_mib']:.1f} MiB, statuses {value['server']['statuses']}")
    if "steady" in results:
        rss = results["steady"]["rss_mib_every_10s"]
        print(f"steady {args.steady} s: RSS first {rss[0]} MiB, last {rss[-1]} MiB, max {max(rss)} MiB "
              f"({statistics.mean(rss):.1f} mean)")


if __name__ == "__main__":
    main()
