"""``legacy-msi serve``: the legacy endpoint as a local service, with tokens from a real source.

What it is for: software written against the extension (Node ms-rest-azure, msrestazure,
Java and Go SDKs of that era, scripts that curl ``localhost:50342``) keeps working on a VM
that has IMDS but no extension, or on a developer's machine signed in with ``az``. It is
a service, not a test tool: it shares the protocol's rules with the emulator
(:mod:`legacy_msi_credential._server`) and nothing else.

* Tokens come from azure-identity (the ``serve`` extra): ``imds`` (default,
  ``ManagedIdentityCredential`` with the requested identity passed on), ``cli``
  (``AzureCliCredential``, the signed-in account) or ``default`` (azure-identity's chain).
  One request to the source per identity and resource however many clients ask; cached
  with the credentials' refresh rule; at most 4 source requests at once and 15 a second
  (IMDS allows 5 and 20 per VM), the excess waiting up to 2 s, then ``429``.
* A token is served for a user-assigned identity only when its claims name that identity,
  and a system-assigned request never gets a signed-in user's token (except from ``cli``).
* As a local service: loopback only; browser-proof (a loopback ``Host`` is required, and
  ``Origin``, ``Sec-Fetch-Site``, ``-Dest`` and ``-User`` are refused, on every path); requests relayed by a proxy
  refused; a whole-request deadline; bounded connections, body, headers and cache; never a
  token in a log. On stop it stops accepting, answers what is in flight (``503`` if the
  source has not answered within the grace period) and returns.
* Its serving loop never waits on a log handler or on systemd: while it runs, its loggers
  write from a thread of their own through a bounded queue (:mod:`._log`), and
  notifications are sent without waiting; what could not be written is dropped, counted
  and said.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from types import TracebackType
from typing import Any, Callable, Optional

from .._constants import DEFAULT_PORT, SERVE_HINT
from .._loopback import is_loopback_host
from .._server._binding import Listeners
from .._server._heap import fix_mmap_threshold
from .._server._legacy import Listening, Policy
from .._server._limits import DEFAULT_LIMITS, ServerLimits

try:
    from ._app import SERVER_NAME, BridgeApp, Connections, Serving, handler_factory
except ImportError as missing:  # pragma: no cover - aiohttp is in the serve extra
    raise ImportError(f"legacy-msi serve runs on aiohttp: {SERVE_HINT}") from missing
from ._log import BRIDGE_LOGGERS, OFF_LOOP
from ._notify import Notifier
from ._source import SOURCES, TokenSource

__all__ = [
    "SERVER_NAME",
    "SOURCES",
    "UNIT_LIMITS",
    "Bridge",
    "Notifier",
    "ServerLimits",
    "Serving",
    "TokenSource",
]

_LOGGER = logging.getLogger("legacy_msi_credential.bridge")

#: The systemd unit's limits: ``packaging/legacy-msi-serve.service`` carries these numbers
#: and ``tests/test_bridge_service.py`` compares them.
UNIT_LIMITS = DEFAULT_LIMITS.unit_limits()


def descriptor_cap(wanted: int, reserve: int = DEFAULT_LIMITS.descriptor_reserve) -> int:
    """Raise the soft descriptor limit to the hard one; the connections it leaves room for.

    At ``accept()`` past the descriptor limit, asyncio stops accepting for a second and logs
    every attempt: every client, not only the ones holding connections, would be refused.
    Keeping the connections ``reserve`` below the limit is what prevents it; a unit that
    gives fewer descriptors than ``wanted + reserve`` gets fewer connections, and a warning
    naming ``LimitNOFILE=``.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: no such limit to keep
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted + reserve) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:  # a sandbox may forbid it: the limit stays as it is
            _LOGGER.debug("could not raise the descriptor limit to %d: %s", target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - reserve)
    if room < wanted:
        _LOGGER.warning(
            "%d connections at most, not %d: %d descriptors allowed (LimitNOFILE=%d or more lifts it)",
            max(room, 1),
            wanted,
            soft,
            wanted + reserve,
        )
    return max(room, 1)


def _deepen_queue(server: asyncio.AbstractServer, length: int) -> None:
    """The kernel's queue of connections to accept, ``length`` (``accept_queue``) long.

    asyncio takes one number for the queue's length and for how many it accepts in one pass
    (``accept_batch``); listening again on the same socket sets the queue alone.
    """
    assert isinstance(server, asyncio.Server)  # what loop.create_server makes
    for listening in server.sockets:
        with listening.dup() as same:
            same.listen(length)


class _AcceptReports:
    """The serving loop's exception handler: ``accept()`` out of descriptors is reported once
    every ``interval`` seconds (``accept_report_interval``) with a count, not once an attempt.

    asyncio reports each failed ``accept()``, and tries up to its batch again each second on
    each listening socket: thousands of log lines a second. The reserve of descriptors is
    the defence; this keeps a limit set too low from flooding the journal.
    """

    def __init__(self, interval: float = DEFAULT_LIMITS.accept_report_interval) -> None:
        self._interval = interval
        self._last = float("-inf")
        self._missed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        now = loop.time()
        if now - self._last < self._interval:
            self._missed += 1
            return
        _LOGGER.warning(
            "cannot accept connections: %s (%d more times since the last report); raise LimitNOFILE=",
            context.get("exception"),
            self._missed,
        )
        self._last, self._missed = now, 0


class Bridge(Listening):
    """The legacy endpoint on loopback, serving tokens from a :class:`TokenSource`.

    Args:
        host: Address to bind (default ``127.0.0.1``, and ``::1`` on the same port where the
            host has IPv6); a name is served on every address it resolves to, ``::`` on every
            address of both families. Loopback only unless ``allow_remote``.
        port: Port to bind (default 50342; 0 for a free one).
        source: A :class:`TokenSource`, or its kind (``imds``, ``cli``, ``default``).
        allow_remote: Bind an address that is not loopback. Requests that do not come over
            loopback are still refused, as the extension refused them, the health path included.
        limits: The server's bounds.
        clock: Unix time, for ``expires_in``.
        notifier: systemd's notification socket: the serving loop answers its watchdog
            (readiness is the caller's to send, once it is ready).
        serving: The protocol served: the legacy one by default (``legacy-msi adapt`` serves
            today's on the same shell).
        listeners: Sockets already listening (systemd's socket activation,
            :func:`~legacy_msi_credential._server._activation.inherited_listeners`), served instead of
            binding ``host`` and ``port``; the URLs name their IPv4 address where they have one.

    Raises:
        ValueError: A host that is not loopback without ``allow_remote``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        source: Any = "imds",
        allow_remote: bool = False,
        limits: ServerLimits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
        notifier: Optional[Notifier] = None,
        serving: Optional[Serving] = None,
        listeners: Optional[Listeners] = None,
    ) -> None:
        if listeners is not None:
            addresses = [sock.getsockname()[0] for sock in listeners.sockets]
            host = next((address for address in addresses if ":" not in address), addresses[0])
            port = listeners.port
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(f"refusing to serve on {host!r}: not a loopback address; pass allow_remote=True")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 to 65535, not {port!r}")
        self._host = host
        self._requested_port = port
        self._listeners = listeners
        self._allow_remote = allow_remote
        self.limits = limits
        self.clock = clock
        self.source = source if isinstance(source, TokenSource) else TokenSource(source, limits=limits, clock=clock)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._servers: list[asyncio.AbstractServer] = []
        self._stopped = threading.Event()
        self._stopped.set()
        self._port = 0
        self._app: Optional[BridgeApp] = None
        self.notifier = notifier or Notifier(None)
        self.serving = serving or Serving()
        self._pinging: Optional[asyncio.Task[None]] = None
        self._dropped_before = 0

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> Bridge:
        """Bind (:meth:`_bind`, which says what it raises) and serve from a background thread. Returns ``self``."""
        if self._loop is not None:
            raise RuntimeError("the bridge is already running")
        fix_mmap_threshold(self.limits.mmap_threshold)  # process-wide: a server's process is the server's
        # Sockets passed in are served once: stopping closes them.
        listeners, self._listeners = self._listeners, None
        listeners = listeners or self._bind(ipv6_loopback=self._host == "127.0.0.1", backlog=self.limits.accept_queue)
        OFF_LOOP.hold(*BRIDGE_LOGGERS)
        self._dropped_before = OFF_LOOP.dropped
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="legacy-msi-bridge", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(listeners), loop).result()
        except BaseException:
            listeners.close()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
            OFF_LOOP.release(*BRIDGE_LOGGERS)
            raise
        self._loop, self._thread = loop, thread
        self._stopped.clear()
        _LOGGER.info(
            "%s listening on %s, tokens from the %s source", self.serving.server_name, self.endpoint, self.source.kind
        )
        return self

    async def _listen(self, listeners: Listeners) -> None:
        limits = self.limits
        self._stopping = asyncio.Event()
        self._connections = Connections(limits, descriptor_cap(limits.max_connections, limits.descriptor_reserve))
        policy = Policy(accept_get=True, serves_imds=False, refuse_forwarded=True, browser_proof=True)
        self._app = BridgeApp(
            self.source,
            policy,
            clock=self.clock,
            limits=limits,
            connections=self._connections,
            stopping=self._stopping,
            serving=self.serving,
        )
        self._factory = handler_factory(self._app, self._connections, limits)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_AcceptReports(limits.accept_report_interval))
        servers: list[asyncio.AbstractServer] = []
        try:
            for sock in listeners.sockets:  # bound already, every one on the same port
                # asyncio accepts up to ``backlog`` connections a pass: accept_batch; the
                # kernel's queue is made accept_queue long again below.
                servers.append(await loop.create_server(self._factory, sock=sock, backlog=limits.accept_batch))
        except BaseException:
            for server in servers:
                server.close()
            raise
        self._servers = servers
        self._port = listeners.port
        for listening in self._servers:
            _deepen_queue(listening, limits.accept_queue)
        interval = self.notifier.ping_interval
        if interval:
            self._pinging = asyncio.ensure_future(self._ping(interval))

    async def _ping(self, interval: float) -> None:
        """systemd's watchdog, answered from the serving loop: a wedged loop stops answering."""
        while True:
            self.notifier.ping()
            await asyncio.sleep(interval)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop accepting, answer what is in flight within ``grace`` seconds (``503`` if the
        source has not answered by then), close every connection and return."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        grace = self.limits.stop_grace if grace is None else grace
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 5)
        except Exception:  # a shutdown that could not finish still ends below
            _LOGGER.warning("the bridge did not stop cleanly", exc_info=True)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            if not loop.is_running():
                loop.close()
            self._stopped.set()
            _LOGGER.info("Bridge stopped")
            OFF_LOOP.release(*BRIDGE_LOGGERS)  # what is queued is written first
            # ... and where another holder (the CLI) keeps the queue, room is made for the
            # lines below first: a full queue would drop the very line that says lines were dropped.
            OFF_LOOP.flush()
            dropped = OFF_LOOP.dropped - self._dropped_before
            if dropped:
                _LOGGER.warning("%d log lines were dropped: their handlers did not keep up", dropped)
            if self.notifier.dropped:
                _LOGGER.warning("%d notifications to systemd were dropped: its socket was full", self.notifier.dropped)

    async def _shutdown(self, grace: float) -> None:
        self.notifier.stopping()
        if self._pinging is not None:
            self._pinging.cancel()
        for server in self._servers:
            server.close()  # no new connections
        limits = self.limits
        await self._while_busy(grace)
        self._stopping.set()  # the clients still waiting for the source get 503 now
        await self._while_busy(limits.stop_drain)
        await self._factory.server.shutdown(limits.stop_close)  # type: ignore[attr-defined]
        self._connections.close_all()
        self.source.close()

    async def _while_busy(self, seconds: float) -> None:
        """Wait while a request is being answered, ``seconds`` at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._connections.busy() and loop.time() < deadline:
            await asyncio.sleep(self.limits.stop_poll)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until :meth:`stop` has run (from a signal handler, say); whether it has."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        self.stop()

    # --- where it is ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if not self._port:
            raise RuntimeError("the bridge is not running")
        return self._port

    def health(self) -> dict[str, Any]:
        """What the health path answers."""
        if self._app is None:
            raise RuntimeError("the bridge is not running")
        return self._app.health()

    @property
    def connections(self) -> Connections:
        """The open connections and their counters."""
        return self._connections


def __dir__() -> list[str]:
    # The public names and the module's own, not those it imports for its own use.
    return sorted({name for name in globals() if name.startswith("_")} | set(__all__))
