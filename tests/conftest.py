"""Shared fixtures: event loops, TLS material, recording SMTP servers and scripted raw servers.

See tests/servers.py for the server classes. Every server runs in a thread of its own on
127.0.0.1 with a random free port and is stopped at teardown.

The core suites (client, pool, pipelining, misbehaving servers, bridge, aiosmtplib's own
tests) run on both event loops, asyncio's and uvloop's: each of their tests is
parametrised with the loop (``[asyncio]`` / ``[uvloop]`` in its id). Async tests get the
loop from pytest-asyncio's ``pytest_asyncio_loop_factories`` hook; sync tests (the bridge,
the subprocess running aiosmtplib's suite) take the ``loop_name`` fixture and pass it on.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import trustme

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra (not on Windows)
    uvloop = None  # type: ignore[assignment]

from tests.servers import (
    ScriptedServer,
    SMTPServer,
    server_context_for,
    start_smtpd,
)

# --------------------------------------------------------------------------- event loops

#: Test modules run on every loop of LOOPS; the others on asyncio's only.
CORE_MODULES = frozenset(
    {
        "test_bridge",
        "test_client",
        "test_client_logging",
        "test_client_tls",
        "test_misbehaving_servers",
        "test_pipelining",
        "test_pool",
        "test_transport",
        "test_upstream_aiosmtplib",
    }
)

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _loops() -> dict[str, LoopFactory]:
    """The loops the core suites run on.

    ``SMTP_BACKENDS_TEST_LOOPS=asyncio`` (comma-separated names) narrows the choice, e.g.
    to rerun one loop's failures. uvloop is in the dev extra; where it cannot be installed
    (Windows) the core runs on asyncio alone, and says so in the summary.
    """
    loops: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        loops["uvloop"] = uvloop.new_event_loop
    wanted = os.environ.get("SMTP_BACKENDS_TEST_LOOPS", "")
    if wanted:
        unknown = set(wanted.split(",")) - set(loops)
        if unknown:
            raise pytest.UsageError(f"SMTP_BACKENDS_TEST_LOOPS names unknown loops: {unknown}")
        loops = {name: loops[name] for name in wanted.split(",")}
    return loops


LOOPS = _loops()


def _is_core(node: Any) -> bool:
    module = getattr(node, "module", None)
    name = getattr(module, "__name__", "").rpartition(".")[2]
    return name in CORE_MODULES


def pytest_asyncio_loop_factories(config: pytest.Config, item: Any) -> Mapping[str, LoopFactory]:
    """The loops an async test runs on: every loop for the core suites."""
    if _is_core(item):
        return LOOPS
    return {"asyncio": asyncio.new_event_loop}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Sync core tests that take ``loop_name`` run once per loop."""
    if (
        "loop_name" in metafunc.fixturenames
        and _is_core(metafunc)
        and not inspect.iscoroutinefunction(metafunc.function)
    ):
        metafunc.parametrize("loop_name", list(LOOPS), indirect=True)


def pytest_report_header(config: pytest.Config) -> str:
    """Say which loops the core suites run on."""
    missing = "" if uvloop is not None else " (uvloop is not installed)"
    return f"smtp_backends core suites on: {', '.join(LOOPS)}{missing}"


@pytest.fixture
def loop_name(request: pytest.FixtureRequest) -> str:
    """The event loop this test runs on (``"asyncio"`` or ``"uvloop"``).

    An async test: the loop pytest-asyncio made for it. A sync core test: its
    parameter, for the code it starts (the bridge's loop, a subprocess) to use.
    """
    param = getattr(request, "param", None)
    if isinstance(param, str):
        return param
    callspec = getattr(request.node, "callspec", None)
    factory = callspec.params.get("_asyncio_loop_factory") if callspec is not None else None
    for name, candidate in LOOPS.items():
        if candidate is factory:
            return name
    return "asyncio"


# --------------------------------------------------------------------------- TLS material


class ClientCertPaths(NamedTuple):
    """PEM files of a client certificate issued by ``tls_ca``."""

    cert: Path
    key: Path
    #: Certificate and key in one file.
    combined: Path


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The test certificate authority trusted by ``client_tls_context``."""
    return trustme.CA()


@pytest.fixture(scope="session")
def _server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_tls_context(_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """Server context with a cert for "localhost" and "127.0.0.1" issued by ``tls_ca``."""
    return server_context_for(_server_cert)


@pytest.fixture
def client_tls_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Verifying client context (hostname checks on) that trusts ``tls_ca`` only."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def ca_bundle_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a PEM file holding the ``tls_ca`` certificate (for ``cert_bundle=``)."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def client_cert_paths(
    tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> ClientCertPaths:
    """A client certificate + key issued by ``tls_ca``, written to PEM files."""
    cert = tls_ca.issue_cert("client.example.com", common_name="smtp-backends test client")
    directory = tmp_path_factory.mktemp("client-cert")
    paths = ClientCertPaths(
        cert=directory / "client.pem",
        key=directory / "client.key",
        combined=directory / "client-combined.pem",
    )
    cert.cert_chain_pems[0].write_to_path(str(paths.cert))
    cert.private_key_pem.write_to_path(str(paths.key))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths.combined))
    return paths


@pytest.fixture
def client_cert_server_tls_context(
    _server_cert: trustme.LeafCert, tls_ca: trustme.CA
) -> ssl.SSLContext:
    """Server context like ``server_tls_context`` that requires a client certificate
    issued by ``tls_ca`` (use with ``client_cert_paths``)."""
    return server_context_for(_server_cert, ca=tls_ca, require_client_cert=True)


@pytest.fixture(scope="session")
def _untrusted_cert() -> trustme.LeafCert:
    return trustme.CA().issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def untrusted_server_tls_context(_untrusted_cert: trustme.LeafCert) -> ssl.SSLContext:
    """Server context whose certificate comes from a CA the client does not trust."""
    return server_context_for(_untrusted_cert)


@pytest.fixture(scope="session")
def _expired_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    now = datetime.datetime.now(datetime.timezone.utc)
    return tls_ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


@pytest.fixture
def expired_server_tls_context(_expired_cert: trustme.LeafCert) -> ssl.SSLContext:
    """Server context with an expired certificate from the trusted ``tls_ca``."""
    return server_context_for(_expired_cert)


@pytest.fixture(scope="session")
def _wrong_host_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("mail.example.org")


@pytest.fixture
def wrong_host_server_tls_context(_wrong_host_cert: trustme.LeafCert) -> ssl.SSLContext:
    """Server context with a trusted certificate for "mail.example.org" only (host name
    mismatch when the client connects to 127.0.0.1 / localhost)."""
    return server_context_for(_wrong_host_cert)


# --------------------------------------------------------------------------- SMTP servers


@pytest.fixture
def make_smtpd(
    server_tls_context: ssl.SSLContext,
) -> Iterator[Callable[..., SMTPServer]]:
    """Factory: ``make_smtpd(**options)`` starts a recording server (see
    ``tests.servers.start_smtpd`` for the options). ``tls_context`` defaults to
    ``server_tls_context`` when ``tls_mode`` is "starttls" or "implicit"."""
    servers: list[SMTPServer] = []

    def factory(**options: Any) -> SMTPServer:
        if options.get("tls_mode", "none") != "none":
            options.setdefault("tls_context", server_tls_context)
        server = start_smtpd(**options)
        servers.append(server)
        return server

    yield factory
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def smtpd(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """Plain SMTP server advertising PIPELINING, 8BITMIME, SMTPUTF8 and SIZE."""
    return make_smtpd()


@pytest.fixture
def smtpd_nopipelining(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """Plain SMTP server that does not advertise PIPELINING."""
    return make_smtpd(pipelining=False)


@pytest.fixture
def smtpd_starttls(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """Server advertising STARTTLS (cert from ``tls_ca``); AUTH advertised, and credentials
    accepted, only after TLS."""
    return make_smtpd(tls_mode="starttls", auth=True, auth_require_tls=True)


@pytest.fixture
def smtpd_tls(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """Implicit-TLS server (TLS from the first byte, cert from ``tls_ca``) with AUTH."""
    return make_smtpd(tls_mode="implicit", auth=True)


@pytest.fixture
def smtpd_auth(make_smtpd: Callable[..., SMTPServer]) -> SMTPServer:
    """Plain server with AUTH PLAIN, LOGIN, CRAM-MD5 and XOAUTH2 (user "alice", password
    "s3cret!", token "tok-123"); AUTH allowed without TLS since it is on loopback."""
    return make_smtpd(auth=True, auth_require_tls=False)


# --------------------------------------------------------------------------- scripted servers


@pytest.fixture
def make_scripted_server() -> Iterator[Callable[..., ScriptedServer]]:
    """Factory: ``make_scripted_server(handler_or_steps, *, ssl_context=None, strict=True)``
    returns a started :class:`tests.servers.ScriptedServer`. At teardown every server is
    stopped and, if ``strict``, a script mismatch fails the test."""
    servers: list[tuple[ScriptedServer, bool]] = []

    def factory(
        script: Any, *, ssl_context: ssl.SSLContext | None = None, strict: bool = True
    ) -> ScriptedServer:
        server = ScriptedServer(script, ssl_context=ssl_context)
        servers.append((server, strict))
        return server.start()

    yield factory
    for server, _strict in servers:
        server.stop()
    for server, strict in servers:
        if strict:
            server.check()


@pytest.fixture
def scripted_server(
    make_scripted_server: Callable[..., ScriptedServer],
) -> Callable[..., ScriptedServer]:
    """Alias of ``make_scripted_server``."""
    return make_scripted_server


# --------------------------------------------------------------------------- client sockets


@pytest.fixture
async def settle_client_sockets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Any]]:
    """At teardown, wait (up to 2 s) until every socket the client opened is closed.

    Closing a TLS connection is asynchronous (the close_notify exchange runs on the loop
    after ``quit()``/``close()`` return). If pytest-asyncio closes the loop first, the socket
    is never closed and its ResourceWarning fails whatever test happens to run the garbage
    collector later. This fixture only observes (it wraps ``SMTPTransport.connection_made``
    to note each socket) and gives the loop time to finish; it changes no behaviour.
    Yields the list of sockets seen (``asyncio`` TransportSocket objects).
    """
    import asyncio

    from smtp_backends.transport import SMTPTransport

    sockets: list[Any] = []
    original = SMTPTransport.connection_made

    def connection_made(self: SMTPTransport, transport: Any) -> None:
        original(self, transport)
        sockets.append(transport.get_extra_info("socket"))

    monkeypatch.setattr(SMTPTransport, "connection_made", connection_made)
    yield sockets
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0
    while any(sock is not None and sock.fileno() != -1 for sock in sockets):
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.005)
