"""The dev inbox's search, plus-address tags and live updates (server-sent events).

Mail goes over SMTP on 127.0.0.1; the page, the JSON API and the event stream are read
over real HTTP.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smtp_backends.devserver import DevServer, Mailbox, Query
from smtp_backends.devserver.message import plus_tag
from smtp_backends.devserver.web import InboxServer
from tests.test_devserver import api, fetch, make_message, page, rows, send


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(smtp_port=0, http_port=0) as running:
        yield running


def fill(server: DevServer) -> None:
    invoice = make_message("Your invoice #42", "Amount due: 10 EUR\n", to="ada+billing@example.org")
    invoice.add_alternative("<p>Pay <b>now</b></p>", subtype="html")
    send(
        server,
        invoice,
        make_message("Welcome aboard", "Hello Ada\n", to="ada+signup-1@example.org"),
        make_message(
            "Password reset", "token abc\n", to="bob+signup-2@example.org", sender="it@corp.test"
        ),
        make_message("Newsletter", "invoice tips\n", to="news@example.org"),
    )
    server.wait_for(4)


# --------------------------------------------------------------------------- search


def test_search_fields_phrases_and_negation(server: DevServer) -> None:
    fill(server)

    def subjects(query: str) -> list[str]:
        return [message.subject for message in server.search(query)]

    assert subjects("") == ["Your invoice #42", "Welcome aboard", "Password reset", "Newsletter"]
    assert subjects("invoice") == ["Your invoice #42", "Newsletter"]  # subject or text
    assert subjects("subject:invoice") == ["Your invoice #42"]
    assert subjects("INVOICE -newsletter") == ["Your invoice #42"]
    assert subjects('"password reset"') == ["Password reset"]
    assert subjects('subject:"welcome aboard"') == ["Welcome aboard"]
    assert subjects("from:corp.test") == ["Password reset"]
    assert subjects("to:bob") == ["Password reset"]
    assert subjects("text:now") == ["Your invoice #42"]  # the HTML part counts as text
    assert subjects("tag:signup-1") == ["Welcome aboard"]
    assert subjects("tag:signup") == []  # a tag matches whole, not as a substring
    assert subjects("-tag:billing -tag:signup-1 -tag:signup-2") == ["Newsletter"]
    assert subjects("re:nothing") == []  # an unknown field is part of the word
    assert subjects("welcome hello") == ["Welcome aboard"]
    assert not Query.parse("   ")
    assert Query.parse('subject:"a b" -x').terms[0].value == "a b"


def test_search_in_the_page_and_the_api(server: DevServer) -> None:
    fill(server)
    inbox = page(server, "/?q=subject%3Ainvoice")
    assert rows(inbox) == ["1"]
    assert '<span id="message-count">1</span> message(s) matching' in inbox
    assert 'value="subject:invoice"' in inbox
    assert '<a id="all" href="/">All messages</a>' in inbox
    listed: Any = api(server, "/api/messages?q=to%3Abob")
    assert [message["subject"] for message in listed] == ["Password reset"]
    # Clearing from a search page clears only what matches.
    status, headers, _ = fetch(server, "/clear", method="POST", data=b"q=invoice")
    assert (status, headers["Location"]) == (303, "/?q=invoice")
    assert [message.subject for message in server.messages] == ["Welcome aboard", "Password reset"]


# --------------------------------------------------------------------------- tags


def test_plus_address_tags() -> None:
    assert plus_tag("ada+signup-1@example.org") == "signup-1"
    assert plus_tag("<ada+a+b@example.org>") == "a+b"
    assert plus_tag('"ada+q"@example.org') == "q"
    assert plus_tag("ada@example.org") == ""
    assert plus_tag("no-at-sign+x") == ""
    stored = Mailbox().add(
        "s@example.org",
        ["a+One@x.org", "b+two@x.org", "c+one@x.org", "plain@x.org"],
        b"Subject: t\r\n\r\n",
    )
    assert stored.tags == ("One", "two", "one")
    assert stored.has_tag("ONE") and not stored.has_tag("three")


def test_per_test_isolation_by_tag(server: DevServer) -> None:
    fill(server)
    assert [m.subject for m in server.wait_for(1, tag="signup-2")] == ["Password reset"]
    with pytest.raises(TimeoutError, match="expected 1 matching message"):
        server.wait_for(1, timeout=0.1, tag="nobody")
    assert api(server, "/api/tags") == [
        {"tag": "billing", "messages": 1},
        {"tag": "signup-1", "messages": 1},
        {"tag": "signup-2", "messages": 1},
    ]
    listed: Any = api(server, "/api/messages?tag=Signup-1")
    assert [message["subject"] for message in listed] == ["Welcome aboard"]
    # One test clears its own mail and leaves the others' alone.
    assert fetch(server, "/api/messages?tag=signup-1", method="DELETE")[0] == 204
    assert [m.subject for m in server.messages] == [
        "Your invoice #42",
        "Password reset",
        "Newsletter",
    ]
    server.clear(tag="billing")
    assert [m.subject for m in server.messages] == ["Password reset", "Newsletter"]
    assert fetch(server, "/api/messages?id=4,99", method="DELETE")[0] == 204
    assert [m.subject for m in server.messages] == ["Password reset"]
    status, _, body = fetch(server, "/api/messages?id=x", method="DELETE")
    assert status == 400
    assert json.loads(body) == {"error": "id must be a comma-separated list of message ids"}
    detail = page(server, "/messages/3")
    assert '<dd id="tags"><a class="tag" href="/?q=tag:signup-2">signup-2</a></dd>' in detail


def test_the_list_can_wait_for_mail(server: DevServer) -> None:
    timer = threading.Timer(0.2, send, args=(server, make_message("Late", to="x+late@x.org")))
    started = time.monotonic()
    timer.start()
    try:
        listed: Any = api(server, "/api/messages?tag=late&wait=10")
    finally:
        timer.join()
    assert [message["subject"] for message in listed] == ["Late"]
    assert time.monotonic() - started < 8
    started = time.monotonic()
    assert api(server, "/api/messages?tag=never&wait=1") == []
    assert 0.9 < time.monotonic() - started < 5
    for bad in ("wait=61", "wait=x", "count=-1"):
        status, _, body = fetch(server, f"/api/messages?{bad}")
        assert status == 400, bad
        assert "error" in json.loads(body)


def test_info(server: DevServer) -> None:
    fill(server)
    info: Any = api(server, "/api/info")
    assert info["messages"] == 4
    assert info["bytes"] == sum(message.size for message in server.messages)
    assert (info["max_messages"], info["max_bytes"]) == (1000, 256 * 1024 * 1024)
    assert info["release"] is None
    assert info["link_check"] == {"hosts": [], "timeout": 5.0, "max_links": 50}
    assert info["chaos"]["rules"] == []


# --------------------------------------------------------------------------- live updates


class EventReader:
    """A server-sent event stream read over a raw HTTP connection."""

    def __init__(self, server: DevServer, query: str = "", headers: dict[str, str] | None = None):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        self.connection.request("GET", "/api/events" + query, headers=headers or {})
        self.response = self.connection.getresponse()

    def next(self) -> dict[str, str]:
        """The next event's fields (comments and retry lines skipped)."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode()
            if line == "":
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    def close(self) -> None:
        self.connection.close()


def test_events_stream_stores_and_deletes(server: DevServer) -> None:
    reader = EventReader(server)
    try:
        assert reader.response.status == 200
        assert reader.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        send(server, make_message("Live one", to="ada+live@example.org"))
        event = reader.next()
        assert (event["event"], event["id"]) == ("store", "1")
        data = json.loads(event["data"])
        assert data["id"] == 1
        assert data["subject"] == "Live one"
        assert data["envelope_to"] == ["ada+live@example.org"]
        assert data["tags"] == ["live"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", data["received"])
        server.clear()
        event = reader.next()
        assert (event["event"], event["id"], json.loads(event["data"])) == (
            "delete",
            "2",
            {"ids": [1]},
        )
    finally:
        reader.close()


def test_a_filtered_stream_and_a_replay_from_a_version(server: DevServer) -> None:
    send(server, make_message("Before", to="a+mine@x.org"), make_message("Other", to="b@x.org"))
    server.wait_for(2)
    # From version 0: both stores replayed; only the tagged one is shown, the other
    # just moves the id on.
    reader = EventReader(server, "?since=0&tag=mine")
    try:
        event = reader.next()
        assert event["event"] == "store"
        assert json.loads(event["data"])["subject"] == "Before"
        assert reader.next() == {"id": "2"}
        send(server, make_message("Mine later", to="a+mine@x.org"))
        assert json.loads(reader.next()["data"])["subject"] == "Mine later"
    finally:
        reader.close()
    # An EventSource reconnecting says where it was with Last-Event-ID.
    reader = EventReader(server, "?since=0", {"Last-Event-ID": "2"})
    try:
        assert json.loads(reader.next()["data"])["subject"] == "Mine later"
    finally:
        reader.close()
    # A version the mailbox never had: start over.
    reader = EventReader(server, "?since=99")
    try:
        assert reader.next() == {"event": "reset", "data": "{}"}
        with pytest.raises(EOFError):
            reader.next()
    finally:
        reader.close()
    assert fetch(server, "/api/events?since=x")[0] == 400


def test_idle_streams_get_keepalives_and_end_when_the_server_stops() -> None:
    mailbox = Mailbox()
    http_server = InboxServer(("127.0.0.1", 0), mailbox, keepalive=0.05)
    http_server.start()
    connection = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    try:
        connection.request("GET", "/api/events")
        response = connection.getresponse()
        assert response.readline() == b"retry: 1000\n"
        assert response.readline() == b"\n"
        assert response.readline() == b": keep-alive\n"
        http_server.stop()
        # The stream ends rather than keeping a thread alive.
        deadline = time.monotonic() + 5
        while response.readline():
            assert time.monotonic() < deadline
    finally:
        connection.close()
        http_server.stop()
    assert mailbox._subscriptions == set()


def test_a_subscriber_that_falls_behind_is_told_to_reload() -> None:
    mailbox = Mailbox()
    subscription = mailbox.subscribe()
    for number in range(1100):
        mailbox.add("a@x.org", ["b@x.org"], f"Subject: {number}\r\n\r\n".encode())
    assert subscription.get(0).kind == "reset"  # type: ignore[union-attr]
    assert subscription.get(0) is None
    assert subscription.closed
    # Too far back for the history: reload as well.
    late = mailbox.subscribe(since=1)
    assert late.get(0).kind == "reset"  # type: ignore[union-attr]
    current = mailbox.subscribe(since=mailbox.version)
    assert current.get(0) is None
    mailbox.close_subscriptions()
    assert current.closed


def test_the_inbox_page_is_kept_live_by_a_script_free_page_and_a_framed_script(
    server: DevServer,
) -> None:
    fill(server)
    inbox = page(server, "/?q=invoice")
    # The page itself: no script, no script-src; the frame carries the version and search.
    assert "<script" not in inbox
    assert '<iframe id="live" src="/live?since=4&amp;q=invoice" hidden' in inbox
    status, headers, body = fetch(server, "/live?since=4&q=invoice")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'self'" in csp
    assert b'<script src="/static/live.js"></script>' in body
    status, headers, script = fetch(server, "/static/live.js")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert b"new EventSource('/api/events?'" in script
    # Message text reaches the page as text nodes only.
    assert b"innerHTML" not in script and b"insertAdjacentHTML" not in script
    _, headers, _ = fetch(server, "/")
    assert "frame-ancestors 'self'" in headers["Content-Security-Policy"]


def test_the_documented_example_runs() -> None:
    """The development inbox page's example (docs/devserver/index.md, "From Python")."""
    page = (Path(__file__).parent.parent / "docs" / "devserver" / "index.md").read_text()
    section = page.split("## From Python", 1)[1].split("\n## ", 1)[0]
    [example] = [
        block
        for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL)
        if "DevServer" in block
    ]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/devserver/index.md", "exec"), namespace)
    assert namespace["mail"].subject == "Welcome"
    assert namespace["dev"].messages == []
