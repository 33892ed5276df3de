"""aiosmtpd as the receiving server, for the benchmark's comparison figure (loopback only)."""

from __future__ import annotations

import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Count:
    accepted = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        Count.accepted += 1
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    controller.stop()
    print(Count.accepted, flush=True)
