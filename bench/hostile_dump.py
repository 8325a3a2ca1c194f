#!/usr/bin/env python3
"""Peak RSS of `verify-backup` on a small hostile dump: one 512 MiB line, compressed to a few KB.

    python3 bench/hostile_dump.py [target/release/dailyreps-backup-server]

Before the reader capped its lines, this file took verify-backup to 518 MiB RSS (an
out-of-memory kill on a 256 MB machine); now the line is refused at the cap.
"""

import json
import os
import subprocess
import sys
import tempfile

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/release/dailyreps-backup-server"
LINE_MIB = 512


def main():
    manifest = {"format_version": 2, "created_at": "2026-12-01T00:00:00Z", "server_version": "0.1.0",
                "postgres_version": "16.4", "schema_version": 1}
    head = (f"-- dailyreps-backup-server dump\n-- manifest: {json.dumps(manifest)}\n"
            "-- table: users\nCOPY public.users (id) FROM stdin;\n").encode()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "hostile.sql.zst")
        with open(path, "wb") as out:
            zstd = subprocess.Popen(["zstd", "-1", "-q", "-c"], stdin=subprocess.PIPE, stdout=out)
            zstd.stdin.write(head)
            block = b"x" * (1 << 20)
            for _ in range(LINE_MIB):
                zstd.stdin.write(block)
            zstd.stdin.write(b"\n")
            zstd.stdin.close()
            zstd.wait()
        size = os.path.getsize(path)
        run = subprocess.run(["/usr/bin/time", "-f", "%M", BINARY, "verify-backup", path],
                             capture_output=True, text=True)
        peak_kib = int(run.stderr.strip().splitlines()[-1])
        print(f"file: {size / 1024:.1f} KiB holding one {LINE_MIB} MiB line")
        print(f"verify-backup: exit {run.returncode}, peak RSS {peak_kib / 1024:.1f} MiB")
        print("\n".join(line for line in run.stderr.splitlines()[:-1]))


if __name__ == "__main__":
    main()
