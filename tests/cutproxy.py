"""A TCP proxy on 127.0.0.1 in front of a real server that cuts its first message short, in
one of the two ways that leave a message uncertain (RFC 1047):

- ``"reply"``: the server gets the whole message and queues it; its reply to the final
  dot is dropped with the connection.
- ``"dot"``: the client writes the whole message, but its end (``CRLF . CRLF``) never
  reaches the server: the connection is cut just before it, so the server throws the
  message away.

Every later connection is passed through untouched.
"""

from __future__ import annotations

import selectors
import socket
import threading

END = b"\r\n.\r\n"


class CutProxy:
    def __init__(self, upstream_port: int, mode: str) -> None:
        assert mode in ("reply", "dot")
        self.upstream_port, self.mode = upstream_port, mode
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closing = False

    def __enter__(self) -> CutProxy:
        accepting = threading.Thread(target=self._accept, daemon=True)
        accepting.start()
        self._threads.append(accepting)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()
        for sock in list(self._sockets):
            _close(sock)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            pipe = threading.Thread(target=self._pipe, args=(client, server), daemon=True)
            pipe.start()
            self._threads.append(pipe)

    def _pipe(self, client: socket.socket, server: socket.socket) -> None:
        """Pass bytes both ways, cutting the first message as ``mode`` says."""
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ)
        sel.register(server, selectors.EVENT_READ)
        held = b""  # from the client: what may be the start of END, until more comes
        try:
            while True:
                events = sel.select(timeout=0.05)
                if not events and held:  # nothing more came: it was not END
                    server.sendall(held)
                    held = b""
                for key, _ in events:
                    data = key.fileobj.recv(1 << 16)
                    if not data:
                        return
                    if key.fileobj is client:
                        data, held = held + data, b""
                        if self.mode == "dot" and not self.cut.is_set():
                            end = data.find(END)
                            if end >= 0:
                                server.sendall(data[: end + 2])  # all but the final '.' line
                                self.cut.set()
                                return
                            held = next((data[-n:] for n in (4, 3, 2, 1) if data.endswith(END[:n])), b"")
                            data = data[: len(data) - len(held)]
                        server.sendall(data)
                    else:
                        if self.mode == "reply" and not self.cut.is_set() and b" queued as " in data:
                            self.cut.set()  # the server has it; the client never hears so
                            return
                        client.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            _close(client)
            _close(server)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
