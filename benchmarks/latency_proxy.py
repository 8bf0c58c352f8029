"""A TCP proxy on loopback that delays every chunk and counts round trips.

Usage::

    python -m benchmarks.latency_proxy --listen-port L --control-port C \\
        --target-port T [--delay-ms 5]

Each chunk read from either side is written to the other side ``delay``
after it was read, in order (a FIFO per direction), so a reply to a request
arrives about two delays later: 5 ms each way gives a ~10 ms round trip.
This stands in for ``tc netem``, which this kernel lacks.

Round trips ("turns") are counted per connection: a chunk from the server
that follows client traffic (since the server last spoke) is one turn. The
greeting is not a turn (the client has not spoken yet); every reply group
the client waits for is. A lock-step SMTP client thus spends four turns per
message (MAIL, RCPT, DATA, end of data); a pipelining one spends one.

The control port answers one command per connection, one line each:
``PING`` -> ``PONG``; ``RESET`` -> ``OK`` (forget finished connections, zero
open ones); ``STATS`` -> a JSON object with the per-connection counters and
their totals. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import LOOPBACK

#: Bytes read per chunk.
CHUNK_SIZE = 256 * 1024
#: Chunks waiting per direction before the reader waits (back pressure).
MAX_QUEUED = 256
#: Longest control command line.
MAX_CONTROL_LINE = 256


@dataclass
class ConnectionStats:
    """Counters of one proxied connection."""

    number: int
    turns: int = 0
    client_chunks: int = 0
    client_bytes: int = 0
    server_chunks: int = 0
    server_bytes: int = 0
    closed: bool = False
    #: The client sent something the server has not answered yet.
    client_spoke: bool = field(default=False, repr=False)

    def on_client_chunk(self, size: int) -> None:
        """Record a chunk travelling from the client to the server."""
        self.client_chunks += 1
        self.client_bytes += size
        self.client_spoke = True

    def on_server_chunk(self, size: int) -> None:
        """Record a chunk travelling from the server to the client (maybe a turn)."""
        self.server_chunks += 1
        self.server_bytes += size
        if self.client_spoke:
            self.turns += 1
            self.client_spoke = False

    def reset(self) -> None:
        """Zero the counters (the connection stays open)."""
        self.turns = self.client_chunks = self.client_bytes = 0
        self.server_chunks = self.server_bytes = 0
        self.client_spoke = False


class LatencyProxy:
    """Forwards connections to ``target_port`` with ``delay`` seconds each way.

    Args:
        target_port: the server's port on 127.0.0.1.
        delay: seconds each chunk is held before it is forwarded.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.connections: dict[int, ConnectionStats] = {}
        self._numbers = itertools.count(1)

    async def handle_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        """Proxy one client connection until both directions have ended."""
        stats = ConnectionStats(next(self._numbers))
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(LOOPBACK, self.target_port), timeout=10.0
            )
        except (OSError, asyncio.TimeoutError):
            client_writer.close()
            return
        self.connections[stats.number] = stats
        try:
            await asyncio.gather(
                self._pipe(client_reader, server_writer, stats.on_client_chunk),
                self._pipe(server_reader, client_writer, stats.on_server_chunk),
            )
        finally:
            stats.closed = True
            for writer in (client_writer, server_writer):
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_chunk: Callable[[int], None],
    ) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` after it was read."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(MAX_QUEUED)

        async def forward() -> None:
            # Ends at the None that marks the reader's end of file. After a write
            # error it keeps taking chunks (and drops them) so the reader never blocks.
            failed = False
            while (item := await queue.get()) is not None:
                if failed:
                    continue
                due, data = item
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    writer.write(data)
                    await writer.drain()
                except OSError:  # ConnectionError included
                    failed = True
                    writer.close()
            if not failed and writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()

        forwarder = asyncio.create_task(forward())
        try:
            # Ends at end of file or a connection error (each read returns data or b"").
            while data := await reader.read(CHUNK_SIZE):
                on_chunk(len(data))
                await queue.put((loop.time() + self.delay, data))
        except OSError:
            pass
        finally:
            # Let the delayed chunks drain in order, then end the other side.
            await queue.put(None)
            await forwarder

    # Control -----------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Counters of every connection since the last reset, and their totals."""
        rows = [asdict(stats) for stats in self.connections.values()]
        for row in rows:
            del row["client_spoke"]
        return {
            "delay_ms": self.delay * 1000,
            "connections": rows,
            "turns": sum(stats.turns for stats in self.connections.values()),
            "open": sum(not stats.closed for stats in self.connections.values()),
        }

    def reset(self) -> None:
        """Forget finished connections; zero the counters of open ones."""
        for number, stats in list(self.connections.items()):
            if stats.closed:
                del self.connections[number]
            else:
                stats.reset()

    async def handle_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one control command (PING, RESET, STATS)."""
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10.0)
            command = line[:MAX_CONTROL_LINE].strip().upper()
            if command == b"PING":
                answer = b"PONG\n"
            elif command == b"RESET":
                self.reset()
                answer = b"OK\n"
            elif command == b"STATS":
                answer = json.dumps(self.stats()).encode() + b"\n"
            else:
                answer = b"ERR unknown command\n"
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


async def serve(listen_port: int, control_port: int, target_port: int, delay: float) -> None:
    """Run the proxy and its control port until SIGTERM or SIGINT."""
    proxy = LatencyProxy(target_port, delay)
    loop = asyncio.get_running_loop()
    data_server = await asyncio.start_server(
        proxy.handle_client, LOOPBACK, listen_port, backlog=1000
    )
    control_server = await asyncio.start_server(proxy.handle_control, LOOPBACK, control_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with data_server, control_server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the proxy."""
    parser = argparse.ArgumentParser(description="Delaying TCP proxy that counts round trips.")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=5.0, help="one-way delay (default 5)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen_port, args.control_port, args.target_port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
