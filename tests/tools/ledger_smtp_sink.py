"""A real SMTP server on loopback for the scheduler tests: stores each message it accepts.

Usage: ledger_smtp_sink.py DIR [--port N] [--delay SECONDS] [--gate] [--hold-reply]

Listens on 127.0.0.1 (a free port, or N to come back on the same port after a stop), prints
the port on its first line of stdout, and writes each accepted message to DIR/<n>.eml
atomically (temporary file, then rename) before answering 250, after waiting --delay seconds
(a slow server, to catch a client in mid-send). With --gate, the k-th DATA (from 0) is held
until the test allows it: the sink creates DIR/.held-k when it arrives and answers it once
DIR/.release-k exists, so a test knows for certain that a send is in flight. With --hold-reply,
each message is stored (as above) and its 250 is never sent: once DIR/<n>.eml exists, the client
certainly has a mail the server took and has not heard so, the window a crash can double a mail
in. Runs until killed.
"""

import argparse
import asyncio
import os
import signal
import socket
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Store:
    def __init__(self, directory, delay, gate, hold_reply=False):
        self.directory = directory
        self.hold_reply = hold_reply
        self.delay = delay
        self.gate = gate
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.gate:
            with self.lock:
                n = self.count
                self.count += 1
            open(os.path.join(self.directory, ".held-%d" % n), "w").close()
            release = os.path.join(self.directory, ".release-%d" % n)
            while not os.path.exists(release):
                await asyncio.sleep(0.02)
        if self.delay:
            print("DATA received, replying in %s s" % self.delay, file=sys.stderr, flush=True)
            await asyncio.sleep(self.delay)
        with self.lock:
            name = "%d-%d" % (time.time_ns(), os.getpid())
            tmp = os.path.join(self.directory, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(envelope.original_content or envelope.content)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.directory, name + ".eml"))
        if self.hold_reply:
            await asyncio.Event().wait()  # for ever: the test kills the client, then this sink
        return "250 2.0.0 stored as " + name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0)
    parser.add_argument("--gate", action="store_true")
    parser.add_argument("--hold-reply", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = args.port or free_port()
    controller = Controller(Store(args.dir, args.delay, args.gate, args.hold_reply), hostname="127.0.0.1", port=port)
    # A restart on the same port can race the old socket's TIME_WAIT: try for a while.
    deadline = time.monotonic() + 30
    while True:
        try:
            controller.start()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
