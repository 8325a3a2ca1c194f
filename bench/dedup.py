#!/usr/bin/env python3
"""Documents as chunks against today's layout (whole documents), in one run on one machine.

Usage:
    cargo build --release && cargo build --release --example load
    git worktree add /tmp/previous fae9c87      # the last release with whole documents
    cargo build --release --manifest-path /tmp/previous/Cargo.toml --target-dir /tmp/previous/target
    python3 bench/dedup.py --previous /tmp/previous/target/release/dailyreps-backup-server \
        [--users 8] [--seconds 15] [--dataset-users 1000]

One PostgreSQL (a `serve --dev` cluster) holds a database per layout and run. The previous
release serves today's layout (its `backups` table and `store_backup` function), this build the
chunks; both are plain `serve` (rate limits off) driven by examples/load.rs over the real API
with histories from bench/histories.py (a workout log growing a workout a day, edits now and
then; 80 documents per user, final sizes about 50 KiB, 400 KiB and 1 MiB).

For each size (`--users` of 1 MiB histories, ten times as many of 50 KiB): every user uploads
30 documents, then the database's bytes per user are read (exactly 30 backups each, nothing
deleted yet), then 8 clients download the latest; on fresh accounts, 29 documents each, then
8 clients upload the other 51 (the next backups of a mature history, retention on). pgbench gives PostgreSQL's own rate on today's table in the same run:
inserting the same whole documents (read from an uncompressed side table: pgbench cannot
send a 1 MiB parameter) and reading a user's latest. Then bench/load.py's 64 KiB uploads of
documents that share nothing, on both servers; 32 clients uploading 1 MiB histories (this
build's peak RSS); and `backup-db` / `restore-db` of a dataset of `--dataset-users` users
(90% 50 KiB, 8% 400 KiB, 2% 1 MiB histories, 30 backups each) on both layouts, with the read
floor (every table COPYed to /dev/null, the mean of once before and once after the dump).
"""

import argparse
import csv
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import BINARY, SECRET, free_port, ready, start_dev_database  # noqa: E402
from histories import SIZES, history  # noqa: E402
from load import LOAD, pgbench, postgres_cpu, psql, reset_peak, rss_kib, run_measured, settle  # noqa: E402

BACKUPS = 80
MATURE = 30

INSERT_SQL = """\
\\set n random(1, :docs)
INSERT INTO backups (id, user_id, size_bytes, sha256, document)
SELECT gen_random_uuid(), user_id, size_bytes, sha256, document FROM bench_documents WHERE n = :n;
"""
TABLES_SQL = "SELECT string_agg(tablename, ' ') FROM pg_tables WHERE schemaname = 'public'"
READ_SQL = """\
\\set n random(1, :users)
SELECT document FROM backups WHERE user_id = (SELECT user_id FROM bench_users WHERE n = :n)
ORDER BY created_at DESC, id DESC LIMIT 1;
"""


def scalar(database_url, sql):
    out = subprocess.run(["psql", "-qtAX", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return out.strip()


def write_histories(folder, size, users, first_seed=0):
    for user in range(users):
        user_folder = os.path.join(folder, f"{user:05d}")
        os.makedirs(user_folder, exist_ok=True)
        for n, doc in enumerate(history((first_seed + user) * 7919 + size, size, BACKUPS)):
            with open(os.path.join(user_folder, f"{n:02d}.json"), "wb") as out:
                out.write(doc)


RUNNING = []


class Server:
    """`serve` of one binary on one database."""

    def __init__(self, binary, database_url):
        RUNNING.append(self)
        subprocess.run([binary, "migrate"], env={**os.environ, "DATABASE_URL": database_url}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.database_url = database_url
        env = {**os.environ, "DATABASE_URL": database_url, "APP_SIGNING_SECRET": SECRET, "LOG_FORMAT": "json",
               "RATE_LIMIT_REGISTER_PER_MINUTE": "0", "RATE_LIMIT_USER_PER_MINUTE": "0",
               "RATE_LIMIT_IP_PER_MINUTE": "0"}
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([binary, "serve", "--bind", f"127.0.0.1:{port}", "--metrics-bind",
                                         "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        while not ready(f"{self.url}/readyz"):
            time.sleep(0.05)

    def load(self, mode, clients, seconds, histories=None, mature=MATURE, size=65536, accounts=50, shed_ok=False):
        command = [LOAD, "--url", self.url, "--mode", mode, "--clients", str(clients), "--seconds", str(seconds)]
        if histories:
            command += ["--histories", histories, "--mature", str(mature)]
        else:
            command += ["--size", str(size), "--accounts", str(accounts)]
        settle(self.database_url)
        output, cpu = run_measured(command, {**os.environ, "APP_SIGNING_SECRET": SECRET}, self.process.pid)
        result = json.loads(output)
        done = round(result["ok_per_second"] * result["seconds"])
        result["cpu_ms_per_request"] = {k: round(v * 1000 / max(done, 1), 3) for k, v in cpu.items()}
        # 503 is the memory budget shedding load: expected when 32 clients send 1 MiB at once.
        failed = {s: n for s, n in result["statuses"].items() if not s.startswith("2") and not (shed_ok and s == "503")}
        if failed:
            self.log.seek(0)
            errors = [line for line in self.log.read().decode().splitlines() if '"level":"INFO"' not in line]
            sys.exit(f"{mode} against {self.url}: {failed}\n" + "\n".join(errors[-5:]))
        return result

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def dev_cluster(name):
    """A folder under /var/tmp the postgres user can enter, with a `serve --dev` cluster in it:
    (folder, the cluster's process, its database URL). `clean_up` removes both."""
    folder = tempfile.mkdtemp(prefix=f"drb-{name}-", dir="/var/tmp")
    os.chmod(folder, 0o755)
    dev, database_url = start_dev_database(folder + "/pg")
    return folder, dev, database_url


def database(base_url, name, template=None):
    """A new database of the cluster at `base_url` (a copy of `template` if given); returns its
    URL."""
    psql(base_url, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return base_url.rsplit("/", 1)[0] + "/" + name


def clean_up(dev, folder):
    """Kills the servers still running, stops the development PostgreSQL, removes `folder`."""
    for server in RUNNING:
        if server.process.poll() is None:
            server.process.kill()
    dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


def database_bytes(database_url):
    return int(scalar(database_url, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE n.nspname = 'public' AND c.relkind = 'r'"))


# Each table's bytes in its heap, its TOAST (table and index) and its indexes: where a layout's
# size goes, for comparing two runs of the dataset.
RELATIONS_SQL = """
SELECT c.relname, pg_relation_size(c.oid),
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0), pg_indexes_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC
"""


# The chunks' count, their mean length and stored (compressed) size, and how many are stored out of
# line (in TOAST: a compressed chunk of over about 2 KB).
CHUNK_ROWS_SQL = """
SELECT count(*), avg(octet_length(data))::bigint, avg(pg_column_size(data))::bigint,
       count(*) FILTER (WHERE pg_column_size(data) > 2000) FROM chunks
"""


def relation_bytes(database_url):
    rows = (line.split("|") for line in scalar(database_url, RELATIONS_SQL).splitlines())
    return {name: {"heap": int(heap), "toast": int(toast), "indexes": int(indexes)} for name, heap, toast, indexes in rows}


def load_pgbench_tables(database_url, folder, histories, users):
    """The documents the upload run sends, in an uncompressed side table, and the users. Each
    document goes to some user (an insert costs the same whoever's it is)."""
    ids = scalar(database_url, "SELECT string_agg(id::text, ',' ORDER BY id) FROM users").split(",")
    path = os.path.join(folder, "documents.csv")
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        n = 0
        for user, user_id in zip(sorted(os.listdir(histories))[:users], ids):
            for name in sorted(os.listdir(os.path.join(histories, user)))[MATURE:]:
                with open(os.path.join(histories, user, name), "rb") as doc:
                    data = doc.read()
                n += 1
                writer.writerow([n, user_id, len(data), "\\x" + hashlib.sha256(data).hexdigest(), data.decode()])
    psql(database_url, "DROP TABLE IF EXISTS bench_documents, bench_users; "
                       "CREATE TABLE bench_documents (n int PRIMARY KEY, user_id uuid, size_bytes int, "
                       "sha256 bytea, document text); ALTER TABLE bench_documents ALTER COLUMN document SET STORAGE EXTERNAL; "
                       "CREATE TABLE bench_users AS SELECT row_number() OVER (ORDER BY id)::int AS n, id AS user_id "
                       "FROM users; ALTER TABLE bench_users ADD PRIMARY KEY (n)")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c",
                    f"\\copy bench_documents FROM '{path}' WITH (FORMAT csv)"], check=True)
    psql(database_url, "VACUUM ANALYZE bench_documents, bench_users")
    return n, int(scalar(database_url, "SELECT count(*) FROM bench_users"))


def per_size(args, folder, database_url, label, size):
    histories = os.path.join(folder, f"histories-{label.replace(' ', '')}")
    # Enough uploads to measure, however small the documents.
    users = args.users * max(1, (1024 * 1024) // size // 2)
    write_histories(histories, size, users)
    result = {}
    for layout, binary in (("today", args.previous), ("chunks", BINARY)):
        name = f"{layout}_{label.replace(' ', '').lower()}"
        psql(database_url, f"CREATE DATABASE {name}")
        url = database_url.rsplit("/", 1)[0] + "/" + name
        server = Server(binary, url)
        try:
            empty = database_bytes(url)
            download = server.load("download", 8, args.seconds, histories, MATURE)
            users = int(scalar(url, "SELECT count(*) FROM users"))
            stored = (database_bytes(url) - empty) / users
            logical = int(scalar(url, "SELECT sum(size_bytes) FROM backups")) / users
            upload = server.load("upload", 8, args.seconds * 4, histories, MATURE - 1)
            result[layout] = {"bytes_per_user": stored, "logical_bytes_per_user": logical,
                              "download": download, "upload": upload}
        finally:
            server.stop()
        if layout == "today":
            # PostgreSQL alone on today's table, in the same database.
            docs, users = load_pgbench_tables(url, folder, histories, users)
            variables = {"docs": docs, "users": users}
            result["pgbench_insert"] = pgbench(url, folder, "insert", INSERT_SQL, 8, args.seconds, variables)
            result["pgbench_read"] = pgbench(url, folder, "read", READ_SQL, 8, args.seconds, variables)
    return result


def timed(argv, env):
    started = time.perf_counter()
    cpu_before = postgres_cpu()
    process = subprocess.run(argv, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        sys.exit(f"{argv[1]} failed: {process.stderr[-2000:]}")
    return time.perf_counter() - started, postgres_cpu() - cpu_before, process.stdout


def dataset(args, folder, database_url):
    """backup-db and restore-db of many users' histories, on both layouts."""
    mix = [("50 KiB", 0.90), ("400 KiB", 0.08), ("1 MiB", 0.02)]
    histories = os.path.join(folder, "dataset")
    first = 0
    for label, share in mix:
        count = max(1, round(args.dataset_users * share))
        part = os.path.join(histories, label.replace(" ", ""))
        write_histories(part, SIZES[label], count, first_seed=10_000 + first)
        for user in os.listdir(part):
            # Drop the documents past the 30th: exactly 30 backups a user.
            for name in sorted(os.listdir(os.path.join(part, user)))[MATURE:]:
                os.remove(os.path.join(part, user, name))
            os.rename(os.path.join(part, user), os.path.join(histories, f"{first:05d}"))
            first += 1
        os.rmdir(part)
    result = {"users": first}
    for layout, binary in (("today", args.previous), ("chunks", BINARY)):
        url = database_url.rsplit("/", 1)[0] + f"/dataset_{layout}"
        psql(database_url, f"CREATE DATABASE dataset_{layout}")
        server = Server(binary, url)
        server.load("upload", 8, 0, histories, MATURE)
        server.stop()
        psql(url, "VACUUM ANALYZE")
        dump = os.path.join(folder, f"{layout}.sql.zst")
        env = {**os.environ, "DATABASE_URL": url}
        # The read floor, before and after the dump: every table COPYed to /dev/null.
        floor = ["psql", "-q", "-o", "/dev/null", "-d", url] + sum(
            (["-c", f"COPY public.{t} TO STDOUT"] for t in scalar(url, TABLES_SQL).split()), [])
        if layout == "chunks":
            rows, length, stored, out_of_line = scalar(url, CHUNK_ROWS_SQL).split("|")
            result["chunk_rows"] = {"rows": int(rows), "mean_bytes": int(length), "mean_stored_bytes": int(stored),
                                    "out_of_line": int(out_of_line)}
        floor_s = [timed(floor, env)[0]]
        backup_s, backup_pg, _ = timed([binary, "backup-db", "--output", dump], env)
        floor_s.append(timed(floor, env)[0])
        target = f"restored_{layout}"
        psql(database_url, f"CREATE DATABASE {target}")
        env_target = {**os.environ, "DATABASE_URL": database_url.rsplit("/", 1)[0] + "/" + target}
        restore_s, restore_pg, _ = timed([binary, "restore-db", dump], env_target)
        result[layout] = {"database_bytes": database_bytes(url), "relations": relation_bytes(url),
                          "dump_bytes": os.path.getsize(dump),
                          "backup_seconds": backup_s, "backup_postgres_cpu_s": backup_pg,
                          "floor_seconds": statistics.mean(floor_s),
                          "restore_seconds": restore_s, "restore_postgres_cpu_s": restore_pg}
    # Migration 6 on the previous release's database: its documents converted into chunks.
    url = database_url.rsplit("/", 1)[0] + "/dataset_today"
    before = int(scalar(url, "SELECT pg_database_size(current_database())"))
    seconds, postgres_s, _ = timed([BINARY, "migrate"], {**os.environ, "DATABASE_URL": url})
    result["migration"] = {"seconds": seconds, "postgres_cpu_s": postgres_s, "database_bytes_before": before,
                           "database_bytes_after": int(scalar(url, "SELECT pg_database_size(current_database())")),
                           "chunks_bytes": int(scalar(url, "SELECT pg_total_relation_size('chunks')"))}
    shutil.rmtree(histories)
    return result


def ratio(a, b):
    return a / b if b else float("nan")


def report(results):
    lines = ["| size | bytes per user, today → chunks | less | upload /s chunks / pgbench insert (today's API) "
             "| PG CPU ms per upload, chunks / pgbench | download /s chunks / pgbench | p99 ms chunks / pgbench |",
             "|---|---|---|---|---|---|---|"]
    for label, r in results["sizes"].items():
        today, chunks, insert, read = r["today"], r["chunks"], r["pgbench_insert"], r["pgbench_read"]
        lines.append(
            f"| {label} | {today['bytes_per_user'] / 2**20:.2f} MiB → {chunks['bytes_per_user'] / 2**20:.2f} MiB "
            f"| {ratio(today['bytes_per_user'], chunks['bytes_per_user']):.1f}x "
            f"| {chunks['upload']['ok_per_second']:.0f} / {insert['ok_per_second']:.0f} "
            f"= {ratio(chunks['upload']['ok_per_second'], insert['ok_per_second']):.2f}x "
            f"({today['upload']['ok_per_second']:.0f}) "
            f"| {chunks['upload']['cpu_ms_per_request']['postgres']:.2f} / "
            f"{insert['cpu_ms_per_request']['postgres']:.2f} "
            f"= {ratio(chunks['upload']['cpu_ms_per_request']['postgres'], insert['cpu_ms_per_request']['postgres']):.2f}x "
            f"| {chunks['download']['ok_per_second']:.0f} / {read['ok_per_second']:.0f} "
            f"= {ratio(chunks['download']['ok_per_second'], read['ok_per_second']):.2f}x "
            f"| {chunks['download']['p99_ms']:.1f} / {read['p99_ms']:.1f} "
            f"= {ratio(chunks['download']['p99_ms'], read['p99_ms']):.2f}x |")
    if "unrelated_64k" in results:
        u = results["unrelated_64k"]
        lines.append("")
        lines.append(f"64 KiB uploads sharing nothing (8 clients, 50 accounts each): chunks "
                     f"{u['chunks']['ok_per_second']:.0f}/s, today {u['today']['ok_per_second']:.0f}/s "
                     f"= {ratio(u['chunks']['ok_per_second'], u['today']['ok_per_second']):.2f}x; CPU ms per upload "
                     f"server {u['chunks']['cpu_ms_per_request']['server']:.2f} / {u['today']['cpu_ms_per_request']['server']:.2f}, "
                     f"PostgreSQL {u['chunks']['cpu_ms_per_request']['postgres']:.2f} / "
                     f"{u['today']['cpu_ms_per_request']['postgres']:.2f}")
    if "rss_32_x_1mib" in results:
        r = results["rss_32_x_1mib"]
        lines.append(f"32 clients uploading 1 MiB histories: {r['upload']['ok_per_second']:.0f}/s, "
                     f"peak RSS {r['peak_rss_mib']:.1f} MiB, answers {r['upload']['statuses']}")
    if "dataset" in results:
        d = results["dataset"]
        t, c = d["today"], d["chunks"]
        lines.append("")
        lines.append(f"| {d['users']} users, 30 backups each | today | chunks | less / faster |")
        lines.append("|---|---|---|---|")
        lines.append(f"| database | {t['database_bytes'] / 2**20:.0f} MiB | {c['database_bytes'] / 2**20:.0f} MiB "
                     f"| {ratio(t['database_bytes'], c['database_bytes']):.1f}x |")
        lines.append(f"| dump | {t['dump_bytes'] / 2**20:.1f} MiB | {c['dump_bytes'] / 2**20:.1f} MiB "
                     f"| {ratio(t['dump_bytes'], c['dump_bytes']):.1f}x |")
        lines.append(f"| backup-db | {t['backup_seconds']:.1f} s | {c['backup_seconds']:.1f} s "
                     f"| {ratio(t['backup_seconds'], c['backup_seconds']):.1f}x |")
        if "floor_seconds" in c:
            lines.append(f"| read floor (COPY of every table) | {t['floor_seconds']:.1f} s | {c['floor_seconds']:.1f} s "
                         f"| {ratio(t['floor_seconds'], c['floor_seconds']):.1f}x |")
            lines.append(f"| backup-db / floor | {ratio(t['backup_seconds'], t['floor_seconds']):.2f}x "
                         f"| {ratio(c['backup_seconds'], c['floor_seconds']):.2f}x | |")
        lines.append(f"| restore-db | {t['restore_seconds']:.1f} s | {c['restore_seconds']:.1f} s "
                     f"| {ratio(t['restore_seconds'], c['restore_seconds']):.1f}x |")
        if "relations" in c:
            lines.append("")
            lines.append("| layout | table | heap MiB | TOAST MiB | indexes MiB |")
            lines.append("|---|---|---|---|---|")
            for layout in ("today", "chunks"):
                for name, r in d[layout]["relations"].items():
                    lines.append(f"| {layout} | {name} | {r['heap'] / 2**20:.1f} | {r['toast'] / 2**20:.1f} "
                                 f"| {r['indexes'] / 2**20:.1f} |")
        if "chunk_rows" in d:
            r = d["chunk_rows"]
            lines.append("")
            lines.append(f"{r['rows']} chunks, {r['mean_bytes']} bytes on average, stored in {r['mean_stored_bytes']}; "
                         f"{r['out_of_line']} out of line (TOAST)")
        m = d["migration"]
        lines.append("")
        lines.append(f"Migration 6 on the previous release's database: {m['seconds']:.1f} s "
                     f"(PostgreSQL {m['postgres_cpu_s']:.1f} s CPU), {m['database_bytes_before'] / 2**20:.0f} MiB → "
                     f"{m['database_bytes_after'] / 2**20:.0f} MiB, the chunks written beside the old table "
                     f"{m['chunks_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", required=True, help="the previous release's binary (whole documents)")
    parser.add_argument("--users", type=int, default=8, help="users of 1 MiB histories (more of smaller ones)")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--dataset-users", type=int, default=1000)
    parser.add_argument("--only", default="sizes,unrelated,rss,dataset")
    parser.add_argument("--resume", help="a JSON file of results: read first, written after each part")
    args = parser.parse_args()
    for needed in (BINARY, LOAD, args.previous):
        if not os.path.exists(needed):
            sys.exit(f"build first: {needed}")
    only = args.only.split(",")
    folder, dev, database_url = dev_cluster("dedup")
    results = {"sizes": {}}
    if args.resume and os.path.exists(args.resume):
        with open(args.resume) as saved:
            results = json.load(saved)

    def save():
        if args.resume:
            with open(args.resume, "w") as out:
                json.dump(results, out, indent=1)

    try:
        if "sizes" in only:
            for label, size in SIZES.items():
                results["sizes"][label] = per_size(args, folder, database_url, label, size)
                save()
                print(f"{label} done", file=sys.stderr)
        if "unrelated" in only:
            results["unrelated_64k"] = {}
            for layout, binary in (("today", args.previous), ("chunks", BINARY)):
                psql(database_url, f"CREATE DATABASE unrelated_{layout}")
                server = Server(binary, database_url.rsplit("/", 1)[0] + f"/unrelated_{layout}")
                results["unrelated_64k"][layout] = server.load("upload", 8, args.seconds)
                server.stop()
            save()
        if "rss" in only:
            histories = os.path.join(folder, "rss")
            write_histories(histories, SIZES["1 MiB"], 32, first_seed=5_000)
            psql(database_url, "CREATE DATABASE rss")
            server = Server(BINARY, database_url.rsplit("/", 1)[0] + "/rss")
            reset_peak(server.process.pid)
            upload = server.load("upload", 32, args.seconds * 4, histories, 0, shed_ok=True)
            results["rss_32_x_1mib"] = {"upload": upload, "peak_rss_mib": rss_kib(server.process.pid, "VmHWM") / 1024}
            server.stop()
            shutil.rmtree(histories)
            save()
        if "dataset" in only:
            results["dataset"] = dataset(args, folder, database_url)
            save()
    finally:
        clean_up(dev, folder)
    json.dump(results, sys.stderr, indent=1)
    print(file=sys.stderr)
    print(report(results))


if __name__ == "__main__":
    main()
