"""The web inbox's JSON API (documented in ``smtp_backends/devserver/API.md``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .chaos import ChaosRule
from .linkcheck import results_json
from .release import ReleaseFailed, ReleaseRefused
from .responses import (
    BadRequest,
    EventStream,
    Request,
    Response,
    json_error,
    json_response,
    message_route,
)
from .search import Query
from .store import StoredMessage

__all__ = (
    "chaos_clear",
    "chaos_get",
    "chaos_put",
    "events",
    "info",
    "link_check",
    "message",
    "message_json",
    "messages_delete",
    "messages_list",
    "release",
    "tags",
)

# The longest a list request may wait for messages (?wait=), in seconds.
_MAX_WAIT = 60


def message_json(message: StoredMessage) -> dict[str, Any]:
    """The JSON form of a message served by ``/api/messages``."""
    return {
        "id": message.id,
        "envelope_from": message.envelope_from,
        "envelope_to": list(message.envelope_to),
        "subject": message.subject,
        "from": message.from_,
        "to": message.to,
        "cc": message.cc,
        "message_id": message.message_id,
        "received_at": message.received_at.isoformat(),
        "text": message.text,
        "html": message.html,
        "attachments": [
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "url": f"/messages/{message.id}/attachments/{number}",
            }
            for number, attachment in enumerate(message.attachments)
        ],
    }


def _filter(request: Request) -> tuple[Query | None, str | None]:
    query = request.query.get("q", "").strip()
    tag = request.query.get("tag")
    return (Query.parse(query) if query else None), (tag.strip() if tag is not None else None)


def _selector(request: Request) -> Callable[[StoredMessage], bool]:
    query, tag = _filter(request)
    return lambda message: (
        (not query or query.matches(message)) and (tag is None or message.has_tag(tag))
    )


def messages_list(request: Request) -> Response:
    """``GET /api/messages[?q=&tag=&wait=&count=]``: messages, oldest first.

    With ``wait=SECONDS``, waits (up to 60 s) until at least ``count`` (default 1)
    messages match, then answers with whatever matches.
    """
    query, tag = _filter(request)
    wait = request.int_param("wait", 0, low=0, high=_MAX_WAIT)
    count = request.int_param("count", 1, low=0, high=1_000_000)
    mailbox = request.server.mailbox
    if wait:
        # On a timeout, answer with what there is.
        with contextlib.suppress(TimeoutError):
            mailbox.wait_for(count, wait, query=query, tag=tag)
    return json_response([message_json(m) for m in mailbox.messages(query, tag=tag)])


def messages_delete(request: Request) -> Response:
    """``DELETE /api/messages[?q=&tag=&id=]``: forget every message, or the selected ones."""
    mailbox = request.server.mailbox
    ids = request.query.get("id")
    if ids is not None:
        try:
            wanted = [int(part) for part in ids.split(",") if part.strip()]
        except ValueError:
            raise BadRequest("id must be a comma-separated list of message ids") from None
        mailbox.delete(wanted)
    else:
        query, tag = _filter(request)
        mailbox.clear(query, tag=tag)
    return Response(HTTPStatus.NO_CONTENT)


@message_route
def message(request: Request, stored: StoredMessage) -> Response:
    """``GET /api/messages/ID``: one message."""
    return json_response(message_json(stored))


def tags(request: Request) -> Response:
    """``GET /api/tags``: every plus-address tag with its number of messages."""
    counts: dict[str, int] = {}
    for stored in request.server.mailbox.messages():
        for tag in stored.tags:
            counts[tag] = counts.get(tag, 0) + 1
    return json_response([{"tag": tag, "messages": n} for tag, n in sorted(counts.items())])


def events(request: Request) -> Response:
    """``GET /api/events[?since=&q=&tag=]``: the server-sent event stream."""
    since_text = request.headers.get("Last-Event-ID") or request.query.get("since")
    since: int | None = None
    if since_text is not None and since_text.strip():
        try:
            since = int(since_text)
        except ValueError:
            raise BadRequest("since (or Last-Event-ID) must be a mailbox version") from None
    return EventStream(since, _selector(request))


def info(request: Request) -> Response:
    """``GET /api/info``: the server's limits, counts and features."""
    server = request.server
    mailbox = server.mailbox
    checker = server.link_checker.config
    return json_response(
        {
            "messages": len(mailbox),
            "bytes": mailbox.total_bytes,
            "max_messages": mailbox.max_messages,
            "max_bytes": mailbox.max_bytes,
            "version": mailbox.version,
            "release": server.releaser.config.to_json() if server.releaser else None,
            "link_check": {
                "hosts": list(checker.hosts),
                "timeout": checker.timeout,
                "max_links": checker.max_links,
            },
            "chaos": server.chaos.to_json() if server.chaos is not None else None,
        }
    )


@message_route
def link_check(request: Request, stored: StoredMessage) -> Response:
    """``POST /api/messages/ID/link-check``: check the message's links."""
    return json_response(results_json(request.server.link_checker.check_message(stored)))


@message_route
def release(request: Request, stored: StoredMessage) -> Response:
    """``POST /api/messages/ID/release`` with ``{"to": [...]}`` (optional)."""
    releaser = request.server.releaser
    if releaser is None:
        return json_error(HTTPStatus.CONFLICT, "release is not configured (--release-host)")
    body = request.json()
    if body is not None and not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"to": ["a@example.org"]}')
    to = (body or {}).get("to")
    if isinstance(to, str):
        to = [to]
    if to is not None and not (isinstance(to, list) and all(isinstance(a, str) for a in to)):
        raise BadRequest("to must be a list of addresses")
    try:
        result = releaser.release(stored, to)
    except ReleaseRefused as error:
        return json_error(HTTPStatus.FORBIDDEN, str(error), refused=error.refused)
    except ValueError as error:
        return json_error(HTTPStatus.BAD_REQUEST, str(error))
    except ReleaseFailed as error:
        return json_error(HTTPStatus.BAD_GATEWAY, str(error))
    return json_response({"released": True, **result.to_json()})


def chaos_get(request: Request) -> Response:
    """``GET /api/chaos``: the seed and the rules, each with how often it fired."""
    chaos = request.server.chaos
    if chaos is None:
        return json_error(HTTPStatus.CONFLICT, "this inbox has no SMTP side to apply rules to")
    return json_response(chaos.to_json())


def chaos_put(request: Request) -> Response:
    """``PUT /api/chaos`` with ``{"rules": [...], "seed": N}``: replace the rules."""
    chaos = request.server.chaos
    if chaos is None:
        return json_error(HTTPStatus.CONFLICT, "this inbox has no SMTP side to apply rules to")
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("rules", []), list):
        raise BadRequest('the body must be a JSON object such as {"rules": [], "seed": 1}')
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BadRequest("seed must be an integer")
    try:
        rules = [ChaosRule.from_json(rule) for rule in body.get("rules", [])]
    except ValueError as error:
        raise BadRequest(str(error)) from None
    chaos.configure(rules, seed)
    return json_response(chaos.to_json())


def chaos_clear(request: Request) -> Response:
    """``DELETE /api/chaos``: no rules any more (the server answers normally)."""
    chaos = request.server.chaos
    if chaos is None:
        return json_error(HTTPStatus.CONFLICT, "this inbox has no SMTP side to apply rules to")
    chaos.configure((), chaos.seed)
    return Response(HTTPStatus.NO_CONTENT)
