"""Flask-Mail 0.10.0's own test suite and documented examples, run against smtp_backends.flask.

Part 1 is Flask-Mail's test suite (``tests/conftest.py``, ``test_initialization.py``,
``test_mail.py``, ``test_connection.py`` and ``test_message.py`` of the 0.10.0 release),
ported with one change a switching user would make: ``from flask_mail import`` became
``from smtp_backends.flask import``. speaklater (used by one test for a lazy string) is
replaced by an equivalent two-line class so the suite needs no extra package; pytest
fixtures are renamed ``fm_app``/``mail`` to avoid clashing with this suite's own.

Part 2 runs the examples of Flask-Mail's README and documentation (``docs/index.md``)
verbatim, but for the import and for placeholders such as ``your_mail_server`` that name
a real server, against a local server.
"""

from __future__ import annotations

import base64
import email
import logging
import re
import textwrap
import time
from collections.abc import Callable, Iterator
from email.header import Header as StdlibHeader
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("flask")

from flask import Flask

from smtp_backends.flask import BadHeaderError, Header, Mail, Message, sanitize_address
from tests.flask_app import no_bridge, wait_for
from tests.servers import PASSWORD, USERNAME, SMTPServer

__all__ = ("no_bridge",)


def make_lazy_string(function: Callable[..., str], *args: Any) -> Any:
    """speaklater.make_lazy_string: an object whose str() calls ``function(*args)``."""

    class LazyString:
        def __str__(self) -> str:
            return function(*args)

    return LazyString()


# =========================================================================== Part 1
# Flask-Mail 0.10.0 tests/conftest.py


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(
        {
            "TESTING": True,
            "MAIL_DEFAULT_SENDER": "support@example.com",
        }
    )

    with app.test_request_context():
        yield app


@pytest.fixture
def mail(app: Flask) -> Mail:
    return Mail(app)


# --------------------------------------------------------------------------- test_initialization.py


def test_init_mail(app: Any, mail: Any) -> None:
    new_mail = mail.init_mail(app.config, app.debug, app.testing)
    assert mail.state.__dict__ == new_mail.__dict__


# --------------------------------------------------------------------------- test_mail.py


def test_send(app: Any, mail: Any) -> None:
    with mail.record_messages() as outbox:
        msg = Message(subject="testing", recipients=["tester@example.com"], body="test")
        mail.send(msg)
        assert msg.date is not None
        assert len(outbox) == 1
        assert msg.sender == app.extensions["mail"].default_sender


def test_mail_send_message(app: Any, mail: Any) -> None:  # test_mail.py::test_send_message
    with mail.record_messages() as outbox:
        mail.send_message(subject="testing", recipients=["tester@example.com"], body="test")
        assert len(outbox) == 1
        msg = outbox[0]
        assert msg.subject == "testing"
        assert msg.recipients == ["tester@example.com"]
        assert msg.body == "test"
        assert msg.sender == app.extensions["mail"].default_sender


# --------------------------------------------------------------------------- test_connection.py


def test_send_message(app: Any, mail: Any) -> None:
    with mail.record_messages() as outbox:
        with mail.connect() as conn:
            conn.send_message(subject="testing", recipients=["to@example.com"], body="testing")
        assert len(outbox) == 1
        sent_msg = outbox[0]
        assert sent_msg.sender == app.extensions["mail"].default_sender


def test_send_single(app: Any, mail: Any) -> None:
    with mail.record_messages() as outbox:
        with mail.connect() as conn:
            msg = Message(subject="testing", recipients=["to@example.com"], body="testing")
            conn.send(msg)
        assert len(outbox) == 1
        sent_msg = outbox[0]
        assert sent_msg.subject == "testing"
        assert sent_msg.recipients == ["to@example.com"]
        assert sent_msg.body == "testing"
        assert sent_msg.sender == app.extensions["mail"].default_sender


def test_send_many(app: Any, mail: Any) -> None:
    with mail.record_messages() as outbox:
        with mail.connect() as conn:
            for _i in range(100):
                msg = Message(subject="testing", recipients=["to@example.com"], body="testing")
                conn.send(msg)
        assert len(outbox) == 100
        sent_msg = outbox[0]
        assert sent_msg.sender == app.extensions["mail"].default_sender


def test_connection_send_without_sender(app: Any, mail: Any) -> None:
    app.extensions["mail"].default_sender = None
    msg = Message(subject="testing", recipients=["to@example.com"], body="testing")
    with mail.connect() as conn, pytest.raises(AssertionError):
        conn.send(msg)


def test_connection_send_without_recipients(mail: Any) -> None:
    msg = Message(subject="testing", recipients=[], body="testing")
    with mail.connect() as conn, pytest.raises(AssertionError):
        conn.send(msg)


def test_connection_bad_header_subject(mail: Any) -> None:
    msg = Message(subject="testing\n\r", body="testing", recipients=["to@example.com"])
    with mail.connect() as conn, pytest.raises(BadHeaderError):
        conn.send(msg)


def test_sendmail_with_ascii_recipient(mail: Any) -> None:
    with mail.connect() as conn, mock.patch.object(conn, "host") as host:
        msg = Message(
            subject="testing",
            sender="from@example.com",
            recipients=["to@example.com"],
            body="testing",
        )
        conn.send(msg)

        host.sendmail.assert_called_once_with(
            "from@example.com",
            ["to@example.com"],
            msg.as_bytes(),
            msg.mail_options,
            msg.rcpt_options,
        )


def test_sendmail_with_non_ascii_recipient(mail: Any) -> None:
    with mail.connect() as conn, mock.patch.object(conn, "host") as host:
        msg = Message(
            subject="testing",
            sender="from@example.com",
            recipients=["ÄÜÖ → ✓ <to@example.com>"],
            body="testing",
        )
        conn.send(msg)

        host.sendmail.assert_called_once_with(
            "from@example.com",
            ["=?utf-8?b?w4TDnMOWIOKGkiDinJM=?= <to@example.com>"],
            msg.as_bytes(),
            msg.mail_options,
            msg.rcpt_options,
        )


def test_sendmail_with_ascii_body(mail: Any) -> None:
    with mail.connect() as conn, mock.patch.object(conn, "host") as host:
        msg = Message(
            subject="testing",
            sender="from@example.com",
            recipients=["to@example.com"],
            body="body",
        )
        conn.send(msg)

        host.sendmail.assert_called_once_with(
            "from@example.com",
            ["to@example.com"],
            msg.as_bytes(),
            msg.mail_options,
            msg.rcpt_options,
        )


def test_sendmail_with_non_ascii_body(mail: Any) -> None:
    with mail.connect() as conn, mock.patch.object(conn, "host") as host:
        msg = Message(
            subject="testing",
            sender="from@example.com",
            recipients=["to@example.com"],
            body="Öö",
        )

        conn.send(msg)

        host.sendmail.assert_called_once_with(
            "from@example.com",
            ["to@example.com"],
            msg.as_bytes(),
            msg.mail_options,
            msg.rcpt_options,
        )


# --------------------------------------------------------------------------- test_message.py


def test_init_message(app: Any, mail: Any) -> None:
    msg = Message(subject="subject", recipients=["to@example.com"])
    assert msg.sender == app.extensions["mail"].default_sender
    assert msg.recipients == ["to@example.com"]


def test_init_message_recipients(app: Any, mail: Any) -> None:
    msg = Message(subject="subject")
    assert msg.recipients == []

    msg2 = Message(subject="subject")
    msg2.add_recipient("somebody@here.com")
    assert len(msg2.recipients) == 1


def test_esmtp_options_properly_initialized(app: Any, mail: Any) -> None:
    msg = Message(subject="subject")
    assert msg.mail_options == []
    assert msg.rcpt_options == []

    msg = Message(subject="subject", mail_options=["BODY=8BITMIME"])
    assert msg.mail_options == ["BODY=8BITMIME"]

    msg2 = Message(subject="subject", rcpt_options=["NOTIFY=SUCCESS"])
    assert msg2.rcpt_options == ["NOTIFY=SUCCESS"]


def test_sendto_properly_set(app: Any, mail: Any) -> None:
    msg = Message(
        subject="subject",
        recipients=["somebody@here.com"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
    )
    assert len(msg.send_to) == 3
    msg.add_recipient("cc@example.com")
    assert len(msg.send_to) == 3


def test_add_recipient(app: Any, mail: Any) -> None:
    msg = Message("testing")
    msg.add_recipient("to@example.com")
    assert msg.recipients == ["to@example.com"]


def test_sender_as_tuple(app: Any, mail: Any) -> None:
    msg = Message(subject="testing", sender=("tester", "tester@example.com"))
    assert msg.sender == "tester <tester@example.com>"


def test_default_sender_as_tuple(app: Any, mail: Any) -> None:
    app.extensions["mail"].default_sender = ("tester", "tester@example.com")
    msg = Message(subject="testing")
    assert msg.sender == "tester <tester@example.com>"


def test_reply_to(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing",
        recipients=["to@example.com"],
        sender="spammer <spammer@example.com>",
        reply_to="somebody <somebody@example.com>",
        body="testing",
    )
    response = msg.as_string()

    h = Header("Reply-To: {}".format(sanitize_address("somebody <somebody@example.com>")))
    assert h.encode() in str(response)


def test_send_without_sender(app: Any, mail: Any) -> None:
    app.extensions["mail"].default_sender = None
    msg = Message(subject="testing", recipients=["to@example.com"], body="testing")
    with pytest.raises(AssertionError):
        mail.send(msg)


def test_send_without_recipients(app: Any, mail: Any) -> None:
    app.extensions["mail"].default_sender = None
    msg = Message(subject="testing", recipients=[], body="testing")
    with pytest.raises(AssertionError):
        mail.send(msg)


def test_bcc(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="testing",
        recipients=["to@example.com"],
        body="testing",
        bcc=["tosomeoneelse@example.com"],
    )
    response = msg.as_string()
    assert "tosomeoneelse@example.com" not in str(response)


def test_cc(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="testing",
        recipients=["to@example.com"],
        body="testing",
        cc=["tosomeoneelse@example.com"],
    )
    response = msg.as_string()
    assert "Cc: tosomeoneelse@example.com" in str(response)


def test_attach(app: Any, mail: Any) -> None:
    msg = Message(subject="testing", recipients=["to@example.com"], body="testing")
    msg.attach(data=b"this is a test", content_type="text/plain")
    a = msg.attachments[0]
    assert a.filename is None
    assert a.disposition == "attachment"
    assert a.content_type == "text/plain"
    assert a.data == b"this is a test"


def test_bad_header_subject(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing\r\n",
        sender="from@example.com",
        body="testing",
        recipients=["to@example.com"],
    )
    with pytest.raises(BadHeaderError):
        mail.send(msg)


def test_multiline_subject(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing\r\n testing\r\n testing \r\n \ttesting",
        sender="from@example.com",
        body="testing",
        recipients=["to@example.com"],
    )
    mail.send(msg)
    response = msg.as_string()
    assert "From: from@example.com" in str(response)
    assert "testing\r\n testing\r\n testing \r\n \ttesting" in str(response)


def test_bad_multiline_subject(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing\r\n testing\r\n ",
        sender="from@example.com",
        body="testing",
        recipients=["to@example.com"],
    )
    with pytest.raises(BadHeaderError):
        mail.send(msg)

    msg = Message(
        subject="testing\r\n testing\r\n\t",
        sender="from@example.com",
        body="testing",
        recipients=["to@example.com"],
    )
    with pytest.raises(BadHeaderError):
        mail.send(msg)

    msg = Message(
        subject="testing\r\n testing\r\n\n",
        sender="from@example.com",
        body="testing",
        recipients=["to@example.com"],
    )
    with pytest.raises(BadHeaderError):
        mail.send(msg)


def test_bad_header_sender(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing",
        sender="from@example.com\r\n",
        recipients=["to@example.com"],
        body="testing",
    )

    assert "From: from@example.com" in msg.as_string()


def test_bad_header_reply_to(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing",
        sender="from@example.com",
        reply_to="evil@example.com\r",
        recipients=["to@example.com"],
        body="testing",
    )

    assert "From: from@example.com" in msg.as_string()
    assert "To: to@example.com" in msg.as_string()
    assert "Reply-To: evil@example.com" in msg.as_string()


def test_bad_header_recipient(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing",
        sender="from@example.com",
        recipients=["to@example.com", "to\r\n@example.com"],
        body="testing",
    )

    assert "To: to@example.com" in msg.as_string()


def test_emails_are_sanitized(app: Any, mail: Any) -> None:
    msg = Message(
        subject="testing",
        sender="sender\r\n@example.com",
        reply_to="reply_to\r\n@example.com",
        recipients=["recipient\r\n@example.com"],
    )
    assert "sender@example.com" in msg.as_string()
    assert "reply_to@example.com" in msg.as_string()
    assert "recipient@example.com" in msg.as_string()


def test_plain_message(app: Any, mail: Any) -> None:
    plain_text = "Hello Joe,\nHow are you?"
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body=plain_text,
    )
    assert plain_text == msg.body
    assert "Content-Type: text/plain" in msg.as_string()


def test_message_str(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body="some plain text",
    )
    assert msg.as_string() == str(msg)


def test_plain_message_with_attachments(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body="hello",
    )

    msg.attach(data=b"this is a test", content_type="text/plain")

    assert "Content-Type: multipart/mixed" in msg.as_string()


def test_plain_message_with_ascii_attachment(app: Any, mail: Any) -> None:
    msg = Message(subject="subject", recipients=["to@example.com"], body="hello")

    msg.attach(data=b"this is a test", content_type="text/plain", filename="test doc.txt")

    assert 'Content-Disposition: attachment; filename="test doc.txt"' in msg.as_string()


def test_plain_message_with_unicode_attachment(app: Any, mail: Any) -> None:
    msg = Message(subject="subject", recipients=["to@example.com"], body="hello")

    msg.attach(
        data=b"this is a test",
        content_type="text/plain",
        filename="ünicöde ←→ ✓.txt",
    )

    parsed = email.message_from_string(msg.as_string())

    assert re.sub(r"\s+", " ", parsed.get_payload()[1].get("Content-Disposition")) in [
        "attachment; filename*=\"UTF8''%C3%BCnic%C3%B6de%20%E2%86%90%E2%86%92%20%E2%9C%93.txt\"",
        "attachment; filename*=UTF8''%C3%BCnic%C3%B6de%20%E2%86%90%E2%86%92%20%E2%9C%93.txt",
    ]


def test_plain_message_with_ascii_converted_attachment(app: Any, mail: Any) -> None:
    mail.state.ascii_attachments = True
    msg = Message(subject="subject", recipients=["to@example.com"], body="hello")

    msg.attach(
        data=b"this is a test",
        content_type="text/plain",
        filename="ünicödeß ←.→ ✓.txt",
    )

    assert 'Content-Disposition: attachment; filename="unicode . .txt"' in msg.as_string()


def test_html_message(app: Any, mail: Any) -> None:
    html_text = "<p>Hello World</p>"
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        html=html_text,
    )

    assert html_text == msg.html
    assert "Content-Type: multipart/alternative" in msg.as_string()


def test_json_message(app: Any, mail: Any) -> None:
    json_text = '{"msg": "Hello World!}'
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        alts={"json": json_text},
    )

    assert json_text == msg.alts["json"]
    assert "Content-Type: multipart/alternative" in msg.as_string()


def test_html_message_with_attachments(app: Any, mail: Any) -> None:
    html_text = "<p>Hello World</p>"
    plain_text = "Hello World"
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body=plain_text,
        html=html_text,
    )
    msg.attach(data=b"this is a test", content_type="text/plain")

    assert html_text == msg.html
    assert "Content-Type: multipart/alternative" in msg.as_string()

    parsed = email.message_from_string(msg.as_string())
    assert len(parsed.get_payload()) == 2

    body, attachment = parsed.get_payload()
    assert len(body.get_payload()) == 2

    plain, html = body.get_payload()
    assert plain.get_payload() == plain_text
    assert html.get_payload() == html_text
    assert base64.b64decode(attachment.get_payload()) == b"this is a test"


def test_date_header(app: Any, mail: Any) -> None:
    before = time.time()
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body="hello",
        date=time.time(),
    )
    after = time.time()

    assert before <= msg.date <= after  # type: ignore[operator]
    dateFormatted = email.utils.formatdate(msg.date, localtime=True)
    assert "Date: " + dateFormatted in msg.as_string()


def test_msgid_header(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body="hello",
    )

    # see RFC 5322 section 3.6.4. for the exact format specification
    r = re.compile(r"<\S+@\S+>").match(msg.msgId)
    assert r is not None
    assert "Message-ID: " + msg.msgId in msg.as_string()


def test_unicode_sender_tuple(app: Any, mail: Any) -> None:
    msg = Message(
        subject="subject",
        sender=("ÄÜÖ → ✓", "from@example.com>"),
        recipients=["to@example.com"],
    )

    assert "From: =?utf-8?b?w4TDnMOWIOKGkiDinJM=?= <from@example.com>" in msg.as_string()


def test_unicode_sender(app: Any, mail: Any) -> None:
    msg = Message(
        subject="subject",
        sender="ÄÜÖ → ✓ <from@example.com>>",
        recipients=["to@example.com"],
    )

    assert "From: =?utf-8?b?w4TDnMOWIOKGkiDinJM=?= <from@example.com>" in msg.as_string()


def test_unicode_headers(app: Any, mail: Any) -> None:
    msg = Message(
        subject="subject",
        sender="ÄÜÖ → ✓ <from@example.com>",
        recipients=["Ä <t1@example.com>", "Ü <t2@example.com>"],
        cc=["Ö <cc@example.com>"],
    )

    response = msg.as_string()
    a1 = sanitize_address("Ä <t1@example.com>")
    a2 = sanitize_address("Ü <t2@example.com>")
    h1_a = Header(f"To: {a1}, {a2}")
    h1_b = Header(f"To: {a2}, {a1}")
    h2 = Header("From: {}".format(sanitize_address("ÄÜÖ → ✓ <from@example.com>")))
    h3 = Header("Cc: {}".format(sanitize_address("Ö <cc@example.com>")))

    # Ugly, but there's no guaranteed order of the recipients in the header
    try:
        assert h1_a.encode() in response
    except AssertionError:
        assert h1_b.encode() in response

    assert h2.encode() in response
    assert h3.encode() in response


def test_unicode_subject(app: Any, mail: Any) -> None:
    msg = Message(
        subject=make_lazy_string(lambda a: a, "sübject"),
        sender="from@example.com",
        recipients=["to@example.com"],
    )
    assert "=?utf-8?q?s=C3=BCbject?=" in msg.as_string()


def test_extra_headers(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["to@example.com"],
        body="hello",
        extra_headers={"X-Extra-Header": "Yes"},
    )
    assert "X-Extra-Header: Yes" in msg.as_string()


def test_message_charset(app: Any, mail: Any) -> None:
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["foo@bar.com"],
        charset="us-ascii",
    )

    # ascii body
    msg.body = "normal ascii text"
    assert 'Content-Type: text/plain; charset="us-ascii"' in msg.as_string()

    # ascii html
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["foo@bar.com"],
        charset="us-ascii",
    )
    msg.body = None
    msg.html = "<html><h1>hello</h1></html>"
    assert 'Content-Type: text/html; charset="us-ascii"' in msg.as_string()

    # unicode body
    msg = Message(sender="from@example.com", subject="subject", recipients=["foo@bar.com"])
    msg.body = "ünicöde ←→ ✓"
    assert 'Content-Type: text/plain; charset="utf-8"' in msg.as_string()

    # unicode body and unicode html
    msg = Message(sender="from@example.com", subject="subject", recipients=["foo@bar.com"])
    msg.html = "ünicöde ←→ ✓"
    assert 'Content-Type: text/plain; charset="utf-8"' in msg.as_string()
    assert 'Content-Type: text/html; charset="utf-8"' in msg.as_string()

    # unicode body and attachments
    msg = Message(sender="from@example.com", subject="subject", recipients=["foo@bar.com"])
    msg.html = None
    msg.attach(data=b"foobar", content_type="text/csv")
    assert 'Content-Type: text/plain; charset="utf-8"' in msg.as_string()

    # unicode sender as tuple
    msg = Message(
        sender=("送信者", "from@example.com"),
        subject="表題",
        recipients=["foo@bar.com"],
        reply_to="返信先 <somebody@example.com>",
        charset="shift_jis",
    )  # japanese
    msg.body = "内容"
    assert "From: =?iso-2022-jp?" in msg.as_string()
    assert "From: =?utf-8?" not in msg.as_string()
    assert "Subject: =?iso-2022-jp?" in msg.as_string()
    assert "Subject: =?utf-8?" not in msg.as_string()
    assert "Reply-To: =?iso-2022-jp?" in msg.as_string()
    assert "Reply-To: =?utf-8?" not in msg.as_string()
    assert 'Content-Type: text/plain; charset="iso-2022-jp"' in msg.as_string()

    # unicode subject sjis
    msg = Message(
        sender="from@example.com",
        subject="表題",
        recipients=["foo@bar.com"],
        charset="shift_jis",
    )  # japanese
    msg.body = "内容"
    assert "Subject: =?iso-2022-jp?" in msg.as_string()
    assert 'Content-Type: text/plain; charset="iso-2022-jp"' in msg.as_string()

    # unicode subject utf-8
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["foo@bar.com"],
        charset="utf-8",
    )
    msg.body = "内容"
    assert "Subject: subject" in msg.as_string()
    assert 'Content-Type: text/plain; charset="utf-8"' in msg.as_string()

    # ascii subject
    msg = Message(
        sender="from@example.com",
        subject="subject",
        recipients=["foo@bar.com"],
        charset="us-ascii",
    )
    msg.body = "normal ascii text"
    assert "Subject: =?us-ascii?" not in msg.as_string()
    assert 'Content-Type: text/plain; charset="us-ascii"' in msg.as_string()

    # default charset
    msg = Message(sender="from@example.com", subject="subject", recipients=["foo@bar.com"])
    msg.body = "normal ascii text"
    assert "Subject: =?" not in msg.as_string()
    assert 'Content-Type: text/plain; charset="utf-8"' in msg.as_string()


def test_empty_subject_header(app: Any, mail: Any) -> None:
    msg = Message(sender="from@example.com", recipients=["foo@bar.com"])
    msg.body = "normal ascii text"
    mail.send(msg)
    assert "Subject:" not in msg.as_string()


def test_header_is_the_stdlib_class() -> None:
    # ``from flask_mail import Header`` was email.header.Header, re-exported.
    assert Header is StdlibHeader


# =========================================================================== Part 2
# Flask-Mail's README.md and docs/index.md examples, verbatim but for the import.

README_EXAMPLE = """\
from flask import Flask
from flask_mail import Mail, Message

app = Flask(__name__)
app.config['MAIL_SERVER'] = 'your_mail_server'
app.config['MAIL_PORT'] = 587
app.config['MAIL_USE_TLS'] = True
app.config['MAIL_USE_SSL'] = False
app.config['MAIL_USERNAME'] = 'your_username'
app.config['MAIL_PASSWORD'] = 'your_password'
app.config['MAIL_DEFAULT_SENDER'] = 'your_email@example.com'

mail = Mail(app)

@app.route('/')
def send_email():
  msg = Message(
    'Hello',
    recipients=['recipient@example.com'],
    body='This is a test email sent from Flask-Mail!'
  )
  mail.send(msg)
  return 'Email sent succesfully!'
"""

DOCS_EXTENSION_INSTANCE = """\
from flask import Flask
from flask_mail import Mail

app = Flask(__name__)
mail = Mail(app)
"""

DOCS_INIT_APP = """\
mail = Mail()

app = Flask(__name__)
mail.init_app(app)
"""

DOCS_MESSAGE_IN_VIEW = """\
from flask_mail import Message

@app.route("/")
def index():
    msg = Message(
        subject="Hello",
        sender="from@example.com",
        recipients=["to@example.com"],
    )
"""

DOCS_RECIPIENTS = """\
msg.recipients = ["you@example.com"]
msg.add_recipient("somebodyelse@example.com")
"""

DOCS_DEFAULT_SENDER = """\
msg = Message(
    subject="Hello",
    recipients=["to@example.com"],
)
"""

DOCS_SENDER_TUPLE = """\
msg = Message(
    subject="Hello",
    sender=("Me", "me@example.com"),
)
assert msg.sender == "Me <me@example.com>"
"""

DOCS_BODY_HTML = """\
msg.body = "testing"
msg.html = "<b>testing</b>"
"""

DOCS_SEND = """\
mail.send(msg)
"""

DOCS_BULK = """\
with mail.connect() as conn:
    for user in users:
        msg = Message(
            subject=f"hello, {user.name}",
            body="...",
            recipients=[user.email],
        )
        conn.send(msg)
"""

DOCS_ATTACHMENT = """\
with app.open_resource("image.png") as fp:
    msg.attach("image.png", "image/png", fp.read())
"""

DOCS_RECORD_MESSAGES = """\
with mail.record_messages() as outbox:
    mail.send_message(
        subject="testing",
        body="test",
        recipients=emails,
    )
    assert len(outbox) == 1
    assert outbox[0].subject == "testing"
"""

DOCS_SIGNAL = """\
def log_message(message, app):
    app.logger.debug(message.subject)

email_dispatched.connect(log_message)
"""


def switch(source: str) -> str:
    """The one change a user makes: the import."""
    return source.replace("from flask_mail import", "from smtp_backends.flask import")


def run(source: str, namespace: dict[str, Any]) -> None:
    exec(compile(switch(textwrap.dedent(source)), "<example>", "exec"), namespace)


def test_readme_example(
    smtpd_starttls: SMTPServer, ca_bundle_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The placeholders name a STARTTLS server with a login: ours, trusted through the
    # default trust store (SSL_CERT_FILE), as a real server's certificate would be.
    source = (
        README_EXAMPLE.replace("'your_mail_server'", repr(smtpd_starttls.host))
        .replace("= 587", f"= {smtpd_starttls.port}")
        .replace("'your_username'", repr(USERNAME))
        .replace("'your_password'", repr(PASSWORD))
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle_path))
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    run(source, namespace)
    client = namespace["app"].test_client()
    assert client.get("/").text == "Email sent succesfully!"
    assert client.get("/").text == "Email sent succesfully!"
    received = smtpd_starttls.messages
    assert [(m.tls, m.auth_login, m.mail_from) for m in received] == [
        (True, USERNAME, "your_email@example.com")
    ] * 2
    assert received[0].message["Subject"] == "Hello"
    assert smtpd_starttls.handler.connections == 1  # Flask-Mail would have opened two


def test_docs_examples(smtpd: SMTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    run(DOCS_EXTENSION_INSTANCE, namespace)
    assert namespace["app"].extensions["mail"] is namespace["mail"].state
    run(DOCS_INIT_APP, namespace)
    app: Flask = namespace["app"]
    # "Load email configuration" before init_app: the docs' advice.
    app.config.update(
        MAIL_SERVER=smtpd.host, MAIL_PORT=smtpd.port, MAIL_DEFAULT_SENDER="docs@example.com"
    )
    app.root_path = str(tmp_path)
    (tmp_path / "image.png").write_bytes(b"\x89PNG fake")
    namespace["mail"].init_app(app)

    run(DOCS_MESSAGE_IN_VIEW, namespace)
    with app.test_request_context():
        namespace["index"]()  # the view builds a message (and returns nothing)
        run(DOCS_DEFAULT_SENDER, namespace)
        assert namespace["msg"].sender == "docs@example.com"
        run(DOCS_RECIPIENTS, namespace)
        run(DOCS_BODY_HTML, namespace)
        run(DOCS_ATTACHMENT, namespace)
        run(DOCS_SEND, namespace)
        run(DOCS_SENDER_TUPLE, namespace)
        namespace["users"] = [
            SimpleNamespace(name=f"user{n}", email=f"user{n}@example.com") for n in range(3)
        ]
        run(DOCS_BULK, namespace)
    first = smtpd.messages[0]
    assert first.rcpt_tos == ["you@example.com", "somebodyelse@example.com"]
    parsed = first.message
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
    ]
    assert [m.message["Subject"] for m in smtpd.messages[1:]] == [
        "hello, user0",
        "hello, user1",
        "hello, user2",
    ]
    assert smtpd.handler.connections == 1

    app.config["TESTING"] = True
    app.extensions["mail"].suppress = True
    run("from flask_mail import email_dispatched", namespace)
    run(DOCS_SIGNAL, namespace)
    namespace["emails"] = ["a@example.com", "b@example.com"]
    try:
        with app.app_context(), caplog.at_level(logging.DEBUG, logger=app.logger.name):
            app.logger.setLevel(logging.DEBUG)
            run(DOCS_RECORD_MESSAGES, namespace)
    finally:
        namespace["email_dispatched"].disconnect(namespace["log_message"])
    assert "testing" in [r.getMessage() for r in caplog.records if r.name == app.logger.name]
    assert len(smtpd.messages) == 4  # the recorded message was suppressed
    assert wait_for(lambda: smtpd.handler.open_connections == 1)
