"""An S3-compatible server on 127.0.0.1 for the remote-storage tests: moto, in this process.

Unlike moto's ThreadedMotoServer it can be stopped in the middle of an upload: `stop()`
closes the listening socket *and* every open connection (the client keeps HTTP/1.1
connections alive, so closing only the listener would let a running `dvc push` carry on),
and `start()` again serves the same port with the same buckets and objects, because
moto keeps its state in this process.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading

from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                           create_backend_app)
from werkzeug.serving import ThreadedWSGIServer

HOST = "127.0.0.1"


class _QuietHandler(MotoRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request would bury a failing test's output


class _TrackedServer(ThreadedWSGIServer):
    """A threaded WSGI server that remembers its open connections, to cut them on stop."""

    def __init__(self, port: int, app) -> None:
        super().__init__(HOST, port, app, handler=_QuietHandler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            try:
                # Like a server process that dies: wake the handler (FIN), and make the close
                # that follows abortive (RST), or a client still sending a large body into a
                # full receive window would wait for ever.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class UploadGate:
    """WSGI middleware: lets `allowed` object uploads through, then holds every later one.

    `wait_until_holding()` returns once exactly `allowed` uploads have been stored and
    another is waiting, so a test can stop the server at a known point of a push.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.allowed: int | None = None  # None: no gate, every request goes through
        self.admitted = 0
        self.stored = 0
        self.release = threading.Event()
        self.changed = threading.Condition()
        self.holding = 0

    def close_after(self, allowed: int) -> None:
        with self.changed:
            self.allowed, self.admitted, self.stored, self.holding = allowed, 0, 0, 0
            self.release.clear()

    def open(self) -> None:
        with self.changed:
            self.allowed = None
            self.release.set()
            self.changed.notify_all()

    def wait_until_holding(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: self.holding > 0 and self.stored == self.allowed, timeout=timeout)

    @staticmethod
    def _is_object_upload(environ) -> bool:
        # Path-style request (the endpoint is an IP address): PUT /bucket/key
        bucket_and_key = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)
        return environ["REQUEST_METHOD"] == "PUT" and len(bucket_and_key) == 2 \
            and bool(bucket_and_key[1])

    def __call__(self, environ, start_response):
        if not self._is_object_upload(environ):
            return self.app(environ, start_response)
        with self.changed:
            gated = self.allowed is not None
            hold = gated and self.admitted >= self.allowed
            if hold:
                self.holding += 1
                self.changed.notify_all()
            elif gated:
                self.admitted += 1
        if hold:
            # Wait for the test to stop the server; by then this connection is cut,
            # so whatever is answered here never reaches the client.
            self.release.wait(timeout=120)
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        body = b"".join(self.app(environ, start_response))  # stored once this returns
        if gated:
            with self.changed:
                self.stored += 1
                self.changed.notify_all()
        return [body]


class S3Server:
    """moto's S3 (and IAM, for test users) on 127.0.0.1; port 0 picks a free port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.gate = UploadGate(DomainDispatcherApplication(create_backend_app))
        self._server: _TrackedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._server = _TrackedServer(self.port, self.gate)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: refuse new connections and cut the open ones."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self.gate.open()
        self._thread.join(timeout=10)
        self._server = None

    def reset(self) -> None:
        """Forget every bucket, object and IAM user (moto's own reset endpoint)."""
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            connection.request("POST", "/moto-api/reset")
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"moto reset failed: HTTP {response.status}")
