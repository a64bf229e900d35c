"""A TCP proxy that adds round-trip latency, not a bandwidth cap (stdlib asyncio only).

fake-gcs-server answers on 127.0.0.1 in well under a millisecond; real GCS from a VM in
the bucket's region takes 20-50 ms a request. ``tc netem`` is not available here, so this
proxy sits between a client and the emulator instead: every chunk read (up to 256 KiB) is
stamped with its arrival time and written to the other side at arrival + delay/2, each
direction with its own queue and one timer, never a sleep per chunk in series. A request
and its response thus cost ``delay`` more, and a streamed body is shifted, not slowed. A
new connection also waits one round trip before its first byte goes upstream (the TCP
handshake; TLS is not modelled).

From Python (the loop runs in a thread)::

    with latency_proxy("127.0.0.1", 4443, 0.020) as (host, port):
        ...  # STORAGE_EMULATOR_HOST=f"http://{host}:{port}"

By hand: ``python benchmarks/latency_proxy.py --target 127.0.0.1:4443 --delay-ms 20``
prints ``listening on 127.0.0.1:PORT``, then its traffic and CPU when stopped (Ctrl-C or
SIGTERM). :func:`proxy_process` runs that command as a child process (so its CPU can be
read apart from the caller's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

WINDOW = 32 << 20
"""Bytes a direction may hold in its delay queue before it stops reading its source: at
20 ms that is 3 GB/s, far above what the emulator serves, so no cap in practice."""


@dataclass
class Stats:
    """What the proxy forwarded so far."""

    connections: int = 0
    upstream_bytes: int = 0
    """Client to target (requests, uploads)."""
    downstream_bytes: int = 0
    """Target to client (responses, downloads)."""


_EOF, _CLOSE = b"", None
"""Queue markers: the source half-closed (pass the FIN on) or went away (close the peer)."""


class _Pipe(asyncio.Protocol):
    """One side of a proxied connection: reads its socket and delays what it read on the
    way to the other side's socket (``peer``, set once the target is connected)."""

    def __init__(self, link: _Link, upstream: bool) -> None:
        self.link = link
        self.upstream = upstream  # the client's side: what it reads goes to the target
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (due, data or marker)
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.peer_full = False  # the peer's socket buffer is full: wait for it to drain
        self.reading_paused = False
        self.got_eof = self.sent_eof = self.lost = False

    # -- this side's socket --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.link.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        if self.upstream:
            self.link.stats.upstream_bytes += len(data)
        else:
            self.link.stats.downstream_bytes += len(data)
        self.queued += len(data)
        self._push(data)
        self._throttle()

    def eof_received(self) -> bool:
        self.got_eof = True
        self._push(_EOF)
        if self.sent_eof and self.transport is not None:
            self.transport.close()  # both directions finished
        return True  # keep this side open for what the peer still sends

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.transport is not None:
            self.link.transports.discard(self.transport)
        self._push(_CLOSE)

    def _push(self, item: bytes | None) -> None:
        """Queue ``item`` for the peer at now + delay/2 (upstream: not before the
        handshake's round trip is over)."""
        now = self.link.loop.time()
        if self.upstream:
            now = max(now, self.link.handshake_done)
        self.queue.append((now + self.link.half, item))
        self._arm()

    # -- the peer's socket ---------------------------------------------------------------
    def _arm(self) -> None:
        """One timer, for the head of the queue (none while the peer is not connected or
        its buffer is full)."""
        if self.timer is None and self.queue and self.peer is not None \
                and not self.peer_full:
            self.timer = self.link.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        peer = self.peer
        assert peer is not None and peer.transport is not None
        out = peer.transport
        now = self.link.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.peer_full:
            _, item = self.queue.popleft()
            if item is _CLOSE:
                out.close()  # after what it still buffers
                self.queue.clear()
            elif item == _EOF:
                if not out.is_closing():
                    out.write_eof()
                peer.sent_eof = True
                if peer.got_eof:
                    out.close()
            else:
                assert item is not None
                self.queued -= len(item)
                if not out.is_closing():
                    out.write(item)  # may call pause_writing (peer_full) right away
        self._throttle()
        self._arm()

    def _throttle(self) -> None:
        """Read this side only while the peer takes data and the queue is under WINDOW."""
        pause = self.peer_full or self.queued > WINDOW
        if self.transport is None or self.lost or pause == self.reading_paused:
            return
        self.reading_paused = pause
        if pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # asyncio calls these on the protocol whose transport's write buffer filled or
    # drained: the side feeding that transport (the peer) waits or goes on.
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.peer_full = True
            self.peer._throttle()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.peer_full = False
            self.peer._throttle()
            self.peer._arm()


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.loop = proxy.loop
        self.stats = proxy.stats
        self.transports = proxy.transports
        self.half = proxy.delay / 2
        self.handshake_done = self.loop.time() + proxy.delay
        self.client = _Pipe(self, upstream=True)
        self.target = _Pipe(self, upstream=False)
        self.stats.connections += 1
        self.task = self.loop.create_task(self._connect(proxy.target_host, proxy.target_port))

    async def _connect(self, host: str, port: int) -> None:
        try:
            await self.loop.create_connection(lambda: self.target, host, port)
        except OSError:
            if self.client.transport is not None:
                self.client.transport.abort()
            return
        self.client.peer, self.target.peer = self.target, self.client
        self.client._arm()
        self.target._arm()


class LatencyProxy:
    """The proxy, its event loop in a daemon thread: :meth:`start`, :meth:`stop`."""

    def __init__(self, target_host: str, target_port: int, delay_s: float,
                 listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        if delay_s < 0:
            raise ValueError("the delay must be >= 0")
        self.target_host, self.target_port, self.delay = target_host, target_port, delay_s
        self.listen_host, self.listen_port = listen_host, listen_port
        self.stats = Stats()
        self.transports: set[asyncio.Transport] = set()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    async def _listen(self) -> tuple[str, int]:
        self._server = await self.loop.create_server(
            lambda: _Link(self).client, self.listen_host, self.listen_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self.transports):
            transport.abort()

    def start(self) -> tuple[str, int]:
        """Listen (on a free port unless one was given); the address to connect to."""
        self._thread = threading.Thread(target=self.loop.run_forever, name="latency-proxy",
                                        daemon=True)
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    def stop(self) -> None:
        """Stop listening, drop the open connections, end the thread."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._thread = None
        self.loop.close()


@contextlib.contextmanager
def latency_proxy(target_host: str, target_port: int, delay_s: float
                  ) -> Iterator[tuple[str, int]]:
    """A proxy to ``target_host:target_port`` adding ``delay_s`` a round trip, in a thread;
    yields the (host, port) it listens on."""
    proxy = LatencyProxy(target_host, target_port, delay_s)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


@dataclass(frozen=True)
class ProxyProcess:
    """A proxy run as a child process (its CPU then reads apart from the caller's)."""

    host: str
    port: int
    pid: int


@contextlib.contextmanager
def proxy_process(target_host: str, target_port: int, delay_s: float,
                  log: Path | None = None) -> Iterator[ProxyProcess]:
    """This file's command line in a child process; on exit it is stopped (SIGTERM) and
    its summary (traffic, CPU) goes to ``log`` when given."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--target",
           f"{target_host}:{target_port}", "--delay-ms", repr(delay_s * 1000)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the latency proxy did not start: {line!r}")
        host, _, port = line.removeprefix("listening on ").strip().rpartition(":")
        yield ProxyProcess(host, int(port), proc.pid)
    finally:
        proc.terminate()
        try:
            rest, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        if log is not None:
            log.write_text(rest)


def _summary(proxy: LatencyProxy) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    moved = proxy.stats.upstream_bytes + proxy.stats.downstream_bytes
    return json.dumps({**asdict(proxy.stats), "cpu_s": round(cpu, 3),
                       "cpu_s_per_gb": round(cpu / (moved / 1e9), 2) if moved else None})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="where to forward")
    p.add_argument("--delay-ms", type=float, required=True, help="added round-trip time")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = LatencyProxy(host, int(port), args.delay_ms / 1000, listen_port=args.port)
    address = proxy.start()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    proxy.stop()
    print(_summary(proxy), flush=True)
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise SystemExit(main())
