#!/usr/bin/env python3
"""The upload path's regression gate: this build against the previous release (whole documents)
and against PostgreSQL's own whole-row insert of the same documents, in one run, in interleaved
rounds. This machine is shared and drifts from minute to minute, so each figure is the median
of per-round ratios, every side of a round measured back to back (in an order that rotates).

Usage:
    cargo build --release && cargo build --release --example load
    git worktree add /tmp/previous fae9c87      # the last release with whole documents
    cargo build --release --manifest-path /tmp/previous/Cargo.toml --target-dir /tmp/previous/target
    python3 bench/upload_gate.py --previous /tmp/previous/target/release/dailyreps-backup-server \
        [--rounds 5] [--seconds 10] [--history-size "50 KiB" --users 64]

Cases, each on its own databases of one `serve --dev` cluster, both servers plain `serve`
(rate limits off) driven by examples/load.rs over the real API:
- `history`: the next backups of mature 1 MiB workout histories (bench/histories.py; the
  documents grow to about 1.1 MiB; or the size `--history-size` names), 8 clients, fresh
  accounts each round; pgbench inserts the same documents whole into the previous release's
  table.
- `64k x8`, `64k x32`: 64 KiB documents that share nothing, 8 and 32 clients over 50 accounts;
  pgbench inserts 64 KiB rows into the previous release's table.
- `download`: the latest backup (the last of 80; about 1.1 MiB of a 1 MiB history) of the same
  histories, 8 clients, on fresh accounts that uploaded all 80 first (so the latest's chunks
  were written over 80 uploads, among the other users', as in a serving database); pgbench
  reads the latest whole row of the `history` case's users from the previous release's table
  (their last documents, inserted just before). The server's and PostgreSQL's CPU per download
  leaves out the uploads before: a run of the same set-up with no downloads is measured too,
  and its CPU taken off.
CPU per request is per process (load client, server, PostgreSQL), from /proc, since they share
the two cores. Not part of CI's pass or fail: the figures go to bench/README.md with the commit.
"""

import argparse
import hashlib
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import BINARY  # noqa: E402
from dedup import INSERT_SQL as HISTORY_INSERT_SQL  # noqa: E402
from dedup import BACKUPS, MATURE, READ_SQL, Server, clean_up, database, dev_cluster, load_pgbench_tables, write_histories  # noqa: E402
from histories import SIZES  # noqa: E402
from load import LOAD, document, pgbench, psql  # noqa: E402

# pgbench's 64 KiB insert into the previous release's own table (the same row every time: an
# insert costs what it costs whatever the document says).
ROW_INSERT_SQL = """\
INSERT INTO backups (id, user_id, size_bytes, sha256, document)
VALUES (gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad((:client_id + 1)::text, 12, '0'))::uuid,
        :size, decode(:sha, 'hex'), :doc);
"""

# The last document of each of the `history` case's users (load_pgbench_tables gives them the
# first ids, and READ_SQL reads the first `--users` of them), inserted as their latest row.
LAST_DOCUMENTS_SQL = """
INSERT INTO backups (id, user_id, size_bytes, sha256, document)
SELECT DISTINCT ON (user_id) gen_random_uuid(), user_id, size_bytes, sha256, document
FROM bench_documents ORDER BY user_id, n DESC
"""


def downloads(server, histories, seconds):
    """The downloads of each user's latest backup once the whole history is uploaded; CPU per
    download net of the uploads (a set-up alone, no downloads, measured before)."""
    set_up = server.load("download", 8, 0, histories, BACKUPS)
    result = server.load("download", 8, seconds, histories, BACKUPS)
    done = max(round(result["ok_per_second"] * result["seconds"]), 1)
    # A run with nothing done reports its whole CPU as the CPU of one request.
    result["cpu_ms_per_request"] = {who: round(ms - set_up["cpu_ms_per_request"][who] / done, 3)
                                    for who, ms in result["cpu_ms_per_request"].items()}
    return result


def side(result):
    return {"per_second": result["ok_per_second"], "p99_ms": result.get("p99_ms"),
            "cpu_ms": result["cpu_ms_per_request"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", required=True, help="the previous release's binary (whole documents)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--users", type=int, default=8, help="users of histories per round")
    parser.add_argument("--history-size", choices=list(SIZES), default="1 MiB",
                        help="the size the histories grow to (small ones need more --users to last the round)")
    parser.add_argument("--warm-up", type=int, default=5, help="seconds of unmeasured 64 KiB uploads first")
    args = parser.parse_args()
    for needed in (BINARY, LOAD, args.previous):
        if not os.path.exists(needed):
            sys.exit(f"build first: {needed}")
    folder, dev, base_url = dev_cluster("gate")
    rounds = []
    try:
        histories = os.path.join(folder, "histories")
        write_histories(histories, SIZES[args.history_size], args.users * args.rounds)
        servers = {"this": Server(BINARY, database(base_url, "this_build")),
                   "previous": Server(args.previous, database(base_url, "previous_release"))}
        # Downloads on databases of their own: their set-ups upload whole histories, which would
        # otherwise change what the next round's uploads find.
        download_servers = {"this": Server(BINARY, database(base_url, "this_downloads")),
                            "previous": Server(args.previous, database(base_url, "previous_downloads"))}
        # pgbench's tables: the previous release's schema, 64 users for the row insert.
        pg_url = database(base_url, "pgbench")
        Server(args.previous, pg_url).stop()
        psql(pg_url, "INSERT INTO users (id, token_hash) SELECT ('00000000-0000-0000-0000-' || "
             "lpad(n::text, 12, '0'))::uuid, sha256(n::text::bytea) FROM generate_series(1, 64) n")
        # Unmeasured first: PostgreSQL plans the functions' statements once per connection, and
        # on the empty tables of a fresh database it plans scans of the whole table, kept until
        # ANALYZE (each run's settle). A serving database is neither empty nor unanalyzed.
        for server in servers.values():
            server.load("upload", 8, args.warm_up, accounts=50)
        doc = document(64 * 1024)
        row = {"doc": doc, "size": len(doc), "sha": hashlib.sha256(doc.encode()).hexdigest()}
        for number in range(args.rounds):
            # This round's users: a slice of the histories, so no round re-sends another's.
            mine = os.path.join(folder, f"round-{number}")
            os.makedirs(mine)
            for user in sorted(os.listdir(histories))[number * args.users:(number + 1) * args.users]:
                os.symlink(os.path.join(histories, user), os.path.join(mine, user))
            order = ["this", "previous", "pgbench"]
            order = order[number % 3:] + order[:number % 3]
            measured = {}
            for case, clients in (("history", 8), ("64k x8", 8), ("64k x32", 32), ("download", 8)):
                measured[case] = {}
                for who in order:
                    if who == "pgbench" and case == "history":
                        docs, users = load_pgbench_tables(servers["previous"].database_url, folder, mine, args.users)
                        result = pgbench(servers["previous"].database_url, folder, "history", HISTORY_INSERT_SQL,
                                         clients, args.seconds, {"docs": docs, "users": users})
                    elif who == "pgbench" and case == "download":
                        # The history case's users' latest rows: their last documents, whole.
                        psql(servers["previous"].database_url, LAST_DOCUMENTS_SQL)
                        result = pgbench(servers["previous"].database_url, folder, "read", READ_SQL, clients,
                                         args.seconds, {"users": args.users})
                    elif case == "download":
                        result = downloads(download_servers[who], mine, args.seconds)
                    elif who == "pgbench":
                        result = pgbench(pg_url, folder, "row", ROW_INSERT_SQL, clients, args.seconds, row)
                    elif case == "history":
                        result = servers[who].load("upload", clients, args.seconds, mine, MATURE - 1)
                    else:
                        result = servers[who].load("upload", clients, args.seconds, accounts=50)
                    measured[case][who] = side(result)
            rounds.append(measured)
            print(f"round {number + 1} of {args.rounds} done", file=sys.stderr)
        for server in [*servers.values(), *download_servers.values()]:
            server.stop()
    finally:
        clean_up(dev, folder)
    json.dump(rounds, sys.stderr, indent=1)
    print(file=sys.stderr)
    print(report(rounds))


def report(rounds):
    lines = ["| case | this /s | previous /s | pgbench /s | this / previous (median of rounds) | "
             "this / pgbench (median) | CPU ms per request, client / server / PostgreSQL: this; previous |",
             "|---|---|---|---|---|---|---|"]
    for case in rounds[0]:
        rate = {who: statistics.median(r[case][who]["per_second"] for r in rounds) for who in rounds[0][case]}
        vs_previous = statistics.median(r[case]["this"]["per_second"] / r[case]["previous"]["per_second"]
                                        for r in rounds)
        vs_pgbench = statistics.median(r[case]["this"]["per_second"] / r[case]["pgbench"]["per_second"]
                                       for r in rounds)

        def cpu(who):
            parts = [statistics.median(r[case][who]["cpu_ms"].get(p, 0.0) for r in rounds)
                     for p in ("client", "server", "postgres")]
            return " / ".join(f"{p:.2f}" for p in parts)

        lines.append(f"| {case} | {rate['this']:.0f} | {rate['previous']:.0f} | {rate['pgbench']:.0f} | "
                     f"{vs_previous:.2f}x | {vs_pgbench:.2f}x | {cpu('this')}; {cpu('previous')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
