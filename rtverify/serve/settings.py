"""What ``rtverify serve`` allows, each limit a named setting with its unit."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """How the server listens and what it allows one client."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires a token."""
    port: int = 8765
    """TCP port for WebSocket and HTTP both (0: any free port)."""
    token: str | None = None
    """Bearer token every request must carry (None: no token; loopback only)."""
    max_streams: int = 256
    """Concurrent ``/v1/listen`` streams; one more is refused (close 1013)."""
    max_message_bytes: int = 1 << 20
    """Largest binary or text message on a stream (bytes)."""
    max_stream_s: float = 4 * 3600.0
    """Longest stream (seconds of audio at 16 kHz); beyond it the stream is closed (1008)."""
    idle_timeout_s: float = 30.0
    """A stream that sends nothing for this long is closed (seconds); one that reads nothing of
    what the server sends it for this long is dropped."""
    request_timeout_s: float = 10.0
    """A connection must send a whole request head (an HTTP request or the WebSocket handshake)
    within this long of opening, or of its previous answer, or it is closed (seconds): idle and
    half-open connections would otherwise hold the server's connection slots for ever."""
    min_body_bytes_per_s: float = 8192.0
    """An HTTP request body must arrive at least this fast on average, counted from
    ``request_timeout_s`` after its head (bytes per second), or it is answered 408 and its
    connection closed: a body dripped a byte at a time would otherwise hold an upload slot for
    ever. A slow upload that keeps the average is not cut off (N bytes at an even pace have
    ``request_timeout_s + N / min_body_bytes_per_s`` seconds)."""
    max_body_s: float = 300.0
    """Longest an HTTP request body may take to arrive, whatever its rate, counted from the end
    of its head (seconds); longer, it is answered 408 and its connection closed. The average
    rate alone let an upload at ``max_upload_bytes`` (32 MiB) dripped at exactly
    ``min_body_bytes_per_s`` hold one of the ``max_concurrent_uploads`` slots for over an hour.
    300 s lets a minute of 16 kHz 16-bit WAV (1.9 MB) through even at the minimum rate (about
    240 s), and a body at the 32 MiB cap needs about 112 kB/s (0.9 Mbit/s, a slow uplink)."""
    max_messages_per_s: float = 500.0
    """Sustained message rate allowed on one stream (messages per second)."""
    message_burst: int = 2000
    """Messages allowed above the sustained rate in a burst."""
    max_buffered_s: float = 10.0
    """Audio received but not yet processed before the server stops reading the stream
    (seconds at the stream's rate; back-pressure, not an error)."""
    max_upload_bytes: int = 32 << 20
    """Largest HTTP request body (enrolment or verify upload, bytes)."""
    max_uploads: int = 10
    """Recordings in one enrolment request."""
    max_concurrent_uploads: int = 8
    """HTTP uploads (enrolments, verifies) being received or processed at once; one more is
    answered 503 (each is held in memory whole, up to ``max_upload_bytes``)."""
    max_upload_s: float = 600.0
    """Longest uploaded recording (seconds of audio): a small compressed file can hold hours,
    which decoded whole would take gigabytes; a longer one is refused (413)."""
    workers: int = 0
    """Worker processes (or threads) for the streams' CPU work; 0: one per core available."""
    worker_kind: str = "process"
    """``process`` (uses every core) or ``thread`` (one process; the GIL limits it to about
    one core)."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, how long open streams get to receive their decisions and summary (seconds)."""

    @property
    def worker_count(self) -> int:
        if self.workers > 0:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
