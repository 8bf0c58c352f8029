"""The development inbox defends itself (issue 12): Host check, cross-site refusals, byte cap.

Requests go over real HTTP (http.client, so that every header is ours to set) to a
running DevServer; mail goes over real SMTP on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import smtplib
from collections.abc import Iterator

import pytest

from smtp_backends.devserver import DevServer, Mailbox, MessageTooLarge
from smtp_backends.devserver.guard import HostPolicy, cross_site_reason, host_name
from tests.test_devserver import make_message, send


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(smtp_port=0, http_port=0) as running:
        yield running


def request(
    server: DevServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one request with exactly these headers (Host included if given)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        headers = dict(headers or {})
        connection.putrequest(method, path, skip_host="Host" in headers)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def own_host(server: DevServer) -> str:
    return f"127.0.0.1:{server.http_port}"


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8025", "127.0.0.1.evil.example", "localhost.evil.example", ""],
)
def test_a_foreign_host_header_is_refused_everywhere(server: DevServer, host: str) -> None:
    send(server, make_message("Secret reset link"))
    server.wait_for(1)
    for method, path in (("GET", "/"), ("GET", "/api/messages"), ("GET", "/messages/1/raw")):
        status, body = request(server, method, path, {"Host": host})
        assert status == 403, (host, path)
        assert b"Secret" not in body
        assert b"--allowed-host" in body
    status, _ = request(server, "POST", "/clear", {"Host": host}, b"")
    assert status == 403
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "LOCALHOST:8025", "app.localhost", "[::1]:8025", "127.0.0.2"],
)
def test_loopback_names_are_answered(server: DevServer, host: str) -> None:
    status, body = request(server, "GET", "/api/messages", {"Host": host})
    assert (status, body) == (200, b"[]")


def test_added_names_and_the_configured_host_are_answered() -> None:
    with DevServer(smtp_port=0, http_port=0, allowed_hosts=["inbox.test", "10.1.2.3"]) as server:
        for host in ("inbox.test", "Inbox.Test.:80", "10.1.2.3:8025", "localhost"):
            assert request(server, "GET", "/", {"Host": host})[0] == 200, host
        assert request(server, "GET", "/", {"Host": "other.test"})[0] == 403
    with DevServer(smtp_port=0, http_port=0, allowed_hosts=["*"]) as server:
        assert request(server, "GET", "/", {"Host": "anything.example"})[0] == 200
    with pytest.raises(ValueError, match="not a host name"):
        DevServer(allowed_hosts=["bad/name"])


def test_host_policy_rules() -> None:
    policy = HostPolicy("mail.dev.test", ["extra.test"])
    assert policy.allows("mail.dev.test:8025")
    assert policy.allows("extra.test")
    assert policy.allows(None)  # HTTP/1.0 without Host: not a browser
    assert not policy.allows("mail.dev.test.evil.example")
    assert not policy.allows("a b")
    assert not policy.allows("[::1")
    assert not policy.allows("[::1]x")
    assert not policy.allows("[nonsense]")
    assert not policy.allows("host:port")
    assert not policy.allows("user@localhost")
    # A wildcard bind address names no host.
    assert HostPolicy("0.0.0.0").names == HostPolicy("127.0.0.1").names
    assert HostPolicy("::").names == HostPolicy("127.0.0.1").names
    assert HostPolicy("::1").allows("[::1]:1")
    assert host_name("[::1]:8025") == "::1"
    assert host_name("Example.ORG.") == "example.org"
    assert host_name("") is None


# --------------------------------------------------------------------------- cross-site


def test_cross_site_posts_and_deletes_are_refused(server: DevServer) -> None:
    send(server, make_message("Keep me"))
    server.wait_for(1)
    host = own_host(server)
    for headers in (
        {"Host": host, "Origin": "http://evil.example"},
        {"Host": host, "Origin": "null"},
        {"Host": host, "Origin": f"https://{host}"},
        {"Host": host, "Origin": "http://127.0.0.1:1"},
        {"Host": host, "Sec-Fetch-Site": "cross-site"},
        {"Host": host, "Sec-Fetch-Site": "same-site"},
        {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "cross-site"},
    ):
        for method, path in (
            ("POST", "/clear"),
            ("DELETE", "/api/messages"),
            ("PUT", "/api/chaos"),
            ("DELETE", "/api/chaos"),
            ("POST", "/messages/1/link-check"),
            ("POST", "/api/messages/1/link-check"),
            ("POST", "/messages/1/release"),
            ("POST", "/api/messages/1/release"),
        ):
            status, body = request(server, method, path, headers, b'{"rules": []}')
            assert status == 403, (headers, method, path)
            assert b"cross-site request refused" in body
    assert [message.subject for message in server.messages] == ["Keep me"]


def test_same_origin_and_non_browser_requests_may_change_things(server: DevServer) -> None:
    host = own_host(server)
    for headers in (
        {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
        {"Host": host, "Sec-Fetch-Site": "none"},
        {"Host": host},  # curl, urllib, test code
    ):
        send(server, make_message("Clear me"))
        server.wait_for(1)
        assert request(server, "DELETE", "/api/messages", headers)[0] == 204
        assert server.messages == []
        send(server, make_message("Clear me too"))
        server.wait_for(1)
        assert request(server, "POST", "/clear", headers, b"")[0] == 303
        assert server.messages == []


def test_reads_from_elsewhere_are_not_state_changes() -> None:
    # A cross-site GET changes nothing, so it is not refused (the browser will not let
    # the other site read the answer: there are no CORS headers).
    assert cross_site_reason("GET", {"Origin": "http://evil.example"}, "127.0.0.1") == ""
    assert cross_site_reason("HEAD", {"Sec-Fetch-Site": "cross-site"}, "127.0.0.1") == ""
    assert "Origin" in cross_site_reason("PATCH", {"Origin": "http://x"}, "127.0.0.1")


# --------------------------------------------------------------------------- byte cap


def _raw(size: int, subject: str) -> bytes:
    """A message of exactly ``size`` bytes, in lines of at most 78 characters."""
    head = f"From: a@example.org\r\nSubject: {subject}\r\n\r\n".encode()
    body = bytearray()
    while len(head) + len(body) < size:
        body += b"x" * min(76, size - len(head) - len(body) - 2) + b"\r\n"
    raw = head + bytes(body)
    assert len(raw) == size
    return raw


def test_the_total_size_is_capped_oldest_first() -> None:
    mailbox = Mailbox(max_messages=100, max_bytes=3000)
    first = mailbox.add("a@example.org", ["b@example.org"], _raw(1200, "one"))
    mailbox.add("a@example.org", ["b@example.org"], _raw(1200, "two"))
    assert mailbox.total_bytes == 2400
    mailbox.add("a@example.org", ["b@example.org"], _raw(1200, "three"))
    assert [m.subject for m in mailbox.messages()] == ["two", "three"]
    assert mailbox.total_bytes == 2400
    assert mailbox.get(first.id) is None
    # Exactly at the cap is fine; it takes everything else out.
    mailbox.add("a@example.org", ["b@example.org"], _raw(3000, "whole"))
    assert [m.subject for m in mailbox.messages()] == ["whole"]
    with pytest.raises(MessageTooLarge, match="3001 bytes is larger than the inbox's cap"):
        mailbox.add("a@example.org", ["b@example.org"], _raw(3001, "too big"))
    assert [m.subject for m in mailbox.messages()] == ["whole"]
    with pytest.raises(ValueError, match="max_bytes"):
        Mailbox(max_bytes=0)


def test_a_message_over_the_byte_cap_is_refused_at_data_with_552() -> None:
    with DevServer(smtp_port=0, http_port=0, max_bytes=4000) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.ehlo()
            # SIZE (RFC 1870) already tells the client the cap.
            assert client.esmtp_features["size"] == "4000"
            # A client that ignores SIZE is refused after its data.
            assert client.mail("a@example.org")[0] == 250
            assert client.rcpt("b@example.org")[0] == 250
            code, text = client.data(_raw(6000, "too big"))
            assert code == 552, text
            # The session goes on: the next message fits and is kept.
            client.sendmail("a@example.org", ["b@example.org"], _raw(3000, "fits"))
        [kept] = server.wait_for(1)
        assert kept.subject == "fits"
        assert server.mailbox.total_bytes == 3000


def test_the_smtp_side_refuses_what_the_mailbox_cannot_hold_even_past_size() -> None:
    # An SMTP side whose own data limit is larger than the mailbox's cap still says 552.
    from smtp_backends.devserver.smtp import SMTPThread

    mailbox = Mailbox(max_bytes=2000)
    thread = SMTPThread(mailbox, "127.0.0.1", 0, data_size_limit=10_000)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", thread.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example.org", ["b@example.org"], _raw(5000, "big"))
            assert refused.value.smtp_code == 552
            assert b"at most 2000 bytes" in refused.value.smtp_error
    finally:
        thread.stop()
    assert len(mailbox) == 0
