#!/usr/bin/env python3
"""Times `convenor serve` from exec to READY (sd_notify over NOTIFY_SOCKET) and to the first 200.

Used by bench/run.sh. Each run starts the daemon pinned to --cpus (CPU 1, or 0,1 for both) with
a NOTIFY_SOCKET datagram socket of our own, waits for READY=1 (in select(), so the waiting takes
no CPU the daemon could use) and for a 200 on the feed, tried every --poll-ms (2 ms) until one
comes, then stops it with SIGTERM. The script itself is not pinned: with the daemon on both
CPUs, its tries share them. "cold" runs get an empty state directory (the ledger is created and
the plan written), removed after the run; "warm" runs reuse the state of the previous run, as a
restart does. Before each start the page cache is synced (outside the timing): otherwise a run's
fsync waits behind the write-back of the files the previous run left, which a real start would
not meet, and the figures depend on how fast the runs follow each other.
Only 127.0.0.1 is contacted.
"""
import argparse
import select
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def once(args, state_dir, port):
    sock_dir = tempfile.mkdtemp(prefix="convenor-notify-")
    path = os.path.join(sock_dir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=path, STATE_DIRECTORY=state_dir)
    cpus = {int(c) for c in args.cpus.split(",")}
    start = time.monotonic()
    proc = subprocess.Popen(
        [args.binary, "--config", args.config, "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(state_dir, "..", f"startup-{port}.log"), "ab"),
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    ready = first_200 = None
    deadline = start + args.timeout
    next_try = start
    try:
        while time.monotonic() < deadline and (ready is None or first_200 is None):
            if proc.poll() is not None:
                raise SystemExit(f"startup: convenor exited with {proc.returncode}")
            # Wait for READY in select(), not in a sleep: it is timed as it arrives, and the
            # waiting takes no CPU from the daemon (which may share this one).
            wait = max(0.0, next_try - time.monotonic()) if first_200 is None else 0.05
            readable, _, _ = select.select([sock] if ready is None else [], [], [], wait)
            if readable:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    data = b""
                if b"READY=1" in data.split(b"\n"):
                    ready = time.monotonic() - start
            if first_200 is None and (time.monotonic() >= next_try or ready is not None):
                next_try = time.monotonic() + args.poll_ms / 1000
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", args.path)
                    if conn.getresponse().status == 200:
                        first_200 = time.monotonic() - start
                    conn.close()
                except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException):
                    pass
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
        os.unlink(path)
        os.rmdir(sock_dir)
    return ready, first_200


def summary(label, values):
    values = [v for v in values if v is not None]
    if not values:
        return f"{label}: none"
    ms = sorted(v * 1000 for v in values)
    return f"{label} median {statistics.median(ms):.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--work", required=True, help="a scratch directory")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/calendar.ics")
    p.add_argument("--cpus", default="1", help="the CPUs to run it on, as 0,1 (default: 1)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--cold-only", action="store_true", help="time first starts only")
    p.add_argument(
        "--poll-ms",
        type=float,
        default=2.0,
        help="how often to try the feed until the first 200 (its resolution; default 2 ms)",
    )
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    for kind in ("cold",) if args.cold_only else ("cold", "warm"):
        readies, firsts = [], []
        state = None
        for i in range(args.runs):
            if kind == "cold" or state is None:
                state = tempfile.mkdtemp(prefix=f"state-{args.label}-", dir=args.work)
            if kind == "warm" and i == 0:
                once(args, state, args.port)  # creates the ledger; not counted
            os.sync()
            ready, first = once(args, state, args.port)
            readies.append(ready)
            firsts.append(first)
            if kind == "cold":
                shutil.rmtree(state)
        print(
            f"startup {args.label:>14} {kind}: {summary('READY', readies)}; "
            f"{summary('first 200', firsts)}",
            flush=True,
        )
        if all(r is None for r in readies):
            print(f"startup {args.label:>14} {kind}: no READY=1 arrived on NOTIFY_SOCKET")


if __name__ == "__main__":
    sys.exit(main())
