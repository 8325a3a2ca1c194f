#!/usr/bin/env python3
"""The disaster runbook timed from the bucket, on a database of a real size.

Usage: cargo build --release && python3 bench/runbook.py [BACKUPS]
       (default 210000: bench/backup_db.py's dataset, made by the release binary's `serve --dev`;
       needs what `cargo test` needs, moto and age included, as .ci/run installs them)

Generates the dataset of bench/backup_db.py (BACKUPS/5 users with five workout-log backups
each) in a private PostgreSQL, then runs the README's "Disaster recovery" as
tests/integration/runbook.rs runs it (every line that is not a `fly` command, in order, with
a read-only key), with this database as the one that was lost
(RUNBOOK_SOURCE_DATABASE_URL). The test takes the encrypted backup to moto first, untimed, as
the nightly Machine would have; then each line of the runbook is timed. The new database is on
the test harness's cluster, which runs without fsync: a real volume's restore writes more
slowly. Prints each step's time and the whole.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_db import GENERATE, ROOT, dev_database, psql  # noqa: E402


def main():
    backups = int(sys.argv[1]) if len(sys.argv) > 1 else 210_000
    with dev_database("runbook") as (url, _):
        psql(url, GENERATE.format(users=backups // 5))
        psql(url, "VACUUM (ANALYZE)")
        size = subprocess.run(["psql", "-At", "-d", url, "-c", "SELECT pg_database_size(current_database())"],
                              check=True, capture_output=True, text=True).stdout.strip()
        print(f"database: {backups // 5} users, {backups} backups, {int(size) / 2**20:.0f} MiB")
        test = subprocess.run(
            ["cargo", "test", "--release", "--locked", "--test", "integration",
             "runbook::the_disaster_runbook_restores_from_the_bucket_as_written", "--", "--nocapture"],
            cwd=ROOT, env={**os.environ, "RUNBOOK_SOURCE_DATABASE_URL": url}, capture_output=True, text=True,
        )
        if test.returncode != 0:
            sys.exit(f"the runbook failed:\n{test.stdout[-3000:]}\n{test.stderr[-3000:]}")
        for line in test.stderr.splitlines():
            if match := re.match(r"runbook step: (\d+) ms: (.*)", line):
                print(f"{int(match.group(1)) / 1000:8.1f} s  {match.group(2)}")
            elif line.startswith("the runbook, from the bucket"):
                print(line)


if __name__ == "__main__":
    main()
