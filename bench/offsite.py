#!/usr/bin/env python3
"""backup-db to a bucket against backup-db to a file, and restores from each, in one run.

Usage: python3 bench/offsite.py [BACKUPS]   (default 210000; cargo build --release first, and
       moto_server on PATH or in target/ci-python, as .ci/run installs it)

The dataset is bench/backup_db.py's (BACKUPS/5 users with five workout-log backups each). The
bucket is moto's standalone S3 server on this machine, so the figures are the tool's own cost
of streaming parts (and of age), not a network's; but moto shares the two cores with the tool
and PostgreSQL, so each run's CPU seconds are counted per process (the tool's from wait4,
PostgreSQL's and moto's from /proc), beside its wall time and peak RSS. Three rounds, each
running every command once; the medians are printed:
  --output FILE               the baseline
  --to s3:// --no-encryption  multipart upload, re-read and checked, manifest
  … --no-reread               the same without reading the object back
  --to s3:// (age)            the same, encrypted to one X25519 key
  restore-db FILE / restore-db s3://…/latest --identity
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_db import BINARY, GENERATE, ROOT, psql, settle  # noqa: E402
from load import postgres_cpu, process_cpu  # noqa: E402


ROUNDS = 3


def moto_server():
    candidate = os.path.join(ROOT, "target", "ci-python", "bin", "moto_server")
    return candidate if os.path.exists(candidate) else shutil.which("moto_server")


def run_measured(argv, env, moto_pid):
    """Runs a command; returns (seconds, peak RSS in MiB, CPU seconds of the tool, of PostgreSQL
    and of moto), since the three share the two cores."""
    postgres_before, moto_before = postgres_cpu(), process_cpu(moto_pid)
    started = time.perf_counter()
    process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    cpu = (usage.ru_utime + usage.ru_stime, postgres_cpu() - postgres_before, process_cpu(moto_pid) - moto_before)
    return (elapsed, usage.ru_maxrss / 1024, *cpu)


def main():
    backups = int(sys.argv[1]) if len(sys.argv) > 1 else 210_000
    with tempfile.TemporaryDirectory(prefix="drb-bench-offsite-", dir="/var/tmp") as folder:
        os.chmod(folder, 0o755)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        moto = subprocess.Popen([moto_server(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dev = subprocess.Popen(
            [BINARY, "serve", "--dev", "--dev-data-dir", folder, "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            endpoint = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bench", method="PUT"))
                    break
                except OSError:
                    time.sleep(0.1)
            url = next(m.group(1) for line in dev.stdout if (m := re.search(r"Database: (postgres://\S+)", line)))
            base = url.rsplit("/", 1)[0]
            psql(url, GENERATE.format(users=backups // 5))
            psql(url, "VACUUM (ANALYZE)")
            key = os.path.join(folder, "key.txt")
            subprocess.run(["age-keygen", "-o", key], check=True, stderr=subprocess.DEVNULL)
            recipient = subprocess.run(["age-keygen", "-y", key], check=True, capture_output=True, text=True).stdout.strip()
            bucket = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "auto",
                      "AWS_ENDPOINT_URL_S3": endpoint, "DATABASE_URL": url}
            file = os.path.join(folder, "dump.sql.zst")
            age = {**bucket, "BACKUP_AGE_RECIPIENTS": recipient}
            runs = {
                "backup-db --output FILE": ([BINARY, "backup-db", "--force", "--output", file], {"DATABASE_URL": url}),
                "backup-db --to (plain)": ([BINARY, "backup-db", "--to", "s3://bench/plain", "--no-encryption"], bucket),
                "backup-db --to (plain, no re-read)":
                    ([BINARY, "backup-db", "--to", "s3://bench/unread", "--no-encryption", "--no-reread"], bucket),
                "backup-db --to (age)": ([BINARY, "backup-db", "--to", "s3://bench/age"], age),
                "restore-db FILE": ([BINARY, "restore-db", "--force", file], {"DATABASE_URL": base + "/restored"}),
                "restore-db s3://…/latest": ([BINARY, "restore-db", "--force", "s3://bench/age/latest", "--identity", key],
                                             {**bucket, "DATABASE_URL": base + "/restored"}),
            }
            results = {name: [] for name in runs}
            # Rounds, each running every command once, so a noisy minute on this shared machine
            # touches all of them alike; the median of each is reported.
            for _ in range(ROUNDS):
                for name, (argv, env) in runs.items():
                    if name.startswith("restore-db"):
                        psql(base + "/postgres", "DROP DATABASE IF EXISTS restored", "CREATE DATABASE restored")
                    settle(url)
                    results[name].append(run_measured(argv, env, moto.pid))
            median = {name: [statistics.median(column) for column in zip(*rows)] for name, rows in results.items()}

            print(f"dataset: {backups} backups; dump {os.path.getsize(file) / 1e6:.1f} MB; medians of {ROUNDS} rounds")
            print(f"{'':36} {'wall s':>8} {'peak RSS MiB':>13} {'CPU s: tool':>12} {'postgres':>9} {'moto':>6}")
            for name, (seconds, rss, tool, postgres, s3) in median.items():
                print(f"{name:36} {seconds:8.1f} {rss:13.1f} {tool:12.1f} {postgres:9.1f} {s3:6.1f}")
            wall = {name: row[0] for name, row in median.items()}
            cpu = {name: row[2] for name, row in median.items()}
            baseline, floor = wall["backup-db --output FILE"], sum(median["backup-db --output FILE"][2:]) / 2
            unread = median["backup-db --to (plain, no re-read)"]
            print(f"ratios to --output FILE: plain upload {wall['backup-db --to (plain)'] / baseline:.2f} "
                  f"({wall['backup-db --to (plain, no re-read)'] / baseline:.2f} without the re-read), "
                  f"encrypted upload {wall['backup-db --to (age)'] / baseline:.2f}; "
                  f"restore from the bucket / from the file "
                  f"{wall['restore-db s3://…/latest'] / wall['restore-db FILE']:.2f}")
            print(f"the tool's own CPU, upload / file: {cpu['backup-db --to (plain, no re-read)'] / cpu['backup-db --output FILE']:.2f}; "
                  f"all CPU on two cores, the wall time's floor: file {floor:.1f} s, "
                  f"upload {sum(unread[2:]) / 2:.1f} s ({sum(unread[2:]) / 2 / floor:.2f}x)")
        finally:
            dev.send_signal(signal.SIGINT)
            dev.wait(timeout=120)
            moto.terminate()


if __name__ == "__main__":
    main()
