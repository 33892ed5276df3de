"""A fast, minimal SMTP sink for benchmarks: accepts everything, keeps nothing.

Run: python benchmarks/sink.py PORT   (prints 'ready' when listening on 127.0.0.1;
on SIGTERM prints how many messages it accepted). Loopback only.
"""

from __future__ import annotations

import asyncio
import signal
import sys

END = b"\r\n.\r\n"


class Sink(asyncio.Protocol):
    accepted = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = bytearray()
        self.in_data = False
        self.scan_from = 0
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.in_data:
                end = self.buffer.find(END, max(self.scan_from - 4, 0))
                if end < 0:
                    self.scan_from = len(self.buffer)
                    return
                del self.buffer[: end + len(END)]
                self.in_data = False
                self.scan_from = 0
                Sink.accepted += 1
                self.transport.write(b"250 2.0.0 accepted\r\n")
                continue
            eol = self.buffer.find(b"\r\n")
            if eol < 0:
                return
            line = bytes(self.buffer[:eol]).upper()
            del self.buffer[: eol + 2]
            self.command(line)

    def command(self, line: bytes) -> None:
        verb = line[:4]
        if verb == b"EHLO":
            self.transport.write(b"250-sink\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 0\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.transport.write(b"354 go ahead\r\n")
        elif verb == b"QUIT":
            self.transport.write(b"221 bye\r\n")
            self.transport.close()
        elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            self.transport.write(b"250 ok\r\n")
        else:
            self.transport.write(b"502 not implemented\r\n")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(Sink.accepted, flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
