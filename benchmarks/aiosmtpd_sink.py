"""An aiosmtpd server that accepts and discards every message (run as its own process).

Usage: ``python -m benchmarks.aiosmtpd_sink --port PORT``. It listens on
127.0.0.1 until SIGTERM or SIGINT. It runs in a process of its own so that
its CPU time never counts as the client's. aiosmtpd does not advertise
PIPELINING, so pipelining clients fall back to lock-step against it: it is a
reference point, not a throughput target.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from . import LOOPBACK

#: Large enough for the 10 MB attachment workload once base64-encoded.
DATA_SIZE_LIMIT = 64 * 1024 * 1024


class DiscardHandler:
    """Accepts every message and keeps nothing."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Answer 250 to the end of data and drop the content."""
        return "250 2.0.0 OK discarded"


async def serve(port: int) -> None:
    """Serve on ``127.0.0.1:port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()

    def factory() -> Any:
        return SMTP(
            handler,
            hostname="aiosmtpd-sink",
            data_size_limit=DATA_SIZE_LIMIT,
            loop=loop,
        )

    server = await loop.create_server(factory, LOOPBACK, port, backlog=1000)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
