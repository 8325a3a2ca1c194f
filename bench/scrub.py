#!/usr/bin/env python3
"""scrub against the read floor of the same data, same run.

Usage: python3 bench/scrub.py [BACKUPS]   (default 60000: about 0.5 GB of JSON; build first:
       cargo build --release)

Generates backup_db.py's dataset (BACKUPS/5 users, five backups each of about 8 KB of JSON, each
document one chunk of its own) in a private PostgreSQL, then measures wall time of:
  scrub              every chunk re-hashed, every backup reassembled and re-hashed
  read floor         SELECT sum(length(data)) FROM chunks: every chunk read (detoasted) once
and prints scrub's speed per GB of chunks and of documents. In this dataset the documents share
no chunk, so the backup pass reads what the chunk pass read; with deduplicated histories it
reads each chunk once per backup that names it.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_db import BINARY, GENERATE, dev_database, psql, settle  # noqa: E402


def timed(argv, env=None):
    started = time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def main():
    backups = int(sys.argv[1]) if len(sys.argv) > 1 else 60_000
    with dev_database("scrub") as (url, _):
        psql(url, GENERATE.format(users=backups // 5))
        psql(url, "VACUUM (ANALYZE)")
        settle(url)
        floor = ["psql", "-At", "-d", url, "-c", "SELECT sum(length(data)) FROM chunks"]
        rounds = []
        for _ in range(3):
            floor_seconds, _ = timed(floor)
            scrub_seconds, out = timed([BINARY, "scrub", "--json"], {"DATABASE_URL": url})
            rounds.append((floor_seconds, scrub_seconds))
        report = json.loads(out)
        chunk_gb, doc_gb = report["chunk_bytes"] / 1e9, report["document_bytes"] / 1e9
        print(f"dataset: {report['chunks_checked']} chunks ({chunk_gb:.2f} GB), "
              f"{report['backups_checked']} backups ({doc_gb:.2f} GB of documents), ok={report['ok']}")
        print(f"{'round':>5} {'read floor s':>13} {'scrub s':>8} {'ratio':>6} {'s per GB of chunks':>19}")
        for n, (f, s) in enumerate(rounds, 1):
            print(f"{n:>5} {f:13.2f} {s:8.2f} {s / f:6.2f} {s / chunk_gb:19.2f}")


if __name__ == "__main__":
    main()
