"""A fast, minimal SMTP sink for benchmarks: accepts everything, keeps nothing.

Run: python benchmarks/sink.py PORT   (prints 'ready' when listening on 127.0.0.1;
on SIGTERM prints how many messages it accepted). Loopback only.

It reads into one reused buffer per connection (asyncio.BufferedProtocol) and scans a
message for its final '.' line where it lies, without collecting it. The first version
let asyncio allocate a fresh 256 KiB object per read and appended each read to a growing
buffer: the page faults that cost made the sink's kernel time, and so the baseline,
swing 4x from one round to the next.
"""

from __future__ import annotations

import asyncio
import signal
import sys

END = b"\r\n.\r\n"


class Sink(asyncio.BufferedProtocol):
    accepted = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.raw = bytearray(1 << 18)
        self.view = memoryview(self.raw)
        self.line = bytearray()  # a command line split across reads
        self.in_data = False
        self.tail = b""  # the last bytes of the message so far: an END split across reads
        transport.write(b"220 sink ESMTP\r\n")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        raw, pos = self.raw, 0
        while pos < nbytes:
            if self.in_data:
                pos = self._scan_data(pos, nbytes)
                continue
            if self.line.endswith(b"\r") and raw[pos] == 0x0A:  # CR LF split across reads
                line, pos = bytes(self.line[:-1]), pos + 1
            else:
                eol = raw.find(b"\r\n", pos, nbytes)
                if eol < 0:
                    self.line += self.view[pos:nbytes]
                    return
                line, pos = bytes(self.line + self.view[pos:eol]), eol + 2
            self.line.clear()
            self.command(line.upper())

    def _scan_data(self, pos: int, nbytes: int) -> int:
        """Look for the message's end from *pos*; return where the next command starts."""
        raw = self.raw
        if self.tail:  # an END that began in the previous read
            probe = self.tail + raw[pos : min(pos + len(END) - 1, nbytes)]
            found = probe.find(END)
            if 0 <= found < len(self.tail):
                return self._end_of_message(pos + found + len(END) - len(self.tail))
        found = raw.find(END, pos, nbytes)
        if found >= 0:
            return self._end_of_message(found + len(END))
        keep = len(END) - 1
        if nbytes - pos >= keep:
            self.tail = bytes(raw[nbytes - keep : nbytes])
        else:
            self.tail = (self.tail + raw[pos:nbytes])[-keep:]
        return nbytes

    def _end_of_message(self, pos: int) -> int:
        self.in_data, self.tail = False, b""
        Sink.accepted += 1
        self.transport.write(b"250 2.0.0 accepted\r\n")
        return pos

    def command(self, line: bytes) -> None:
        verb = line[:4]
        if verb == b"EHLO":
            self.transport.write(b"250-sink\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 0\r\n")
        elif verb == b"DATA":
            self.in_data, self.tail = True, b"\r\n"  # a message of no lines ends with '.' at once
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
