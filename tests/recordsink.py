"""A fast SMTP sink in its own process that records when each RCPT arrived.

Run: python tests/recordsink.py OUT_FILE (prints the port when listening on
127.0.0.1; on SIGTERM writes 'monotonic-time address' lines to OUT_FILE and exits).
Its own process, so its clock readings are not delayed by the test's threads.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

END = b"\r\n.\r\n"
RECORDS: list[tuple[float, str]] = []


class Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = bytearray()
        self.in_data = False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(END)
                if end < 0:
                    return
                del self.buffer[: end + len(END)]
                self.in_data = False
                self.transport.write(b"250 accepted\r\n")
                continue
            eol = self.buffer.find(b"\r\n")
            if eol < 0:
                return
            line = bytes(self.buffer[:eol])
            del self.buffer[: eol + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"RCPT":
                RECORDS.append((time.monotonic(), line[8:].strip(b"<> ").decode().lower()))
                self.transport.write(b"250 ok\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
            else:
                self.transport.write(b"250 ok\r\n")


async def main(out: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    with open(out, "w") as f:
        f.writelines(f"{t!r} {a}\n" for t, a in RECORDS)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
