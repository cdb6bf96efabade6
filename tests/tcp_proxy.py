"""A TCP proxy the tests can cut and restore: a server 'going down' for one client only.

The broker seen by the test process, or the database seen by the worker, goes through
one of these; `cut()` refuses new connections and drops the open ones, as a server that
went away would, without stopping the real server other processes share.
"""

import contextlib
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listener = None
        self._connections = set()
        self._lock = threading.Lock()
        self.port = listen_port
        self.restore()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    @property
    def is_cut(self) -> bool:
        return self._listener.fileno() == -1

    def ensure_up(self) -> None:
        """Restore, if cut."""
        if self.is_cut:
            self.restore()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        with contextlib.suppress(OSError):
            # shutdown first: on Linux a close() alone leaves a thread blocked in accept()
            # accepting on the old socket.
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            with contextlib.suppress(OSError):
                # Linger 0: close with a reset, as a crashed server's kernel would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            _hang_up(sock)

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _hang_up(sock)
            with self._lock:
                self._connections -= {source, sink}


def _hang_up(sock):
    """shutdown, then close: a close() alone leaves a socket open while another thread is
    blocked in recv() on it (the other direction's pump), so the server never learns that
    its client is gone (PostgreSQL would keep a killed worker's transaction, and its locks,
    open for good)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
