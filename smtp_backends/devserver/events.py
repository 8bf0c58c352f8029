"""Live updates: the mailbox's changes as server-sent events, and the script that shows them.

``GET /api/events`` is a ``text/event-stream`` (HTML Living Standard, "Server-sent
events"). Each change of the mailbox is one event whose ``id`` is the mailbox version
after it:

``store``   ``data`` is the new message's summary (:func:`summary_json`); sent only
            for messages matching the stream's ``q`` and ``tag`` parameters.
``delete``  ``data`` is ``{"ids": [...]}``: messages cleared, deleted or evicted.
``reset``   the stream cannot tell what was missed: reload everything.

A stream starts after ``since`` (a query parameter, or the ``Last-Event-ID`` header an
``EventSource`` sends when it reconnects): what changed since then is replayed first,
so a page rendered at version *V* that subscribes from *V* misses nothing. A comment
line every 15 seconds keeps idle connections open through proxies.

The inbox page runs no script of its own (its CSP has no ``script-src``): it embeds a
hidden same-origin frame, ``/live``, whose one script (:data:`LIVE_JS`, served from
``/static/live.js`` under ``script-src 'self'``) listens to the stream and updates the
page's list through the DOM, with text nodes only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from .store import Mailbox, MailboxEvent, StoredMessage, Subscription
from .templates import stamp

__all__ = ("KEEPALIVE", "LIVE_CSP", "LIVE_JS", "LIVE_SCRIPT_PATH", "stream", "summary_json")

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 15.0

#: Where :data:`LIVE_JS` is served.
LIVE_SCRIPT_PATH = "/static/live.js"

#: The Content-Security-Policy of the ``/live`` frame: our one script, our one stream,
#: nothing else, and only inside the inbox's own pages.
LIVE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)


def summary_json(message: StoredMessage) -> dict[str, Any]:
    """What a ``store`` event says about a message: enough for one row of the list."""
    return {
        "id": message.id,
        "subject": message.subject,
        "from": message.from_,
        "envelope_to": list(message.envelope_to),
        "received_at": message.received_at.isoformat(),
        "received": stamp(message),
        "tags": list(message.tags),
        "size": message.size,
    }


def _encode(
    event: MailboxEvent, mailbox: Mailbox, select: Callable[[StoredMessage], bool]
) -> bytes:
    if event.kind == "reset":
        return b"event: reset\ndata: {}\n\n"
    head = f"id: {event.version}\n"
    if event.kind == "store":
        message = event.message or mailbox.get(event.ids[0])
        if message is None or not select(message):
            # Not for this stream (or gone since): still move the client's Last-Event-ID.
            return (head + "\n").encode()
        data: dict[str, Any] = summary_json(message)
    else:
        data = {"ids": list(event.ids)}
    payload = json.dumps(data, ensure_ascii=False)
    return f"{head}event: {event.kind}\ndata: {payload}\n\n".encode()


def stream(
    write: Callable[[bytes], None],
    mailbox: Mailbox,
    subscription: Subscription,
    select: Callable[[StoredMessage], bool],
    closing: threading.Event,
    keepalive: float = KEEPALIVE,
) -> None:
    """Write ``subscription``'s events with ``write`` until the client goes, the
    subscription is closed, a ``reset`` was sent, or ``closing`` is set.

    ``write`` must send and flush; an :class:`OSError` from it ends the stream.
    """
    try:
        # Reconnect after a second when the connection drops (the default is ~3 s).
        write(b"retry: 1000\n\n")
        while not closing.is_set():
            event = subscription.get(timeout=keepalive)
            if event is None:
                if subscription.closed:
                    return
                write(b": keep-alive\n\n")
                continue
            write(_encode(event, mailbox, select))
            if event.kind == "reset":
                return
    except OSError:
        return  # the browser went away
    finally:
        subscription.close()


#: The live-update script of the ``/live`` frame (see the module's documentation).
LIVE_JS = r"""'use strict';
(function () {
  var doc = window.parent.document;
  var params = new URLSearchParams(window.location.search);

  function element(tag, className, text) {
    var node = doc.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function rows() { return doc.querySelectorAll('#messages tr.message'); }

  function refreshCount() {
    var counter = doc.getElementById('message-count');
    if (counter) { counter.textContent = String(rows().length); }
  }

  function tableBody() {
    var table = doc.getElementById('messages');
    if (table) { return table.tBodies[0]; }
    table = element('table');
    table.id = 'messages';
    var head = table.createTHead().insertRow();
    ['Subject', 'From', 'To', 'Received', 'Tags'].forEach(function (name) {
      head.appendChild(element('th', '', name));
    });
    var body = table.createTBody();
    var empty = doc.getElementById('empty');
    if (empty) {
      empty.replaceWith(table);
    } else {
      var frame = doc.getElementById('live');
      frame.parentNode.insertBefore(table, frame);
    }
    return body;
  }

  function addRow(message) {
    if (doc.querySelector('#messages tr.message[data-id="' + message.id + '"]')) { return; }
    var row = element('tr', 'message');
    row.dataset.id = String(message.id);
    var link = element('a');
    link.href = '/messages/' + message.id;
    if (message.subject) {
      link.textContent = message.subject;
    } else {
      link.appendChild(element('span', 'muted', '(no subject)'));
    }
    row.appendChild(element('td', 'subject')).appendChild(link);
    row.appendChild(element('td', 'from', message.from));
    row.appendChild(element('td', 'to', message.envelope_to.join(', ')));
    var time = element('time', '', message.received);
    time.setAttribute('datetime', message.received_at);
    row.appendChild(element('td', 'date')).appendChild(time);
    var tags = row.appendChild(element('td', 'tags'));
    message.tags.forEach(function (tag) {
      var chip = tags.appendChild(element('a', 'tag', tag));
      chip.href = '/?q=tag:' + encodeURIComponent(tag);
    });
    var body = tableBody();
    body.insertBefore(row, body.firstChild);
    refreshCount();
  }

  function removeRows(ids) {
    ids.forEach(function (id) {
      var row = doc.querySelector('#messages tr.message[data-id="' + id + '"]');
      if (row) { row.remove(); }
    });
    var table = doc.getElementById('messages');
    if (table && rows().length === 0) {
      var empty = element('p', '', 'No messages yet.');
      empty.id = 'empty';
      table.replaceWith(empty);
    }
    refreshCount();
  }

  var source = new EventSource('/api/events?' + params.toString());
  source.addEventListener('open', function () {
    doc.documentElement.dataset.live = 'connected';
  });
  source.addEventListener('error', function () {
    doc.documentElement.dataset.live = 'reconnecting';
  });
  source.addEventListener('store', function (event) { addRow(JSON.parse(event.data)); });
  source.addEventListener('delete', function (event) { removeRows(JSON.parse(event.data).ids); });
  source.addEventListener('reset', function () {
    source.close();
    window.parent.location.reload();
  });
})();
"""
