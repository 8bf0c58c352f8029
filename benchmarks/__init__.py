"""Side-by-side benchmarks of smtp_backends against aiosmtplib, smtplib, Django and Flask-Mail.

Run them with ``bash benchmarks/run`` (or ``python -m benchmarks.run``); see
``benchmarks/README.md`` for what is measured and how to read the figures.

Modules:
    run: the orchestrator (servers, repetitions, medians, ratios, table, JSON, targets).
    servers: smtp-sink and aiosmtpd sink processes, free ports, readiness checks.
    aiosmtpd_sink: the aiosmtpd sink run as its own process.
    latency_proxy: a delaying TCP proxy that also counts round trips.
    client_worker: one function per client and workload, run in a fresh process.

Nothing here is part of the installed package or of the test suite.
"""

from __future__ import annotations

#: Every server, proxy and client in the benchmarks uses this address only.
LOOPBACK = "127.0.0.1"
