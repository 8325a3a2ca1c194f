#!/usr/bin/env python3
"""Two builds of the same schema against each other, in interleaved rounds: for a change inside
the server (the allocator, a parser) that upload_gate.py, whose other side is the release with
whole documents, cannot isolate.

Usage:
    cargo build --release && cp target/release/dailyreps-backup-server /tmp/after
    (build the other side) && cp target/release/dailyreps-backup-server /tmp/before
    python3 bench/two_builds.py /tmp/after /tmp/before [--rounds 3] [--seconds 10]

Each build serves its own database of one `serve --dev` cluster, warmed up first. Per round,
in an order that alternates: the next backups of mature histories (growing to 1 MiB, or to
`--history-bytes`; 8 clients, fresh accounts each round), then 64 KiB documents sharing
nothing (8 clients over 50 accounts). For
each: the rate, CPU per upload per process (from /proc) and the server's minor page faults per
upload (each zero-fills a page); in the history case these include the 29 unmeasured uploads
each fresh account makes first, as in upload_gate.py. Then, on each build alone, memory: resident at rest after the rounds,
the peak under 64 clients uploading 10 MiB documents for 10 s (most answered 503 by the memory
budget), and resident 3 s after they stop.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dedup import MATURE, Server, clean_up, database, dev_cluster, write_histories  # noqa: E402
from histories import SIZES  # noqa: E402


def minor_faults(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def resident_mib(pid):
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {name: int(fields[key].split()[0]) / 1024 for name, key in (("now", "VmRSS"), ("peak", "VmHWM"))}


def measured(server, **load):
    before = minor_faults(server.process.pid)
    result = server.load("upload", 8, load.pop("seconds"), **load)
    uploads = max(round(result["ok_per_second"] * result["seconds"]), 1)
    return {"rate": result["ok_per_second"], "cpu": result["cpu_ms_per_request"],
            "faults": (minor_faults(server.process.pid) - before) / uploads}


def memory(server):
    server.load("upload", 1, 1, accounts=1)
    idle = resident_mib(server.process.pid)["now"]
    with open(f"/proc/{server.process.pid}/clear_refs", "w") as out:
        out.write("5")  # resets the peak
    server.load("upload", 64, 10, size=10 * 1024 * 1024, accounts=1, shed_ok=True)
    peak = resident_mib(server.process.pid)["peak"]
    time.sleep(3)
    return {"idle": idle, "peak": peak, "after": resident_mib(server.process.pid)["now"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a", help="a build's binary (the change)")
    parser.add_argument("b", help="the other build's binary (the baseline)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--history-bytes", type=int, default=SIZES["1 MiB"],
                        help="the size the histories grow to (bench/histories.py's final document)")
    parser.add_argument("--users", type=int, default=8, help="users of histories per round (8 clients)")
    args = parser.parse_args()
    folder, dev, base_url = dev_cluster("two")
    try:
        servers = {}
        for name in ("a", "b"):
            servers[name] = Server(getattr(args, name), database(base_url, f"build_{name}"))
            servers[name].load("upload", 8, 5, accounts=50)  # plans made on empty tables scan them
        histories = os.path.join(folder, "histories")
        write_histories(histories, args.history_bytes, args.users * args.rounds)
        rounds = []
        for number in range(args.rounds):
            mine = os.path.join(folder, f"round-{number}")
            os.makedirs(mine)
            for user in sorted(os.listdir(histories))[number * args.users:(number + 1) * args.users]:
                os.symlink(os.path.join(histories, user), os.path.join(mine, user))
            order = ["a", "b"] if number % 2 == 0 else ["b", "a"]
            rounds.append({
                "history": {who: measured(servers[who], seconds=args.seconds, histories=mine, mature=MATURE - 1)
                            for who in order},
                "64k": {who: measured(servers[who], seconds=args.seconds, accounts=50) for who in order},
            })
            print(f"round {number + 1} of {args.rounds} done", file=sys.stderr)
        memories = {who: memory(server) for who, server in servers.items()}
    finally:
        clean_up(dev, folder)
    print(report(rounds, memories))


def report(rounds, memories):
    lines = ["| case | a /s | b /s | a / b (median of rounds) | server CPU ms per upload a; b | "
             "PostgreSQL a; b | server page faults per upload a; b |", "|---|---|---|---|---|---|---|"]
    for case in rounds[0]:
        def median(who, pick):
            return statistics.median(pick(r[case][who]) for r in rounds)

        ratio = statistics.median(r[case]["a"]["rate"] / r[case]["b"]["rate"] for r in rounds)
        cells = [f"{median(w, lambda s: s['rate']):.0f}" for w in "ab"]
        cells.append(f"{ratio:.2f}x")
        for pick in (lambda s: s["cpu"]["server"], lambda s: s["cpu"]["postgres"], lambda s: s["faults"]):
            cells.append(f"{median('a', pick):.2f}; {median('b', pick):.2f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "| server RSS MiB | a | b |", "|---|---|---|"]
    for key, label in (("idle", "resting, after the rounds"), ("peak", "peak, 64 x 10 MiB uploads"),
                       ("after", "3 s after them")):
        lines.append(f"| {label} | {memories['a'][key]:.1f} | {memories['b'][key]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
