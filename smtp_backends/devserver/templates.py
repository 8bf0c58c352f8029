"""HTML for the web inbox, built with the standard library only.

Everything that comes from a message (headers, addresses, bodies, file names) goes
through :func:`html.escape` before it reaches the page; the HTML body of a message is
never inlined here but served separately to a sandboxed iframe.

The element ids and classes are a public interface: browser tests select on them.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from .message import StoredMessage

if TYPE_CHECKING:
    from .linkcheck import LinkResult

__all__ = (
    "TITLE",
    "URL_PATTERN",
    "human_size",
    "inbox_page",
    "link_check_page",
    "linkify",
    "live_page",
    "message_page",
    "not_found_page",
    "release_page",
    "stamp",
)

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
input[type=search], input[type=text] { font: inherit; padding: .2rem .4rem; min-width: 18rem; }
.tag { background: #ddf4ff; border-radius: 1rem; padding: 0 .5rem; margin-right: .25rem;
       text-decoration: none; white-space: nowrap; }
.ok { color: #1a7f37; } .broken { color: #cf222e; }
.actions { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.actions form, .bar form { display: flex; gap: .5rem; align-items: center; }
"""

# An http(s) URL in plain text: it ends on a character that is not sentence
# punctuation, so "see https://x.org/a." does not swallow the full stop.
URL_PATTERN = re.compile(r"https?://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")


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
    for match in URL_PATTERN.finditer(text):
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


def stamp(message: StoredMessage) -> str:
    """When the message arrived, for people: ``2026-01-31 12:00:00 UTC``."""
    return message.received_at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _received(message: StoredMessage) -> str:
    return f'<time datetime="{_e(message.received_at.isoformat())}">{_e(stamp(message))}</time>'


def _tags(message: StoredMessage) -> str:
    return "".join(
        f'<a class="tag" href="/?q={_e(urllib.parse.quote("tag:" + tag, safe=":"))}">{_e(tag)}</a>'
        for tag in message.tags
    )


def _subject_or_placeholder(message: StoredMessage) -> str:
    return _e(message.subject) if message.subject else '<span class="muted">(no subject)</span>'


def inbox_page(
    messages: list[StoredMessage],
    *,
    refresh: float | None = None,
    query: str = "",
    version: int | None = None,
) -> str:
    """The inbox: one table row per message, newest first, with a search box.

    Args:
        messages: the messages to list, oldest first (as the mailbox keeps them).
        refresh: reload the page every this many seconds (None: never).
        query: the search the list is the result of ('' for none).
        version: the mailbox version the list shows; when given, a hidden frame
            keeps the list up to date with server-sent events from that version on.
    """
    clear_filter = f'<input type="hidden" name="q" value="{_e(query)}">' if query else ""
    matching = " matching" if query else ""
    parts = [
        "<h1>Inbox</h1>",
        '<div class="bar">'
        f'<span><span id="message-count">{len(messages)}</span> message(s){matching}</span>'
        f'<form method="post" action="/clear">{clear_filter}'
        f'<button id="clear">{"Clear matching" if query else "Clear"}</button></form>'
        '<form id="search" method="get" action="/" role="search">'
        f'<input type="search" id="q" name="q" value="{_e(query)}" '
        'placeholder="subject:, from:, to:, text:, tag:" aria-label="Search">'
        '<button id="search-button">Search</button></form>'
        + ('<a id="all" href="/">All messages</a>' if query else "")
        + '<a href="/api/messages">JSON</a>'
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
            f'<td class="tags">{_tags(message)}</td>'
            "</tr>"
            for message in reversed(messages)
        ]
        parts.append(
            '<table id="messages">\n<thead><tr><th>Subject</th><th>From</th><th>To</th>'
            "<th>Received</th><th>Tags</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows)
            + "\n</tbody>\n</table>"
        )
    if version is not None:
        live = urllib.parse.urlencode({"since": version, **({"q": query} if query else {})})
        # The page itself runs no script (see web.py); the frame's script updates it.
        parts.append(
            f'<iframe id="live" src="/live?{_e(live)}" hidden title="Live updates"></iframe>'
        )
    return _page(TITLE, "\n".join(parts), refresh=refresh)


def _actions(message: StoredMessage, *, release: bool) -> str:
    """The link check button, and the release form when a relay is configured."""
    base = f"/messages/{message.id}"
    forms = [
        f'<form method="post" action="{base}/link-check">'
        '<button id="link-check">Check links</button></form>'
    ]
    if release:
        recipients = ", ".join(message.envelope_to)
        forms.append(
            f'<form id="release-form" method="post" action="{base}/release">'
            '<label for="release-to">Release to</label>'
            f'<input type="text" id="release-to" name="to" value="{_e(recipients)}">'
            '<button id="release">Release</button></form>'
        )
    return f'<div class="actions">{"".join(forms)}</div>'


def message_page(message: StoredMessage, *, release: bool = False) -> str:
    """One message: its addresses, headers, bodies and attachments.

    Args:
        message: the message.
        release: show the release form (a relay is configured).
    """
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
        ("Tags", "tags", _tags(message)),
    ]
    parts = [
        '<div class="bar"><a id="back" href="/">&larr; Inbox</a>'
        f'<a id="raw" href="{base}/raw">raw</a></div>',
        f'<h1 id="subject">{_e(message.subject)}</h1>',
        "<dl>"
        + "".join(f'<dt>{label}</dt><dd id="{name}">{value}</dd>' for label, name, value in fields)
        + "</dl>",
        _actions(message, release=release),
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


def _message_header(message: StoredMessage) -> str:
    return (
        f'<div class="bar"><a id="back" href="/messages/{message.id}">&larr; Message</a>'
        '<a href="/">Inbox</a></div>'
    )


def link_check_page(message: StoredMessage, results: Sequence[LinkResult]) -> str:
    """The link check of one message: each link with its status."""
    rows = []
    for result in results:
        if not result.checked:
            verdict = '<span class="muted">not checked</span>'
        elif result.ok:
            verdict = f'<span class="ok">{result.status}</span>'
        else:
            verdict = f'<span class="broken">{_e(result.error or "broken")}</span>'
        detail = _e(result.error) if result.error and result.checked is False else ""
        rows.append(
            f'<tr class="link"><td class="url">{_e(result.url)}</td>'
            f'<td class="status">{verdict}</td><td class="detail">{detail}</td></tr>'
        )
    broken = sum(1 for result in results if result.checked and not result.ok)
    body = [
        _message_header(message),
        f"<h1>Links of {_subject_or_placeholder(message)}</h1>",
        f'<p id="link-summary">{len(results)} link(s), {broken} broken</p>',
    ]
    if rows:
        body.append(
            '<table id="links"><thead><tr><th>Link</th><th>Status</th><th>Note</th></tr>'
            "</thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    return _page(f"Links - {TITLE}", "\n".join(body))


def release_page(message: StoredMessage, outcome: str, *, ok: bool) -> str:
    """What became of a release: ``outcome`` in green when ``ok``, else in red."""
    css = "ok" if ok else "broken"
    return _page(
        f"Release - {TITLE}",
        _message_header(message) + f"\n<h1>Release of {_subject_or_placeholder(message)}</h1>\n"
        f'<p id="release-result" class="{css}">{_e(outcome)}</p>',
    )


def live_page(script: str) -> str:
    """The hidden frame of the inbox page that runs the live-update ``script`` (a path)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Live updates - {TITLE}</title>\n"
        f'<script src="{_e(script)}"></script>\n</head>\n<body></body>\n</html>\n'
    )
