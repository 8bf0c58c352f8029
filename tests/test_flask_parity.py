"""Side by side with Flask-Mail 0.10: the same input renders the same MIME message.

Each case builds one message with Flask-Mail and with smtp_backends.flask (the same code,
only the module differs), fixes the Message-ID and Date, renders both and compares the
bytes after numbering the random multipart boundaries. Where smtp_backends deliberately
differs (a Flask-Mail bug), the test says so and checks what changed.

Flask-Mail changes the process-wide ``email.charset`` registry when imported; the fixture
here undoes that at once and re-applies it only while Flask-Mail renders, so the rest of
the suite (and our adapter, which must not depend on it) never sees it.
"""

from __future__ import annotations

import ast
import email.charset
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask

import smtp_backends.flask as ours
from tests.flask_app import no_bridge
from tests.servers import SMTPServer

__all__ = ("no_bridge",)

ROOT = Path(__file__).resolve().parent.parent
DATE = 1_700_000_000.0
MSGID = "<parity.1@example.com>"


@pytest.fixture(scope="module")
def flask_mail() -> ModuleType:
    saved = dict(email.charset.CHARSETS)
    try:
        module = pytest.importorskip("flask_mail")
    finally:
        email.charset.CHARSETS.clear()
        email.charset.CHARSETS.update(saved)
    return module


@contextmanager
def flask_mail_charsets() -> Iterator[None]:
    """Flask-Mail's import-time registry change, for the duration of a render."""
    saved = email.charset.CHARSETS["utf-8"]
    email.charset.add_charset("utf-8", email.charset.SHORTEST, None, "utf-8")
    try:
        yield
    finally:
        email.charset.CHARSETS["utf-8"] = saved


def make_app(module: ModuleType, **config: Any) -> Flask:
    app = Flask(f"parity_{module.__name__}")
    settings: dict[str, Any] = {
        "TESTING": True,
        "MAIL_DEFAULT_SENDER": "Support <support@example.com>",
    }
    settings.update(config)
    app.config.update(settings)
    module.Mail(app)
    return app


Build = Callable[[ModuleType], Any]


def render(module: ModuleType, build: Build, **config: Any) -> bytes:
    app = make_app(module, **config)
    with app.app_context():
        message = build(module)
        message.msgId = MSGID
        message.date = DATE
        if module is ours:
            return message.as_bytes()  # type: ignore[no-any-return]
        with flask_mail_charsets():
            return message.as_bytes()  # type: ignore[no-any-return]


def numbered_boundaries(data: bytes) -> bytes:
    found: dict[bytes, bytes] = {}

    def number(match: re.Match[bytes]) -> bytes:
        return found.setdefault(match.group(0), b"BOUNDARY-%d" % len(found))

    return re.sub(rb"=+\d+==", number, data)


def both(flask_mail: ModuleType, build: Build, **config: Any) -> tuple[bytes, bytes]:
    theirs = numbered_boundaries(render(flask_mail, build, **config))
    mine = numbered_boundaries(render(ours, build, **config))
    return theirs, mine


def attach_files(m: ModuleType) -> Any:
    msg = m.Message("Report", recipients=["to@example.com"], body="See attached.")
    msg.attach("report.pdf", "application/pdf", b"%PDF-1.4 binary \x00\xff")
    msg.attach("notes.txt", None, "plain ascii notes")
    msg.attach(data=b"no name", content_type="application/octet-stream")
    return msg


CASES: dict[str, tuple[Build, dict[str, Any]]] = {
    "plain": (lambda m: m.Message("Hello", recipients=["to@example.com"], body="Hi"), {}),
    "no body": (lambda m: m.Message("Empty", recipients=["to@example.com"]), {}),
    "no subject": (lambda m: m.Message(recipients=["to@example.com"], body="x"), {}),
    "html only": (lambda m: m.Message("H", recipients=["t@example.com"], html="<b>hi</b>"), {}),
    "body and html": (
        lambda m: m.Message("H", recipients=["t@example.com"], body="hi", html="<b>hi</b>"),
        {},
    ),
    "alts": (
        lambda m: m.Message(
            "J", recipients=["t@example.com"], body="b", alts={"json": '{"a": 1}'}, html="<i>"
        ),
        {},
    ),
    "attachments": (attach_files, {}),
    "unicode everything": (
        lambda m: m.Message(
            "Grüße → ✓",
            sender=("Zoë", "zoe@example.com"),
            recipients=["Jürgen <juergen@example.com>"],
            cc=["Ö <cc@example.com>"],
            reply_to="Ünï <reply@example.com>",
            body="Schöne Grüße, ünicöde ←→ ✓",
            html="<p>Schöne Grüße</p>",
        ),
        {},
    ),
    "us-ascii charset": (
        lambda m: m.Message("A", recipients=["t@example.com"], body="ascii", charset="us-ascii"),
        {},
    ),
    "iso-8859-1 charset": (
        lambda m: m.Message("Café", recipients=["t@example.com"], body="café", charset="latin-1"),
        {},
    ),
    "shift_jis charset": (
        lambda m: m.Message(
            "表題",
            sender=("送信者", "from@example.com"),
            recipients=["foo@example.com"],
            reply_to="返信先 <somebody@example.com>",
            body="内容",
            charset="shift_jis",
        ),
        {},
    ),
    "cc reply-to extra headers": (
        lambda m: m.Message(
            "X",
            recipients=["t@example.com"],
            cc=["c@example.com"],
            bcc=["hidden@example.com"],
            reply_to="r@example.com",
            body="x",
            extra_headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
            mail_options=["BODY=8BITMIME"],
            rcpt_options=["NOTIFY=NEVER"],
        ),
        {},
    ),
    "unicode attachment filename": (
        lambda m: _with_attachment(m, "ünicöde ←→ ✓.txt"),
        {},
    ),
    "ascii attachment filenames": (
        lambda m: _with_attachment(m, "ünicödeß ←.→ ✓.txt"),
        {"MAIL_ASCII_ATTACHMENTS": True},
    ),
    "inline by headers (Flask-Mail style)": (
        lambda m: _with_attachment(m, "logo.png", "inline", {"Content-ID": "<logo>"}),
        {},
    ),
    "long ascii subject": (
        lambda m: m.Message("word " * 40, recipients=["t@example.com"], body="x"),
        {},
    ),
    "long unicode subject": (
        lambda m: m.Message("wörd " * 40, recipients=["t@example.com"], body="x"),
        {},
    ),
    "folded subject": (
        lambda m: m.Message("first\r\n second", recipients=["t@example.com"], body="x"),
        {},
    ),
    "idn domain": (
        lambda m: m.Message("I", recipients=["Jürgen <j@bücher.example>"], body="x"),
        {},
    ),
    "default sender tuple": (
        lambda m: m.Message("T", recipients=["t@example.com"], body="x"),
        {"MAIL_DEFAULT_SENDER": ("Support Team", "support@example.com")},
    ),
    "long lines and dots in the body": (
        lambda m: m.Message(
            "B", recipients=["t@example.com"], body=".leading dot\n" + "x" * 1200 + "\nend"
        ),
        {},
    ),
}


def _with_attachment(
    m: ModuleType, filename: str, disposition: str | None = None, headers: Any = None
) -> Any:
    msg = m.Message("A", recipients=["to@example.com"], body="hello")
    msg.attach(filename, "image/png", b"\x89PNG data", disposition, headers)
    return msg


def _html_and_attachments(m: ModuleType) -> Any:
    msg = attach_files(m)
    msg.html = "<p>See</p>"
    return msg


CASES["html and attachments"] = (_html_and_attachments, {})


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_same_input_renders_the_same_bytes(
    flask_mail: ModuleType, case: tuple[Build, dict[str, Any]]
) -> None:
    build, config = case
    theirs, mine = both(flask_mail, build, **config)
    assert mine == theirs


def test_multiple_recipients_same_set_our_order_is_stable(flask_mail: ModuleType) -> None:
    def build(m: ModuleType) -> Any:
        return m.Message(
            "Many",
            recipients=["a@example.com", "b@example.com", "c@example.com"],
            cc=["d@example.com", "e@example.com"],
            body="x",
        )

    theirs, mine = both(flask_mail, build)
    parsed_theirs = message_from_bytes(theirs, policy=policy.default)
    parsed_mine = message_from_bytes(mine, policy=policy.default)
    for name in ("To", "Cc"):
        # Flask-Mail joins a set (random order); ours keeps the given order.
        assert sorted(map(str, parsed_theirs[name].addresses)) == sorted(
            map(str, parsed_mine[name].addresses)
        )
    assert str(parsed_mine["To"]) == "a@example.com, b@example.com, c@example.com"
    assert re.sub(rb"(To|Cc): [^\r]*", b"", theirs) == re.sub(rb"(To|Cc): [^\r]*", b"", mine)


def test_long_address_list_keeps_names_with_commas_intact(flask_mail: ModuleType) -> None:
    # Deliberate difference: Flask-Mail lets the email package re-fold a long To line,
    # which decodes "=?utf-8?q?Lee=2C_Ann?=" into "Lee, Ann" unquoted: two addresses.
    def build(m: ModuleType) -> Any:
        return m.Message(
            "Names",
            recipients=[("Lee, Ann", "ann@example.com"), ("Doe, John", "john@example.com")],
            body="x",
        )

    theirs, mine = both(flask_mail, build)
    to_theirs = message_from_bytes(theirs, policy=policy.default)["To"]
    to_mine = message_from_bytes(mine, policy=policy.default)["To"]
    assert len(to_theirs.addresses) > 2  # Flask-Mail: "Lee", "Ann <ann@...>", ...
    header = mine.split(b"\r\n\r\n")[0].decode()
    assert (
        "To: =?utf-8?q?Lee=2C_Ann?= <ann@example.com>, =?utf-8?q?Doe=2C_John?=\r\n"
        " <john@example.com>\r\n"
    ) in header
    assert {a.addr_spec for a in to_mine.addresses} == {"ann@example.com", "john@example.com"}


def test_non_ascii_str_attachment_is_utf8(flask_mail: ModuleType) -> None:
    # Deliberate difference: Flask-Mail encodes str data as Latin-1 without saying so
    # (and as escape sequences beyond Latin-1); ours sends UTF-8 with charset=utf-8.
    def build(m: ModuleType) -> Any:
        msg = m.Message("A", recipients=["to@example.com"], body="x")
        msg.attach("euro.txt", "text/plain", "5 € café")
        return msg

    theirs, mine = both(flask_mail, build)
    part_theirs = next(message_from_bytes(theirs, policy=policy.default).iter_attachments())
    part_mine = next(message_from_bytes(mine, policy=policy.default).iter_attachments())
    assert part_theirs.get_payload(decode=True) == b"5 \\u20ac caf\xe9"  # type: ignore[attr-defined]
    assert part_mine.get_content() == "5 € café"  # type: ignore[attr-defined]


def test_html_given_in_alts_is_kept(flask_mail: ModuleType) -> None:
    # Deliberate difference: Flask-Mail's constructor sets ``html=None`` after copying
    # ``alts``, which drops an "html" alternative given there.
    def build(m: ModuleType) -> Any:
        return m.Message("J", recipients=["t@example.com"], body="b", alts={"html": "<i>"})

    theirs, mine = both(flask_mail, build)
    assert b"text/html" not in theirs
    assert b"Content-Type: text/html" in mine


def test_extra_header_replaces_instead_of_repeating(flask_mail: ModuleType) -> None:
    # Deliberate difference: Flask-Mail appends, leaving two Date (or Message-ID) headers.
    def build(m: ModuleType) -> Any:
        return m.Message(
            "D",
            recipients=["t@example.com"],
            body="x",
            extra_headers={"Date": "Mon, 01 Jan 2024 00:00:00 +0000"},
        )

    theirs, mine = both(flask_mail, build)
    assert theirs.count(b"\r\nDate: ") == 2
    assert mine.count(b"\r\nDate: ") == 1
    assert b"\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n" in mine


def test_sanitize_functions_match(flask_mail: ModuleType) -> None:
    addresses: list[Any] = [
        "to@example.com",
        "Name <to@example.com>",
        "ÄÜÖ → ✓ <from@example.com>",
        ("Jürgen", "j@bücher.example"),
        ("", "x@example.com"),
        "nodomain",
        "ünicöde",
    ]

    def outcome(module: ModuleType, address: Any, encoding: str) -> Any:
        try:
            return module.sanitize_address(address, encoding)
        except UnicodeError as exc:  # the same failures, too
            return type(exc)

    for address in addresses:
        for encoding in ("utf-8", "iso-8859-1", "shift_jis"):
            expected = outcome(flask_mail, address, encoding)
            assert outcome(ours, address, encoding) == expected, (address, encoding)
    # Neither can put a non-ASCII local part in a header (that needs RFC 6532).
    for module in (ours, flask_mail):
        with pytest.raises(UnicodeEncodeError):
            module.sanitize_address("üser@example.com")
    for subject in ("plain", "Grüße", "表題"):
        assert ours.sanitize_subject(subject) == flask_mail.sanitize_subject(subject)
    assert ours.sanitize_addresses(["a@example.com"]) == flask_mail.sanitize_addresses(
        ["a@example.com"]
    )
    assert ours.force_text(b"bytes") == flask_mail.force_text(b"bytes") == "bytes"
    with pytest.raises(UnicodeDecodeError, match="You passed in"):
        ours.force_text(b"\xff")


def test_public_names_of_flask_mail_exist(flask_mail: ModuleType) -> None:
    public = {
        name
        for name in vars(flask_mail)
        if not name.startswith("_")
        and not isinstance(getattr(flask_mail, name), ModuleType)
        and getattr(getattr(flask_mail, name), "__module__", "flask_mail") == "flask_mail"
    }
    public |= {"Header", "signals", "email_dispatched"}
    missing = {name for name in public if not hasattr(ours, name)}
    assert missing == set(), missing


def test_same_bytes_on_the_wire_and_fewer_connections(
    flask_mail: ModuleType, smtpd: SMTPServer
) -> None:
    received: dict[str, list[bytes]] = {}
    for module in (flask_mail, ours):
        app = make_app(module, TESTING=False, MAIL_SERVER=smtpd.host, MAIL_PORT=smtpd.port)
        before = len(smtpd.messages)
        connections = smtpd.handler.connections
        with app.app_context():
            mail = app.extensions["mail"]
            for number in range(3):
                message = _html_and_attachments(module)
                message.subject = f"wire {number}"
                message.body = ".a line with a leading dot\nand more"
                message.msgId, message.date = MSGID, DATE
                if module is ours:
                    mail.send(message)
                else:
                    with flask_mail_charsets():
                        mail.send(message)
        received[module.__name__] = [
            numbered_boundaries(m.original_content) for m in smtpd.messages[before:]
        ]
        received[module.__name__ + " connections"] = [  # type: ignore[list-item]
            smtpd.handler.connections - connections  # type: ignore[list-item]
        ]
    assert received["smtp_backends.flask"] == received["flask_mail"]
    assert received["flask_mail connections"] == [3]  # one per mail.send()
    assert received["smtp_backends.flask connections"] == [1]  # pooled


# --------------------------------------------------------------------------- architecture


def test_adapter_uses_only_the_public_core_api() -> None:
    imported = set()
    for path in (ROOT / "smtp_backends" / "flask").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    core = {name for name in imported if name.startswith("smtp_backends")}
    # The public API, the sending layer, and (for queued sending) the Celery adapter.
    assert core == {
        "smtp_backends",
        "smtp_backends.addresses",
        "smtp_backends.mailer",
        "smtp_backends.settings",
        "smtp_backends.celery",
    }


def test_core_imports_without_flask_and_the_registry_is_untouched() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["flask"] = None  # as if Flask were not installed
        import smtp_backends, smtp_backends.bridge, smtp_backends.pool
        try:
            import smtp_backends.flask
        except ImportError:
            print("flask adapter needs flask")
        del sys.modules["flask"]
        import email.charset
        before = dict(email.charset.CHARSETS)
        import smtp_backends.flask as adapter
        assert email.charset.CHARSETS == before, "the adapter changed email.charset"
        assert adapter.sanitize_subject("sübject") == "=?utf-8?q?s=C3=BCbject?="
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "flask adapter needs flask"
