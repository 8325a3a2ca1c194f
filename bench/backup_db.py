#!/usr/bin/env python3
"""backup-db and restore-db against pg_dump -Fc / pg_restore and the COPY read floor, same run.

Usage: python3 bench/backup_db.py [BACKUPS]   (default 200000: about 1.6 GB of JSON; build first:
       cargo build --release)

Generates a dataset in a private PostgreSQL (a `serve --dev` cluster in a temporary folder):
BACKUPS/5 users with five backups each of varied workout-log JSON around 8 KB. Then measures
wall time and peak RSS (from wait4) of:
  backup-db          our dump
  pg_dump -Fc        PostgreSQL's custom format
  read floor         COPY of every table to /dev/null through psql
  restore-db         into a fresh database
  pg_restore         of the -Fc dump into a fresh database
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "dailyreps-backup-server")
TABLES = ["_sqlx_migrations", "users", "chunks", "backups", "idempotency_keys"]

GENERATE = """
INSERT INTO users (id, token_hash, created_at)
SELECT gen_random_uuid(), sha256(g::text::bytea), now() - make_interval(mins => g)
FROM generate_series(1, {users}) g;

-- Each document is one chunk of its own (they share nothing).
CREATE TEMP TABLE generated AS
SELECT gen_random_uuid() AS id, u.id AS user_id, now() - make_interval(mins => (k * 1440 + u.n)::int) AS created_at, d.doc
FROM (SELECT id, row_number() OVER () AS n FROM users) u
CROSS JOIN generate_series(1, 5) k
CROSS JOIN LATERAL (
    SELECT json_build_object(
        'app', 'DailyReps', 'version', 3, 'user_settings', json_build_object('units', 'kg', 'rest_seconds', 60 + (u.n % 120)),
        'workouts', json_agg(json_build_object(
            'id', md5(u.n::text || k::text || w::text),
            'exercise', (ARRAY['squat','bench press','deadlift','barbell row','overhead press','pull-up','dip','lunge'])[1 + (w * 7 + u.n) % 8],
            'date', to_char(now() - make_interval(days => w::int), 'YYYY-MM-DD'),
            'sets', json_build_array(5 + (w + k) % 4, 5 + (w * 3 + u.n) % 6, 3 + (w * 5) % 5),
            'weight_kg', round((40 + random() * 100)::numeric, 1),
            'rpe', round((6 + random() * 4)::numeric, 1),
            'note', CASE WHEN w % 9 = 0 THEN 'felt strong 💪 ' || md5(w::text) ELSE '' END))
    )::text AS doc
    FROM generate_series(1, 36 + (u.n % 16)::int) w
) d;;
INSERT INTO chunks (user_id, sha256, data)
SELECT user_id, sha256(convert_to(doc, 'UTF8')), doc FROM generated ON CONFLICT DO NOTHING;
INSERT INTO backups (id, user_id, created_at, size_bytes, sha256, chunk_ids)
SELECT g.id, g.user_id, g.created_at, octet_length(g.doc), c.sha256, ARRAY[c.id]
FROM generated g JOIN chunks c ON c.user_id = g.user_id AND c.sha256 = sha256(convert_to(g.doc, 'UTF8'));
ANALYZE;
"""


def run_measured(argv, env=None, stdout=subprocess.DEVNULL, stdin=None):
    """Runs a command; returns (seconds, peak RSS in MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=stdout, stdin=stdin, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def psql(url, *commands):
    args = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
    for command in commands:
        args += ["-c", command]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def settle(url):
    """Writes out the dirty buffers of what ran before, so the next tool does not pay for them."""
    psql(url, "CHECKPOINT")


@contextlib.contextmanager
def dev_database(label):
    """A `serve --dev` cluster in a temporary folder: yields (database URL, folder)."""
    with tempfile.TemporaryDirectory(prefix=f"drb-bench-{label}-", dir="/var/tmp") as folder:
        os.chmod(folder, 0o755)
        dev = subprocess.Popen(
            [BINARY, "serve", "--dev", "--dev-data-dir", folder, "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            url = next(m.group(1) for line in dev.stdout if (m := re.search(r"Database: (postgres://\S+)", line)))
            # The cluster asks for the password it keeps there; every tool run from here reads it.
            os.environ["PGPASSFILE"] = os.path.join(folder, "pgpass")
            yield url, folder
        finally:
            dev.send_signal(signal.SIGINT)
            dev.wait(timeout=120)


def main():
    backups = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with dev_database("dump") as (url, folder):
        base = url.rsplit("/", 1)[0]
        started = time.perf_counter()
        psql(url, GENERATE.format(users=backups // 5))
        logical = subprocess.run(["psql", "-At", "-d", url, "-c", "SELECT sum(size_bytes), count(*) FROM backups"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        print(f"dataset: {backups // 5} users, {logical.split('|')[1]} backups, "
              f"{int(logical.split('|')[0]) / 1e9:.2f} GB of JSON (generated in {time.perf_counter() - started:.0f} s)")

        # Hint bits and the visibility map set now, or the first reader would pay for them.
        psql(url, "VACUUM (ANALYZE)")

        ours = os.path.join(folder, "ours.sql.zst")
        theirs = os.path.join(folder, "theirs.dump")
        results = {}
        settle(url)
        results["backup-db"] = run_measured([BINARY, "backup-db", "--output", ours], {"DATABASE_URL": url})
        settle(url)
        results["pg_dump -Fc"] = run_measured(["pg_dump", "-Fc", "-f", theirs, "-d", url])
        floor = ["psql", "-q", "-d", url] + sum((["-c", f"COPY public.{t} TO STDOUT"] for t in TABLES), [])
        settle(url)
        results["read floor (COPY)"] = run_measured(floor)
        psql(base + "/postgres", "CREATE DATABASE restore_ours", "CREATE DATABASE restore_theirs")
        settle(url)
        results["restore-db"] = run_measured([BINARY, "restore-db", ours], {"DATABASE_URL": base + "/restore_ours"})
        settle(url)
        results["pg_restore"] = run_measured(["pg_restore", "-d", base + "/restore_theirs", theirs])

        print(f"{'':20} {'wall s':>8} {'peak RSS MiB':>13}")
        for name, (seconds, rss) in results.items():
            print(f"{name:20} {seconds:8.1f} {rss:13.1f}")
        print(f"file size: backup-db {os.path.getsize(ours) / 1e6:.1f} MB, pg_dump -Fc {os.path.getsize(theirs) / 1e6:.1f} MB")
        b, d, f = results["backup-db"][0], results["pg_dump -Fc"][0], results["read floor (COPY)"][0]
        r, p = results["restore-db"][0], results["pg_restore"][0]
        print(f"ratios: backup-db / pg_dump = {b / d:.2f}, backup-db / read floor = {b / f:.2f}, "
              f"restore-db / pg_restore = {r / p:.2f}")


if __name__ == "__main__":
    main()
