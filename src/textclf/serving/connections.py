"""Clients that hold the server without using it: bounded, timed out, and quiet in the log.

uvicorn closes a keep-alive connection 5 s after its last answer, but a connection that
never completes a request (it sends nothing, or its headers a byte at a time) stays open
for ever, and so does a request whose body never ends: enough of them use up the file
descriptors, and health checks and `/predict` time out. `ConnectionGuard` closes them:

- at most `max_connections` open connections (`--max-connections`); one more is answered
  503 and closed at once, before it costs more than a moment's descriptor;
- a connection must complete a request's headers within `request_timeout` seconds
  (`--request-timeout`) of opening or of its last answer, else it is closed;
- a request's body must arrive within `request_timeout` seconds of its headers, else 408;
  a body over `max_body_bytes` (`--max-body-mb`) is refused with 413 before it is read
  whole: at once when its Content-Length says so, as soon as it passes the limit when it
  is chunked (`body_limits`);
- when the server stops (SIGTERM, or a worker retired by a rolling restart), a connection
  with no request in flight is not closed at once, as uvicorn does: a client that has just
  connected, or sent its next request on a kept-alive connection, may have its request on
  the way, and closing would leave it with no answer at all. It gets `drain_seconds` for
  that request, which is answered with `connection: close`; then it is closed.

How: uvicorn takes the class of its HTTP protocol as a setting (`uvicorn.Config(http=...)`);
`protocol_class` wraps its h11 protocol in one that counts connections and arms a timer,
and the ASGI middleware `track_requests` tells it when a request is being answered (a
connection waiting for its answer is not idle). A connection is known by its peer address,
the ASGI scope's `client`: unique among the open connections of one listening socket.

When descriptors run out anyway (another process's, a low `ulimit -n`), asyncio logs
"socket.accept() out of system resource" with a traceback on every retry; `quiet_accept_errors`
says it once a minute with a count instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Optional

from textclf.serving.protocol import ServeError

log = logging.getLogger("textclf.serve")
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
           b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
REFUSAL_BODY = b'{"error": "too many open connections (--max-connections); try again"}'
# How long an idle connection stays open once the server stops, for a request already on
# its way (module docstring); it counts against --grace-seconds, which is at least 1 s.
DRAIN_SECONDS = 1.0


class ConnectionGuard:
    """The open connections of one server and the rules they live by (module docstring)."""

    def __init__(self, max_connections: int, request_timeout: float,
                 drain_seconds: float = DRAIN_SECONDS):
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.drain_seconds = drain_seconds
        self.stopping = False  # the server has begun to stop (a connection was drained)
        self.open: dict[tuple, "_Connection"] = {}
        self.refused = 0     # connections answered 503 for being one too many
        self.timed_out = 0   # connections closed for not completing a request in time

    def protocol_class(self, inner: type) -> type:
        """An asyncio protocol class for `uvicorn.Config(http=...)`: `inner` (uvicorn's own
        HTTP protocol class), guarded."""
        guard = self

        class Draining(inner):
            """uvicorn's protocol, whose `shutdown` (the server calls it when it stops)
            goes through the connection's `drain`; `uvicorn_shutdown` is uvicorn's own."""
            connection: "_Connection"

            def shutdown(self) -> None:
                self.connection.drain()

            def uvicorn_shutdown(self) -> None:
                super().shutdown()

        class Guarded(_Connection):
            def __init__(self, **kwargs):
                protocol = Draining(**kwargs)
                super().__init__(guard, protocol, kwargs.get("_loop"))
                protocol.connection = self

        return Guarded

    def connection(self, scope: dict) -> Optional["_Connection"]:
        client = scope.get("client")
        return self.open.get(tuple(client)) if client else None


class _Connection(asyncio.Protocol):
    """One client connection: uvicorn's protocol object, with a deadline around it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol, loop):
        self.guard = guard
        self.inner = inner
        self.loop = loop or asyncio.get_event_loop()
        self.busy = 0                    # requests of this connection being answered
        self.idle_since = time.monotonic()
        self.peer: Optional[tuple] = None
        self.transport: Optional[asyncio.Transport] = None
        self.timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.guard.open) >= self.guard.max_connections:
            self.guard.refused += 1
            transport.write(REFUSAL % (len(REFUSAL_BODY), REFUSAL_BODY))
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        self.peer = tuple(peer[:2]) if isinstance(peer, tuple) else (peer, id(self))
        self.guard.open[self.peer] = self
        self.timer = self.loop.call_later(self.guard.request_timeout, self._check)
        self.inner.connection_made(transport)
        if self.guard.stopping:
            # Accepted as the server stopped, after it had told its connections so: it
            # would otherwise be served as usual until --grace-seconds ran out.
            self.drain()

    def _check(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        waited = time.monotonic() - self.idle_since
        if not self.busy and waited >= self.guard.request_timeout:
            self.guard.timed_out += 1
            self.transport.close()
            return
        left = self.guard.request_timeout - (0 if self.busy else waited)
        self.timer = self.loop.call_later(max(left, 0.05), self._check)

    @property
    def draining(self) -> bool:
        """The server stops: answer, then close."""
        return self.guard.stopping

    def drain(self) -> None:
        """The server stops. uvicorn's own shutdown of this connection (`uvicorn_shutdown`)
        closes it now if idle, else after the answer in flight; an idle one is given
        `drain_seconds` first for a request on its way (module docstring)."""
        self.guard.stopping = True
        if self.busy or self.transport is None or self.transport.is_closing():
            self.inner.uvicorn_shutdown()
            return
        self.loop.call_later(self.guard.drain_seconds, self._close_drained)

    def _close_drained(self) -> None:
        if not self.transport.is_closing():   # not already closed after its answer
            self.inner.uvicorn_shutdown()

    def request_started(self) -> None:
        self.busy += 1

    def request_finished(self) -> None:
        self.busy -= 1
        self.idle_since = time.monotonic()

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.peer is None:          # refused: uvicorn never saw it
            return
        self.guard.open.pop(self.peer, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.peer is not None else None

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.inner.resume_writing()


def body_limits(app, guard: Optional[ConnectionGuard], max_body_bytes: int,
                request_timeout: float):
    """ASGI middleware: marks each request busy on its connection (`ConnectionGuard`), and
    refuses a body over `max_body_bytes` (413) or slower than `request_timeout` (408)."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > max_body_bytes:
            return await _refuse(send, 413, _too_large(declared, max_body_bytes))
        connection = guard.connection(scope) if guard is not None else None
        if connection is not None:
            connection.request_started()
            send = _closing_when_drained(send, connection)
        try:
            await app(scope, _limited(receive, max_body_bytes, request_timeout), send)
        finally:
            if connection is not None:
                connection.request_finished()

    return middleware


def _closing_when_drained(send, connection: _Connection):
    """`send`, adding `connection: close` to the answer when the server is stopping, so
    that the client opens its next connection to a server that stays."""

    async def closing_send(message):
        if message["type"] == "http.response.start" and connection.draining:
            headers = [(name, value) for name, value in message.get("headers", ())
                       if name.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing_send


def _limited(receive, max_body_bytes: int, request_timeout: float):
    deadline = time.monotonic() + request_timeout
    received = 0
    complete = False

    async def limited_receive():
        nonlocal received, complete
        if complete:
            return await receive()       # after the body: disconnect notices, no deadline
        try:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            raise ServeError(408, f"request body: not received within {request_timeout:g} s "
                                  f"(--request-timeout)") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body_bytes:
                raise ServeError(413, _too_large(received, max_body_bytes, "more than "))
            complete = not message.get("more_body", False)
        return message

    return limited_receive


def _content_length(scope) -> Optional[int]:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None   # uvicorn's parser refuses it before the app sees it
    return None


def _too_large(size: int, limit: int, prefix: str = "") -> str:
    return (f"request body: {prefix}{size:,} bytes, over the {limit:,} one request may hold "
            f"(--max-body-mb); split the request")


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every_s: float = 60.0) -> None:
    """Say "out of file descriptors" at most once per `every_s` seconds, with how many
    times it happened since, instead of a traceback a second (other errors: as before)."""
    last = {"said": -float("inf"), "since": 0}
    default = loop.get_exception_handler()

    def handler(loop, context):
        if "out of system resource" not in context.get("message", ""):
            if default is not None:
                return default(loop, context)
            return loop.default_exception_handler(context)
        last["since"] += 1
        now = time.monotonic()
        if now - last["said"] >= every_s:
            log.error("cannot accept connections: %s (%d times in the last %.0f s); lower "
                      "--max-connections or raise `ulimit -n`", context.get("exception"),
                      last["since"], min(now - last["said"], every_s))
            last["said"], last["since"] = now, 0

    loop.set_exception_handler(handler)
