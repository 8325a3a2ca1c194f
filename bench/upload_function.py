#!/usr/bin/env python3
"""What PostgreSQL spends on one upload, part by part: pgbench calls variants of the
`store_backup` function directly (no server in front), and PostgreSQL's CPU per call is read
from /proc.

Usage:
    cargo build --release
    python3 bench/upload_function.py [--seconds 10] [--runs 2]

A `serve --dev` cluster in a temporary folder holds 400 users with 30 backups of 64 KiB each
(so every stored upload also prunes one, as a mature account's does). 8 pgbench clients pick
a user at random for each call and send a fresh digest, so dedupe never answers. The variants,
each a copy of the migration's function with a part taken out:

  insert          a bare INSERT of the same row (pgbench's baseline in bench/load.py)
  lock+insert     PL/pgSQL: lock the user's row, INSERT ... RETURNING
  no retention    store_backup without its DELETE of backups past the limit
  no delete       store_backup with a limit no user reaches (the scan for rows past it runs)
  store_backup    as shipped
  lookup+store    the token lookup, then store_backup: the server's two statements
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import ROOT, start_dev_database  # noqa: E402
from load import DOC_SIZE, document, pgbench, psql  # noqa: E402

FUNCTION_SQL = os.path.join(ROOT, "migrations", "20261129000002_store_backup_function.sql")
USERS = 400
KEPT = 30
USER = "('00000000-0000-0000-0000-' || lpad((:u)::text, 12, '0'))::uuid"
PICK = f"\\set u random(1, {USERS})\n"


def variants(function_sql):
    """name -> CREATE FUNCTION text for each cut-down copy of store_backup."""
    def renamed(name, text):
        return text.replace("CREATE FUNCTION store_backup(", f"CREATE FUNCTION {name}(")

    no_retention = re.sub(r"\), pruned AS \(.*?\n        \), stored AS", "), stored AS", function_sql, flags=re.S)
    lock_insert = function_sql[:function_sql.index("AS $$")] + """AS $$
#variable_conflict use_column
BEGIN
    PERFORM FROM users WHERE users.id = p_user_id FOR UPDATE;
    RETURN QUERY
        INSERT INTO backups AS b (id, user_id, size_bytes, sha256, document)
        VALUES (p_id, p_user_id, p_size_bytes, p_sha256, p_document)
        RETURNING 'stored'::text, b.id, b.created_at, b.size_bytes, b.sha256, false;
END
$$;
"""
    if no_retention == function_sql:
        sys.exit("the function's retention step was not found; update this script with the migration")
    return {"store_lock_insert": renamed("store_lock_insert", lock_insert),
            "store_no_retention": renamed("store_no_retention", no_retention)}


def call(function, keep=KEPT):
    return PICK + (f"SELECT * FROM {function}({USER}, gen_random_uuid(), :size, sha256(random()::text::bytea), "
                   f":doc, {keep}, NULL);\n")


SCRIPTS = {
    "insert": PICK + f"INSERT INTO backups (id, user_id, size_bytes, sha256, document) "
                     f"VALUES (gen_random_uuid(), {USER}, :size, sha256(random()::text::bytea), :doc);\n",
    "lock+insert": call("store_lock_insert"),
    "no retention": call("store_no_retention"),
    "no delete": call("store_backup", keep=1_000_000),
    "store_backup": call("store_backup"),
    "lookup+store": PICK + "SELECT id, created_at FROM users WHERE token_hash = sha256((:u)::text::bytea);\n"
                    + call("store_backup"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="drb-function-", dir="/var/tmp")
    os.chmod(folder, 0o755)
    dev, database_url = start_dev_database(folder)
    try:
        doc = document(DOC_SIZE)
        variables = {"doc": doc, "size": len(doc)}
        psql(database_url, "INSERT INTO users (id, token_hash) SELECT ('00000000-0000-0000-0000-' || "
             f"lpad(n::text, 12, '0'))::uuid, sha256(n::text::bytea) FROM generate_series(1, {USERS}) n")
        psql(database_url, f"INSERT INTO backups (id, user_id, size_bytes, sha256, document, created_at) "
             f"SELECT gen_random_uuid(), u.id, {len(doc)}, sha256(random()::text::bytea), '{doc}', "
             f"now() - g * interval '1 minute' FROM users u, generate_series(1, {KEPT}) g")
        with open(FUNCTION_SQL) as migration:
            for sql in variants(migration.read()).values():
                psql(database_url, sql)

        print("| statement | calls/s | PostgreSQL ms per call |")
        print("|---|---|---|")
        for run in range(args.runs):
            for name, script in SCRIPTS.items():
                result = pgbench(database_url, folder, re.sub(r"\W", "_", name), script, 8, args.seconds, variables)
                print(f"| {name} (run {run + 1}) | {result['ok_per_second']:.0f} | "
                      f"{result['cpu_ms_per_request']['postgres']:.3f} |", flush=True)
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
        subprocess.run(["rm", "-rf", folder])


if __name__ == "__main__":
    main()
