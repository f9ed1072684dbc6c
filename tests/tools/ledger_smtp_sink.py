"""A real SMTP server on loopback for the scheduler tests: stores each message it accepts.

Usage: ledger_smtp_sink.py DIR [--port N] [--delay SECONDS]

Listens on 127.0.0.1 (a free port, or N to come back on the same port after a stop), prints
the port on its first line of stdout, and writes each accepted message to DIR/<n>.eml
atomically (temporary file, then rename) before answering 250, after waiting --delay seconds
(a slow server, to catch a client in mid-send). Runs until killed.
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
    def __init__(self, directory, delay):
        self.directory = directory
        self.delay = delay
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
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
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    port = args.port or free_port()
    controller = Controller(Store(args.dir, args.delay), hostname="127.0.0.1", port=port)
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
