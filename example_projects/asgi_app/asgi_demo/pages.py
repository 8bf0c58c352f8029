"""The app's HTML, built with the standard library (``string.Template`` + ``html.escape``)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from string import Template

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>$title · smtp_backends + Starlette</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem;
           color: #222; line-height: 1.5; }
    nav a { margin-right: 1rem; }
    label { display: block; margin-top: .8rem; font-weight: 600; }
    input, textarea { width: 100%; padding: .4rem; box-sizing: border-box; font: inherit; }
    button { margin-top: 1rem; padding: .5rem 1.2rem; font: inherit; cursor: pointer; }
    .errorlist { color: #b00; margin: .2rem 0; padding-left: 1.2rem; }
    .box { background: #eef7ee; border: 1px solid #9c9; padding: .8rem 1rem; }
    .error { background: #fbeaea; border-color: #d99; }
    code { background: #f3f3f3; padding: 0 .2rem; }
  </style>
</head>
<body>
  <nav>
    <a href="/">Home</a> <a href="/contact/">Contact</a> <a href="/newsletter/">Newsletter</a>
  </nav>
  <main>
$content
  </main>
</body>
</html>
""")


def page(title: str, content: str) -> str:
    """A whole page around ``content`` (HTML, already escaped where needed)."""
    return _PAGE.substitute(title=escape(title), content=content)


def field(
    name: str,
    label: str,
    form: Mapping[str, str],
    errors: Mapping[str, str],
    *,
    kind: str = "text",
    rows: int = 0,
) -> str:
    """A labelled input (a textarea when ``rows`` is given) with id ``id_<name>``."""
    value = escape(form.get(name, ""))
    parts = [f'<label for="id_{name}">{escape(label)}</label>']
    if name in errors:
        parts.append(f'<ul class="errorlist"><li>{escape(errors[name])}</li></ul>')
    if rows:
        parts.append(
            f'<textarea id="id_{name}" name="{name}" rows="{rows}" required>{value}</textarea>'
        )
    else:
        parts.append(f'<input id="id_{name}" name="{name}" type="{kind}" value="{value}" required>')
    return "\n".join(parts)


def home(subscriber_count: int) -> str:
    """The start page."""
    return page(
        "Home",
        f"""<h1>Example ASGI app</h1>
<p>Every mail this Starlette app sends goes through <code>smtp_backends</code> to the development
mail server; open its web inbox to read them.</p>
<ul id="links">
  <li><a id="link-contact" href="/contact/">Contact form</a>: one message with
    <code>await smtp_backends.send(...)</code>.</li>
  <li><a id="link-newsletter" href="/newsletter/">Newsletter</a>: {subscriber_count} messages
    (text and HTML) with <code>await pool.send_messages(...)</code> on the app's
    <code>SMTPPool</code>.</li>
</ul>""",
    )


def contact(form: Mapping[str, str], errors: Mapping[str, str]) -> str:
    """The contact form."""
    fields = "\n".join(
        [
            field("name", "Name", form, errors),
            field("email", "Your email", form, errors, kind="email"),
            field("subject", "Subject", form, errors),
            field("message", "Message", form, errors, rows=6),
        ]
    )
    return page(
        "Contact",
        f"""<h1>Contact us</h1>
<form method="post" action="/contact/" id="contact-form">
{fields}
  <button id="send" type="submit">Send</button>
</form>""",
    )


def contact_thanks(name: str) -> str:
    """The page after the contact form was sent."""
    return page(
        "Thanks",
        f"""<div id="thanks" class="box">
  <h1>Thanks, {escape(name)}!</h1>
  <p>Your message was sent to our staff. They will answer at the address you gave.</p>
</div>
<p><a href="/contact/">Send another message</a></p>""",
    )


def newsletter(
    form: Mapping[str, str], errors: Mapping[str, str], sent: int | None, subscriber_count: int
) -> str:
    """The newsletter form, with the result of the last send."""
    result = ""
    if sent is not None:
        css = "box" if sent == subscriber_count else "box error"
        result = f'<p id="result" class="{css}">Sent {sent} messages</p>'
    fields = "\n".join(
        [field("subject", "Subject", form, errors), field("body", "Body", form, errors, rows=8)]
    )
    return page(
        "Newsletter",
        f"""<h1>Newsletter</h1>
{result}
<p>One message per subscriber ({subscriber_count} of them), plain text with an HTML alternative,
sent as one batch over the app's connection pool.</p>
<form method="post" action="/newsletter/" id="newsletter-form">
{fields}
  <button id="send-newsletter" type="submit">Send to {subscriber_count} subscribers</button>
</form>""",
    )


def newsletter_text(subject: str, paragraphs: list[str], recipient: str) -> str:
    """The plain text part of one newsletter message."""
    body = "\n\n".join(paragraphs)
    return f"{subject}\n\n{body}\n\n--\nYou receive this newsletter as {recipient}.\n"


def newsletter_html(subject: str, paragraphs: list[str], recipient: str) -> str:
    """The HTML alternative of one newsletter message."""
    body = "\n".join(f'<p class="paragraph">{escape(part)}</p>' for part in paragraphs)
    return f"""<!doctype html>
<html lang="en">
<body style="font-family: Georgia, serif; color: #222;">
  <h1 id="newsletter-subject" style="color: #2a6f2a;">{escape(subject)}</h1>
  {body}
  <p id="newsletter-footer" style="color: #777; font-size: small;">You receive this newsletter as
    <strong>{escape(recipient)}</strong>.</p>
</body>
</html>
"""
