"""The examples of aiosmtplib's "The SMTP Client Class" page, run against smtp_backends.

Each example below is the page's code block copied verbatim. The only changes made before
running it are the ones any user switching libraries would make:

* the module name ``aiosmtplib`` becomes ``smtp_backends`` where it names the module (an
  import or ``aiosmtplib.SMTP``), not inside message text such as "Sent via aiosmtplib";
* ``port=1025`` becomes the port of a local test server (127.0.0.1 is kept);
* for the smtp.gmail.com examples, host and port point at a local implicit-TLS or STARTTLS
  server whose certificate is trusted through ``SSL_CERT_FILE`` (read by
  :func:`ssl.create_default_context`, i.e. the library's own default trust store).

``testcode`` examples call ``asyncio.run`` themselves, so their tests are synchronous (no
event loop is running). The two ``code-block`` snippets use top-level ``await``: they are
compiled with ``PyCF_ALLOW_TOP_LEVEL_AWAIT`` and awaited on the test's loop, unchanged.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import re
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import smtp_backends
from integrations.requirements import missing
from tests.sdists import UnavailableError, aiosmtplib_source
from tests.servers import SMTPServer


def doc_page() -> Path:
    """The page these examples come from: ``docs/client.rst`` of the installed aiosmtplib.

    It is read from aiosmtplib's source distribution (fetched at test time, see
    :mod:`tests.sdists`); when that cannot be had, the check fails under CI and skips
    elsewhere (``integrations/requirements.py``'s rule).
    """
    try:
        page = aiosmtplib_source() / "docs" / "client.rst"
    except UnavailableError as exc:
        missing(f"aiosmtplib's documentation sources are unavailable: {exc}")
    if not page.is_file():
        missing(f"aiosmtplib's sdist holds no {page.name} page (at {page})")
    return page


EXAMPLE_CONNECT = """\
import asyncio

from aiosmtplib import SMTP


client = SMTP()
asyncio.run(client.connect(hostname="127.0.0.1", port=1025))
"""

EXAMPLE_TLS = """\
smtp_client = aiosmtplib.SMTP(hostname="smtp.gmail.com", port=465, use_tls=True)
await smtp_client.connect()
"""

EXAMPLE_STARTTLS = """\
smtp_client = aiosmtplib.SMTP(
    hostname="smtp.gmail.com",
    port=587,
    start_tls=False,
    use_tls=False,
)
await smtp_client.connect()
await smtp_client.starttls()
"""

EXAMPLE_CONTEXT_MANAGER = """\
import asyncio
from email.message import EmailMessage

from aiosmtplib import SMTP


async def say_hello():
    message = EmailMessage()
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Subject"] = "Hello World!"
    message.set_content("Sent via aiosmtplib")

    smtp_client = SMTP(hostname="127.0.0.1", port=1025)
    async with smtp_client:
        await smtp_client.send_message(message)

asyncio.run(say_hello())
"""

EXAMPLE_SEND_MESSAGE = """\
import asyncio
from email.mime.text import MIMEText

from aiosmtplib import SMTP


mime_message = MIMEText("Sent via aiosmtplib")
mime_message["From"] = "root@localhost"
mime_message["To"] = "somebody@example.com"
mime_message["Subject"] = "Hello World!"

async def send_with_send_message(message):
    smtp_client = SMTP(hostname="127.0.0.1", port=1025)
    await smtp_client.connect()
    await smtp_client.send_message(message)
    await smtp_client.quit()

asyncio.run(send_with_send_message(mime_message))
"""

EXAMPLE_MULTIPART = """\
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

message = MIMEMultipart("alternative")
message["From"] = "root@localhost"
message["To"] = "somebody@example.com"
message["Subject"] = "Hello World!"

message.attach(MIMEText("hello", "plain", "utf-8"))
message.attach(MIMEText("<html><body><h1>Hello</h1></body></html>", "html", "utf-8"))

async def send_multipart_message(message):
    smtp_client = SMTP(hostname="127.0.0.1", port=1025)
    await smtp_client.connect()
    await smtp_client.send_message(message)
    await smtp_client.quit()

asyncio.run(send_multipart_message(message))
"""

EXAMPLE_SENDMAIL = '''\
import asyncio

from aiosmtplib import SMTP


sender = "root@localhost"
recipients = ["somebody@example.com"]
message = """To: somebody@example.com
From: root@localhost
Subject: Hello World!

Sent via aiosmtplib
"""

async def send_with_sendmail():
    smtp_client = SMTP(hostname="127.0.0.1", port=1025)
    await smtp_client.connect()
    await smtp_client.sendmail(sender, recipients, message)
    await smtp_client.quit()

asyncio.run(send_with_sendmail())
'''

ALL_EXAMPLES = [
    EXAMPLE_CONNECT,
    EXAMPLE_TLS,
    EXAMPLE_STARTTLS,
    EXAMPLE_CONTEXT_MANAGER,
    EXAMPLE_SEND_MESSAGE,
    EXAMPLE_MULTIPART,
    EXAMPLE_SENDMAIL,
]


def adapt(code: str, port: int, *, gmail_port: int | None = None) -> str:
    """The example with the module renamed and the server moved to a local port."""
    # The module name only: "aiosmtplib" followed by " import" or ".SMTP", never the
    # "Sent via aiosmtplib" text inside the messages.
    code = re.sub(r"\baiosmtplib(?=[ .])", "smtp_backends", code)
    if gmail_port is not None:
        code = code.replace('hostname="smtp.gmail.com"', 'hostname="localhost"')
        code = re.sub(r"port=(465|587)\b", f"port={gmail_port}", code)
    else:
        code = code.replace("port=1025", f"port={port}")
    assert "aiosmtplib import" not in code and "1025" not in code and "gmail" not in code
    return code


def body_of(content: bytes) -> bytes:
    """The body of a received message (everything after the blank line)."""
    return content.split(b"\r\n\r\n", 1)[1]


async def wait_for_command(server: SMTPServer, command: str, timeout: float = 2.0) -> None:
    """aiosmtpd records STARTTLS from a callback that may run after the client's handshake."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while command not in server.handler.commands:
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.005)


def run_example(code: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute a self-contained example (it calls asyncio.run itself)."""
    namespace = {"__name__": "docs_example"} if namespace is None else namespace
    exec(compile(code, "<docs example>", "exec"), namespace)
    return namespace


async def await_snippet(code: str) -> dict[str, Any]:
    """Run a snippet that uses top-level await, on the running loop; return its globals."""
    namespace: dict[str, Any] = {"__name__": "docs_example", "smtp_backends": smtp_backends}
    compiled = compile(code, "<docs snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if result is not None:
        await result
    return namespace


def doc_code_blocks(text: str) -> list[str]:
    """The Python blocks (``testcode`` and ``code-block:: python``) of an rst page."""
    blocks: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() in (".. testcode::", ".. code-block:: python"):
            index += 1
            body: list[str] = []
            while index < len(lines) and (not lines[index].strip() or lines[index][:1] == " "):
                body.append(lines[index])
                index += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
        else:
            index += 1
    return blocks


def test_examples_are_the_documented_ones() -> None:
    """Guard against drift: the copies above are exactly the page's code blocks."""
    blocks = doc_code_blocks(doc_page().read_text(encoding="utf-8"))
    assert [block.strip() for block in blocks] == [code.strip() for code in ALL_EXAMPLES]


def test_adapt_keeps_message_text() -> None:
    adapted = adapt(EXAMPLE_CONTEXT_MANAGER, 2525)
    assert "from smtp_backends import SMTP" in adapted
    assert 'message.set_content("Sent via aiosmtplib")' in adapted
    assert 'SMTP(hostname="127.0.0.1", port=2525)' in adapted
    assert adapt(EXAMPLE_TLS, 0, gmail_port=4650).startswith(
        'smtp_client = smtp_backends.SMTP(hostname="localhost", port=4650, use_tls=True)'
    )


# --------------------------------------------------------------------------- testcode examples


def test_connect_example(smtpd: SMTPServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace = run_example(adapt(EXAMPLE_CONNECT, smtpd.port))
        client = namespace["client"]
        assert isinstance(client, smtp_backends.SMTP)
        # The server saw one connection and the EHLO sent on connect, nothing else.
        assert smtpd.handler.connections == 1
        assert smtpd.handler.commands == ["EHLO"]
        # asyncio.run closed the loop the connection belonged to: it cannot be used.
        assert client.is_connected is False
        # Closing after the loop is gone must be safe and must release the socket.
        client.close()
        client.close()
        del client, namespace
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == [], [str(w.message) for w in leaked]


def test_context_manager_example(smtpd: SMTPServer) -> None:
    run_example(adapt(EXAMPLE_CONTEXT_MANAGER, smtpd.port))
    [received] = smtpd.messages
    assert received.mail_from == "root@localhost"
    assert received.rcpt_tos == ["somebody@example.com"]
    assert received.message["From"] == "root@localhost"
    assert received.message["To"] == "somebody@example.com"
    assert received.message["Subject"] == "Hello World!"
    assert body_of(received.original_content) == b"Sent via aiosmtplib\r\n"
    # The context manager said QUIT on the way out and closed the connection.
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_send_message_mimetext_example(smtpd: SMTPServer) -> None:
    run_example(adapt(EXAMPLE_SEND_MESSAGE, smtpd.port))
    [received] = smtpd.messages
    assert received.mail_from == "root@localhost"
    assert received.rcpt_tos == ["somebody@example.com"]
    assert received.message["Subject"] == "Hello World!"
    assert received.message.get_content_type() == "text/plain"
    # The MIMEText payload has no final newline: one CRLF ends the data, as in smtplib.
    assert body_of(received.original_content) == b"Sent via aiosmtplib\r\n"
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def test_multipart_example(smtpd: SMTPServer) -> None:
    # This block relies on names (asyncio, SMTP) imported by the page's previous block.
    namespace = run_example(adapt(EXAMPLE_SEND_MESSAGE, smtpd.port))
    run_example(adapt(EXAMPLE_MULTIPART, smtpd.port), namespace)
    assert len(smtpd.messages) == 2
    received = smtpd.messages[1]
    assert received.mail_from == "root@localhost"
    assert received.rcpt_tos == ["somebody@example.com"]
    parsed = received.message
    assert parsed["Subject"] == "Hello World!"
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == "hello"
    assert parts[1].get_content() == "<html><body><h1>Hello</h1></body></html>"
    assert [part.get_content_charset() for part in parts] == ["utf-8", "utf-8"]


def test_sendmail_example(smtpd: SMTPServer) -> None:
    run_example(adapt(EXAMPLE_SENDMAIL, smtpd.port))
    [received] = smtpd.messages
    assert received.mail_from == "root@localhost"
    assert received.rcpt_tos == ["somebody@example.com"]
    # The raw text arrives as written, with its LF line endings turned into CRLF.
    assert received.original_content == (
        b"To: somebody@example.com\r\n"
        b"From: root@localhost\r\n"
        b"Subject: Hello World!\r\n"
        b"\r\n"
        b"Sent via aiosmtplib\r\n"
    )
    assert smtpd.handler.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


# --------------------------------------------------------------------------- gmail snippets


@pytest.fixture
def trust_test_ca(monkeypatch: pytest.MonkeyPatch, ca_bundle_path: Path) -> None:
    """Make the test CA the default trust store (what the snippets rely on for Gmail)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle_path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.mark.usefixtures("trust_test_ca", "settle_client_sockets")
async def test_implicit_tls_example(smtpd_tls: SMTPServer) -> None:
    namespace = await await_snippet(adapt(EXAMPLE_TLS, 0, gmail_port=smtpd_tls.port))
    client = namespace["smtp_client"]
    try:
        assert client.is_connected
        assert client.get_transport_info("ssl_object") is not None
        assert smtpd_tls.handler.connections == 1
        # Implicit TLS needs no STARTTLS; nothing is said until a command needs it.
        assert "STARTTLS" not in smtpd_tls.handler.commands
        # The connection works: a message goes through, encrypted.
        await client.sendmail("root@localhost", ["somebody@example.com"], "Subject: tls\n\nhi\n")
    finally:
        await client.quit()
    [received] = smtpd_tls.messages
    assert received.tls is True
    assert received.rcpt_tos == ["somebody@example.com"]
    assert received.original_content == b"Subject: tls\r\n\r\nhi\r\n"


@pytest.mark.usefixtures("trust_test_ca", "settle_client_sockets")
async def test_starttls_example(smtpd_starttls: SMTPServer) -> None:
    namespace = await await_snippet(adapt(EXAMPLE_STARTTLS, 0, gmail_port=smtpd_starttls.port))
    client = namespace["smtp_client"]
    await wait_for_command(smtpd_starttls, "STARTTLS")
    try:
        # start_tls=False: connect stayed plaintext; the manual starttls() upgraded.
        assert smtpd_starttls.handler.commands == ["EHLO", "STARTTLS"]
        assert client.get_transport_info("ssl_object") is not None
        # Everything learned before TLS is forgotten (RFC 3207 4.2).
        assert client.last_ehlo_response is None
        assert client.esmtp_extensions == {}
        await client.sendmail("root@localhost", ["somebody@example.com"], "Subject: s\n\nhi\n")
    finally:
        await client.quit()
    assert smtpd_starttls.handler.commands == [
        "EHLO",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    [received] = smtpd_starttls.messages
    assert received.tls is True
    assert received.original_content == b"Subject: s\r\n\r\nhi\r\n"


# --------------------------------------------------------------------------- prose claims


def test_default_timeout_is_60_seconds() -> None:
    """ "The default timeout is 60 seconds." """
    assert smtp_backends.SMTP().timeout == 60


def test_constructor_does_not_connect(smtpd: SMTPServer) -> None:
    """ "Initializing an instance does not automatically connect to the server." """
    client = smtp_backends.SMTP(hostname=smtpd.host, port=smtpd.port)
    assert client.is_connected is False
    assert smtpd.handler.connections == 0
