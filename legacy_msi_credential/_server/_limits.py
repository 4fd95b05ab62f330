"""Every bound of a token server of this package, written once. Standard library only.

:class:`ServerLimits` is one frozen record: the server reads it, the systemd unit's limits
are computed from it (:meth:`ServerLimits.unit_limits`, compared with
``packaging/legacy-msi-serve.service`` by the tests), and docs/bridge.md's table of limits
is :func:`limits_table` of its defaults (a test compares that too). Each field carries its
unit and why it is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

KIB = 1024
MIB = 1024 * 1024


def _limit(default: Any, unit: str, why: str) -> Any:
    return field(default=default, metadata={"unit": unit, "why": why})


@dataclass(frozen=True)
class ServerLimits:
    """The bounds of ``legacy-msi serve``: its connections, requests, stop and token source.

    The defaults are the documented ones; a test may lower any of them.
    """

    # --- connections and requests ---
    client_timeout: float = _limit(
        10.0, "s", "a connection has this long to deliver a whole request (head and body), however it trickles"
    )
    max_connections: int = _limit(
        1024,
        "connections",
        "kept at once (fewer if the descriptor limit cannot make room); beyond, the one that has sent nothing "
        "for longest is closed",
    )
    max_body: int = _limit(64 * KIB, "bytes", "of a request body (413 beyond): a token request is a few hundred")
    max_headers: int = _limit(100, "headers", "of a request (431 beyond)")
    max_head: int = _limit(
        32 * KIB, "bytes", "of one request head, request line included (431 beyond): a token request's is under 1 KiB"
    )
    max_pending: int = _limit(
        8 * MIB,
        "bytes",
        "of incomplete requests (heads, and bodies not yet wholly received), all connections together: past it, "
        "the one holding the most is closed; each byte held costs the parser about two, so this and "
        "max_connections stay well inside memory_max",
    )
    parser_line: int = _limit(
        8190, "bytes", "aiohttp's own limit on a request line or a header field (its default), within max_head"
    )
    mmap_threshold: int = _limit(
        64 * KIB,
        "bytes",
        "blocks this large or larger are mapped apart from the heap (glibc's mallopt, fixed at start), so that "
        "asyncio's 256 KiB read buffers cannot fragment it flood after flood",
    )
    lingering: float = _limit(
        0.5, "s", "aiohttp reads what a client still sends after an answer that closes, so that it sees the answer"
    )
    # --- accepting ---
    descriptor_reserve: int = _limit(
        256,
        "descriptors",
        "kept free of connections: standard streams, listening sockets, the event loop's, log and notification "
        "sockets, the source's connections, and those accepted in one pass before the ones they displace close",
    )
    accept_batch: int = _limit(
        16, "connections", "asyncio accepts at a time from each listening socket: part of descriptor_reserve"
    )
    accept_queue: int = _limit(
        1024, "connections", "the kernel keeps waiting on each listening socket, so that a burst waits there"
    )
    accept_report_interval: float = _limit(10.0, "s", "between two reports of accept() out of descriptors")
    memory_max: int = _limit(
        128 * MIB,
        "bytes",
        "the systemd unit allows (MemoryMax=): about 40 MiB at rest, about 62 MiB with every connection holding "
        "a maximal head, 85 MiB with each trickling a maximal body (benchmarks/bridge.py)",
    )
    # --- stopping ---
    stop_grace: float = _limit(5.0, "s", "to answer what is in flight on stop before 503")
    stopping_retry_after: int = _limit(5, "s", "the Retry-After of that 503, as long as stop_grace")
    stop_drain: float = _limit(1.0, "s", "after those 503s, for their answers to go out before connections close")
    stop_poll: float = _limit(0.02, "s", "between two looks at whether a request is still being answered on stop")
    stop_close: float = _limit(0.5, "s", "aiohttp's own shutdown is given, once no request is being answered")
    # --- the token source ---
    source_timeout: float = _limit(20.0, "s", "a source request may take before the client gets 500 unknown")
    source_concurrency: int = _limit(4, "requests", "to the source at once: IMDS allows 5 a VM")
    source_rate: float = _limit(15.0, "requests a second", "started at the source: IMDS allows 20 a VM")
    source_queue_wait: float = _limit(2.0, "s", "a client waits for the source's gate before 429 with Retry-After")
    max_tokens: int = _limit(
        1000,
        "tokens",
        "kept (identity x resource), shared fairly between local users; a token is a few KiB, so a few MiB",
    )

    def unit_limits(self) -> dict[str, int]:
        """The systemd unit's limits: descriptors for every connection and the reserve, and memory."""
        return {"LimitNOFILE": self.max_connections + self.descriptor_reserve, "MemoryMax": self.memory_max}


#: The documented bounds.
DEFAULT_LIMITS = ServerLimits()


def _figure(value: Any, unit: str) -> str:
    if unit == "bytes" and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    if unit == "bytes" and value >= KIB and value % KIB == 0:
        return f"{value // KIB} KiB"
    number = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return f"{number} {unit}"


def limits_table(limits: ServerLimits = DEFAULT_LIMITS) -> str:
    """docs/bridge.md's table of limits: each field, its value with its unit, and why."""
    rows = ["| limit | value | why |", "| --- | --- | --- |"]
    for item in fields(limits):
        value = getattr(limits, item.name)
        rows.append(f"| `{item.name}` | {_figure(value, item.metadata['unit'])} | {item.metadata['why']} |")
    return "\n".join(rows) + "\n"
