"""HTML for the web inbox, built with the standard library only.

Everything that comes from a message (headers, addresses, bodies, file names) goes
through :func:`html.escape` before it reaches the page; the HTML body of a message is
never inlined here but served separately to a sandboxed iframe.

The element ids and classes are a public interface: browser tests select on them.
"""

from __future__ import annotations

import re
from html import escape

from .store import StoredMessage

__all__ = ("TITLE", "human_size", "inbox_page", "linkify", "message_page", "not_found_page")

#: The inbox page's <title>.
TITLE = "smtp_backends inbox"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; overflow-wrap: anywhere; }
a { color: #0b57d0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: .35rem .6rem; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #f6f8fa; }
tr.message:hover { background: #f6f8fa; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: .75rem;
      white-space: pre-wrap; overflow-wrap: anywhere; }
iframe { width: 100%; height: 32rem; border: 1px solid #d0d7de; background: #fff; }
.bar { display: flex; gap: 1rem; align-items: center; margin-bottom: 1rem; }
.muted { color: #59636e; }
button { font: inherit; padding: .25rem .8rem; cursor: pointer; }
details summary { cursor: pointer; margin: 1rem 0 0; }
"""

# An http(s) URL in plain text: it ends on a character that is not sentence
# punctuation, so "see https://x.org/a." does not swallow the full stop.
_URL = re.compile(r"https?://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def human_size(size: int) -> str:
    """A byte count for people: ``512 bytes``, ``1.5 KiB``, ``3.0 MiB``."""
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def linkify(text: str) -> str:
    """Escape plain text for HTML and turn the http(s) URLs in it into links."""
    pieces: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        url = match.group(0)
        pieces.append(_e(text[position : match.start()]))
        pieces.append(f'<a href="{_e(url)}">{_e(url)}</a>')
        position = match.end()
    pieces.append(_e(text[position:]))
    return "".join(pieces)


def _page(title: str, body: str, *, refresh: float | None = None) -> str:
    meta_refresh = (
        f'<meta http-equiv="refresh" content="{refresh:g}">\n' if refresh is not None else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta_refresh}<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _received(message: StoredMessage) -> str:
    stamp = message.received_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{_e(message.received_at.isoformat())}">{_e(stamp)}</time>'


def _subject_or_placeholder(message: StoredMessage) -> str:
    return _e(message.subject) if message.subject else '<span class="muted">(no subject)</span>'


def inbox_page(messages: list[StoredMessage], *, refresh: float | None = None) -> str:
    """The inbox: one table row per message, newest first.

    Args:
        messages: the stored messages, oldest first (as the mailbox keeps them).
        refresh: reload the page every this many seconds (None: never).
    """
    parts = [
        "<h1>Inbox</h1>",
        '<div class="bar">'
        f'<span><span id="message-count">{len(messages)}</span> message(s)</span>'
        '<form method="post" action="/clear"><button id="clear">Clear</button></form>'
        '<a href="/api/messages">JSON</a>'
        "</div>",
    ]
    if not messages:
        parts.append('<p id="empty">No messages yet.</p>')
    else:
        rows = [
            f'<tr class="message" data-id="{message.id}">'
            f'<td class="subject"><a href="/messages/{message.id}">'
            f"{_subject_or_placeholder(message)}</a></td>"
            f'<td class="from">{_e(message.from_)}</td>'
            f'<td class="to">{_e(", ".join(message.envelope_to))}</td>'
            f'<td class="date">{_received(message)}</td>'
            "</tr>"
            for message in reversed(messages)
        ]
        parts.append(
            '<table id="messages">\n<thead><tr><th>Subject</th><th>From</th><th>To</th>'
            "<th>Received</th></tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
        )
    return _page(TITLE, "\n".join(parts), refresh=refresh)


def message_page(message: StoredMessage) -> str:
    """One message: its addresses, headers, bodies and attachments."""
    base = f"/messages/{message.id}"
    fields = [
        ("From", "from", _e(message.from_)),
        ("To", "to", _e(message.to)),
        ("Envelope to", "envelope-to", _e(", ".join(message.envelope_to))),
        ("Envelope from", "envelope-from", _e(message.envelope_from)),
        ("Cc", "cc", _e(message.cc)),
        ("Date", "date", _e(message.date) if message.date else _received(message)),
        ("Received", "received", _received(message)),
        ("Message-ID", "message-id", _e(message.message_id)),
    ]
    parts = [
        '<div class="bar"><a id="back" href="/">&larr; Inbox</a>'
        f'<a id="raw" href="{base}/raw">raw</a></div>',
        f'<h1 id="subject">{_e(message.subject)}</h1>',
        "<dl>"
        + "".join(f'<dt>{label}</dt><dd id="{name}">{value}</dd>' for label, name, value in fields)
        + "</dl>",
    ]
    if message.attachments:
        items = "".join(
            f'<li><a class="attachment" href="{base}/attachments/{number}" '
            f'download="{_e(attachment.filename)}">{_e(attachment.filename)}</a> '
            f"({_e(attachment.content_type)}, {human_size(attachment.size)})</li>"
            for number, attachment in enumerate(message.attachments)
        )
        parts.append(f'<h2>Attachments</h2>\n<ul id="attachments">{items}</ul>')
    if message.html is not None:
        # No allow-scripts (nor allow-same-origin): a message's script never runs, and the
        # frame's own CSP (see web.py) blocks remote loads.
        parts.append(
            f'<h2>HTML</h2>\n<iframe id="html-body" sandbox src="{base}/html" '
            'title="HTML body"></iframe>'
        )
    if message.text is not None:
        parts.append(f'<h2>Text</h2>\n<pre id="text-body">{linkify(message.text)}</pre>')
    header_rows = "".join(
        f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in message.headers
    )
    parts.append(
        f'<details open><summary>Headers</summary><table id="headers">{header_rows}</table>'
        "</details>"
    )
    title = f"{message.subject or '(no subject)'} - {TITLE}"
    return _page(title, "\n".join(parts))


def not_found_page(detail: str) -> str:
    """A small 404 (or other error) page with a way back to the inbox."""
    return _page(
        f"{detail} - {TITLE}",
        f'<h1>{_e(detail)}</h1>\n<p><a id="back" href="/">Back to the inbox</a></p>',
    )
