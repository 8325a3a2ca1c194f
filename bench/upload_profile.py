#!/usr/bin/env python3
"""Where an upload's CPU goes: a `perf` profile of the whole machine while the load client
uploads, reported per process (the load client, the server, PostgreSQL) and, within the
server and PostgreSQL, per function.

Usage:
    cargo build --release && cargo build --release --example load
    python3 bench/upload_profile.py [--case history|64k] [--seconds 20] [--binary PATH]

`history` sends the next backups of mature 1 MiB workout histories (bench/histories.py) from 8
clients; `64k` 64 KiB documents that share nothing from 8 clients over 50 accounts. The raw
profile stays in the printed folder for `perf report -i`.
"""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cold_start import BINARY  # noqa: E402
from dedup import MATURE, Server, clean_up, database, dev_cluster, write_histories  # noqa: E402
from histories import SIZES  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["history", "64k"], default="history")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--binary", default=BINARY)
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    folder, dev, base_url = dev_cluster("profile")
    try:
        server = Server(args.binary, database(base_url, "profiled"))
        histories = None
        if args.case == "history":
            histories = os.path.join(folder, "histories")
            write_histories(histories, SIZES["1 MiB"], args.users)
        # Unmeasured first, as in upload_gate.py: plans made on empty tables scan them whole.
        server.load("upload", 8, 5, accounts=50)
        data = os.path.join(folder, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = server.load("upload", 8, args.seconds, histories, MATURE - 1)
        finally:
            perf.send_signal(2)
            perf.wait()
        server.stop()
        print(f"{result['ok_per_second']:.0f} uploads/s; CPU ms per upload: {result['cpu_ms_per_request']}")
        report = ["perf", "report", "-i", data, "--no-children", "--percent-limit", "0.7", "--stdio", "-g", "none",
                  "--percentage", "relative"]
        print(subprocess.run(report + ["--sort", "comm"], capture_output=True, text=True).stdout)
        for name, only in (("server", ["--pid", str(server.process.pid)]), ("PostgreSQL", ["--comms", "postgres"])):
            print(f"{name}, share of its own samples:")
            print(subprocess.run(report + only + ["--sort", "dso,sym"], capture_output=True, text=True).stdout)
        print("PostgreSQL by library:")
        print(by_library(report + ["--comms", "postgres", "--sort", "dso,sym", "--percent-limit", "0"]))
        print(f"raw profile: {folder}.perf.data (delete it when done)")
        os.rename(data, data + ".kept")
    finally:
        kept = os.path.join(folder, "perf.data.kept")
        clean_up_but(dev, folder, kept)


def by_library(report):
    """Shares summed per library from a `dso,sym` report: libcrypto's symbols (the chunks'
    SHA-256 checks) are not resolved, and perf's own `--sort dso` drops libraries' samples when
    filtered by command."""
    shares = {}
    for line in subprocess.run(report, capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].endswith("%"):
            shares[fields[1]] = shares.get(fields[1], 0.0) + float(fields[0].rstrip("%"))
    return "\n".join(f"{share:6.2f}%  {library}" for library, share in sorted(shares.items(), key=lambda kv: -kv[1]))


def clean_up_but(dev, folder, kept):
    """Stops everything; keeps only the profile, moved beside the folder."""
    if os.path.exists(kept):
        os.rename(kept, folder + ".perf.data")
    clean_up(dev, folder)


if __name__ == "__main__":
    main()
