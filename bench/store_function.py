#!/usr/bin/env python3
"""What each part of the upload's SQL costs PostgreSQL: pgbench calling `store_backup_v4` on
arguments captured from real uploads, in databases where one part is taken out, in interleaved
rounds. PostgreSQL alone, no server: for choosing what to change in src/db/sql/ before building.

Usage:
    cargo build --release && cargo build --release --example load
    python3 bench/store_function.py [--rounds 3] [--seconds 8] [VARIANT ...]

VARIANT is one of the names below (default: all of them), or a file of SQL run in that
variant's database after it is copied (for instance a `CREATE OR REPLACE FUNCTION
store_backup_v4` to try). The first variant is the baseline of the ratios. `as-shipped` is the
function as this tree has it; the others take a part out, so they are wrong on purpose and
only say what that part costs.

How: one `serve --dev` cluster; this build serves a database while examples/load.rs uploads its
64 KiB documents for 6 s (8 clients, 50 accounts each); each backup then becomes one call's
arguments (the chunks' hashes in order, each chunk once with its text: what an upload below
`ASK_ABOVE_BYTES` sends). Each call renumbers the first chunk's `"n"` so that, like the load
client's uploads, one chunk is new and the rest are stored. Each variant gets a copy of that
database, and 6 s of unmeasured calls so that every user is at the retention limit. Then per
round, each variant: 8 pgbench clients for `--seconds`, and PostgreSQL's CPU per call from
/proc. Reported: calls per second and PostgreSQL ms per call (medians of the rounds), and the
median of the per-round ratios to the first variant.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import BINARY  # noqa: E402
from dedup import Server, clean_up, database, dev_cluster, scalar  # noqa: E402
from load import pgbench, psql  # noqa: E402

SQL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "db", "sql")

CAPTURE = """
CREATE TABLE bench_calls AS
SELECT row_number() OVER () AS n, b.user_id, b.size_bytes,
  (SELECT array_agg(c.sha256 ORDER BY o.k) FROM unnest(b.chunk_ids) WITH ORDINALITY o(id, k)
   JOIN chunks c ON c.id = o.id) AS chunks,
  (SELECT array_agg(x.sha256 ORDER BY x.k) FROM (
     SELECT DISTINCT ON (c.sha256) c.sha256, o.k FROM unnest(b.chunk_ids) WITH ORDINALITY o(id, k)
     JOIN chunks c ON c.id = o.id ORDER BY c.sha256, o.k) x) AS new_sha256,
  (SELECT array_agg(x.data ORDER BY x.k) FROM (
     SELECT DISTINCT ON (c.sha256) c.data, o.k FROM unnest(b.chunk_ids) WITH ORDINALITY o(id, k)
     JOIN chunks c ON c.id = o.id ORDER BY c.sha256, o.k) x) AS new_data
FROM backups b;
ALTER TABLE bench_calls ADD PRIMARY KEY (n);
"""

# One upload: the captured call with a new first chunk (its "n" renumbered), no idempotency key.
CALL = """\
\\set n random(1, :calls)
\\set r random(1, 999999999)
SELECT s.outcome FROM bench_calls c,
  LATERAL (SELECT regexp_replace(c.new_data[1], '"n": *[0-9]+', '"n":' || lpad(:r::text, 12)) AS first) f,
  LATERAL (SELECT sha256(convert_to(f.first, 'UTF8')) AS hash) h,
  LATERAL store_backup_v4(c.user_id, gen_random_uuid(), c.size_bytes, sha256(h.hash || c.chunks[1]),
                          h.hash || c.chunks[2:], h.hash || c.new_sha256[2:], f.first || c.new_data[2:], 30, NULL) s
WHERE c.n = :n;
"""


def read(name):
    with open(os.path.join(SQL, name)) as source:
        return source.read()


def without(text, start, end, instead=""):
    """`text` with the part from `start` up to `end` (exclusive) replaced."""
    first = text.index(start)
    return text[:first] + instead + text[text.index(end, first):]


def variants():
    store, free = read("store_backup_v4.sql"), read("free_unreferenced_chunks.sql")
    freeing = "    PERFORM FROM users"
    return {
        "as-shipped": "",
        "no-heal": without(store, "    UPDATE chunks c SET data", "    SELECT b.sha256, b.chunk_ids",
                           "    v_healed := 0;\n"),
        "no-missing-check": without(store, "        IF EXISTS (", "        INSERT INTO chunks"),
        "no-trigger-lock": without(free, freeing, "    DELETE FROM chunks"),
        "trigger-empty": without(free, freeing, "    RETURN NULL;"),
        "no-trigger": "DROP TRIGGER backups_free_chunks ON backups;",
    }


def main():
    known = variants()
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", default=list(known), help=f"{', '.join(known)}, or a .sql file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    folder, dev, base_url = dev_cluster("store")
    try:
        captured = database(base_url, "captured")
        server = Server(BINARY, captured)
        server.load("upload", 8, 6, accounts=50)
        server.stop()
        psql(captured, CAPTURE)
        calls = scalar(captured, "SELECT count(*) FROM bench_calls")
        urls = {}
        for number, variant in enumerate(args.variants):
            sql = known[variant] if variant in known else open(variant).read()
            urls[variant] = database(base_url, f"variant_{number}", template="captured")
            if sql:
                psql(urls[variant], sql)
            pgbench(urls[variant], folder, "call", CALL, 8, 6, {"calls": calls})
        results = {variant: [] for variant in args.variants}
        for number in range(args.rounds):
            for variant in args.variants if number % 2 == 0 else reversed(args.variants):
                results[variant].append(pgbench(urls[variant], folder, "call", CALL, 8, args.seconds, {"calls": calls}))
        baseline = results[args.variants[0]]
        print("| variant | calls /s | PostgreSQL ms per call | against the first (median of rounds) |")
        print("|---|---|---|---|")
        for variant, rounds in results.items():
            rate = statistics.median(r["ok_per_second"] for r in rounds)
            cpu = statistics.median(r["cpu_ms_per_request"]["postgres"] for r in rounds)
            ratio = statistics.median(r["ok_per_second"] / b["ok_per_second"] for r, b in zip(rounds, baseline))
            print(f"| {variant} | {rate:.0f} | {cpu:.3f} | {ratio:.2f}x |")
    finally:
        clean_up(dev, folder)


if __name__ == "__main__":
    main()
