"""Every bound of a token server of this package, written once. Standard library only.

:class:`ServerLimits` is one frozen record: the server reads it, the systemd unit's limits
are computed from it (:meth:`ServerLimits.unit_limits`, compared with
``packaging/legacy-msi-serve.service`` and ``packaging/legacy-msi-adapt.service`` by the
tests), and docs/bridge.md's table of limits is :func:`limits_table` of its defaults and
:data:`SHOWN_BY` (a test compares that too). Each field carries its unit and why it is
what it is.
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
    """The bounds of ``legacy-msi serve`` and ``legacy-msi adapt`` (one server core): their
    connections, requests, stop and token source.

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
    source_concurrency: int = _limit(
        4,
        "requests",
        "to the source at once: IMDS allows 5 a VM; the last free one is kept for a user holding none, "
        "so one user alone has 3",
    )
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

_SERVICE = "tests/test_bridge_service.py::"
_BRIDGE = "tests/test_bridge.py::"
_BENCH = "benchmarks/bridge.py "

#: What shows each bound holding, for docs/bridge.md's table: a test (``file::name``) or a
#: section of ``benchmarks/bridge.py`` (its printed name in quotes). A test checks that each
#: field has an entry and that each entry names a test or a section that exists.
SHOWN_BY: dict[str, tuple[str, ...]] = {
    "client_timeout": (_SERVICE + "test_the_deadline_is_for_the_whole_request_not_each_read",),
    "max_connections": (
        _SERVICE + "test_a_slow_but_timely_client_outlasts_a_flood_of_silent_connections",
        _BENCH + '"Churn"',
    ),
    "max_body": (
        _SERVICE + "test_oversized_bodies_and_header_floods_are_refused_unread",
        _BENCH + '"Bodies"',
    ),
    "max_headers": (_BRIDGE + "test_too_many_headers_are_refused",),
    "max_head": (
        _SERVICE + "test_a_head_one_line_past_max_head_is_refused_at_once_and_one_within_it_served",
        _BENCH + '"Heads"',
    ),
    "max_pending": (
        _SERVICE + "test_bodies_still_arriving_count_in_the_pending_budget_and_the_largest_gives_way",
        _BENCH + '"Heads"',
        _BENCH + '"Bodies"',
    ),
    "parser_line": (_SERVICE + "test_incomplete_heads_are_bounded_each_and_all_together",),
    "mmap_threshold": (_SERVICE + "test_a_started_bridge_keeps_large_buffers_out_of_its_heap", _BENCH + '"Bodies"'),
    "lingering": (_SERVICE + "test_oversized_bodies_and_header_floods_are_refused_unread",),
    "descriptor_reserve": (_SERVICE + "test_out_of_descriptors_other_clients_are_answered_and_the_log_stays_quiet",),
    "accept_batch": (_SERVICE + "test_out_of_descriptors_other_clients_are_answered_and_the_log_stays_quiet",),
    "accept_queue": (_BENCH + '"Churn"',),
    "accept_report_interval": (
        _SERVICE + "test_accept_failures_are_reported_once_an_interval_with_a_count_and_other_errors_as_asyncio_would",
    ),
    "memory_max": (_BENCH + '"Memory"', _BENCH + '"Heads"', _BENCH + '"Bodies"'),
    "stop_grace": (_SERVICE + "test_stop_answers_what_is_in_flight_with_503_when_the_source_hangs",),
    "stopping_retry_after": (_SERVICE + "test_stop_answers_what_is_in_flight_with_503_when_the_source_hangs",),
    "stop_drain": (_SERVICE + "test_sigterm_with_a_hung_source_exits_within_10_s_and_removes_the_settings_file",),
    "stop_poll": (_SERVICE + "test_sigterm_with_a_hung_source_exits_within_10_s_and_removes_the_settings_file",),
    "stop_close": (_SERVICE + "test_sigterm_with_a_hung_source_exits_within_10_s_and_removes_the_settings_file",),
    "source_timeout": (_BRIDGE + "test_an_unreachable_source_is_500_unknown_never_a_hang",),
    "source_concurrency": (
        _SERVICE + "test_source_calls_are_capped_and_the_excess_gets_429_with_retry_after",
        _BENCH + '"Two local users"',
    ),
    "source_rate": (
        _SERVICE + "test_source_calls_are_capped_and_the_excess_gets_429_with_retry_after",
        _BENCH + '"Two local users"',
    ),
    "source_queue_wait": (
        _SERVICE + "test_source_calls_are_capped_and_the_excess_gets_429_with_retry_after",
        _BENCH + '"Two local users"',
    ),
    "max_tokens": (_SERVICE + "test_ten_thousand_identities_leave_a_bounded_cache", _BENCH + '"Two local users"'),
}


def _figure(value: Any, unit: str) -> str:
    if unit == "bytes" and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    if unit == "bytes" and value >= KIB and value % KIB == 0:
        return f"{value // KIB} KiB"
    number = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return f"{number} {unit}"


def limits_table(limits: ServerLimits = DEFAULT_LIMITS) -> str:
    """docs/bridge.md's table of limits: each field, its value with its unit, why, and what shows it."""
    rows = ["| limit | value | why, and what happens at it | shown by |", "| --- | --- | --- | --- |"]
    for item in fields(limits):
        value = getattr(limits, item.name)
        shown = "; ".join(f"`{reference}`" for reference in SHOWN_BY.get(item.name, ()))
        rows.append(f"| `{item.name}` | {_figure(value, item.metadata['unit'])} | {item.metadata['why']} | {shown} |")
    return "\n".join(rows) + "\n"
