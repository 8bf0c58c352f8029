"""Replies the client did not ask for, inside a pipelined group, from a scripted server.

The connection pairs replies with commands in order (RFC 2920 3.1); one reply too many
shifts every later one onto the wrong command. Whatever command it lands on, the client
must see a protocol error (the state is in doubt), never a refusal of the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from smtp_backends import SMTP, SMTPProtocolError
from smtp_backends.errors import SMTPDataError, SMTPRecipientsRefused, SMTPSenderRefused
from tests.scripted import GroupServer, Item
from tests.servers import ScriptedServer

MakeServer = Callable[..., ScriptedServer]
BODY = b"Subject: extra\r\n\r\nHello.\r\n"


def extra_reply_on(
    verb: bytes, extra: bytes, *, before: bool
) -> Callable[[GroupServer, Item], Any]:
    """Answer ``verb`` with one more reply than asked for (before or after its own)."""

    def on_command(server: GroupServer, item: Item) -> Any:
        if item.kind == "command" and item.verb == verb:
            own = server.reply(item)
            return extra + own if before else own + extra
        return None

    return on_command


@pytest.mark.parametrize(
    ("verb", "extra", "before"),
    [
        (b"DATA", b"250 2.0.0 extra\r\n", True),  # the 250 lands on DATA, the 354 on nothing
        (b"RCPT", b"250 2.0.0 extra\r\n", False),  # RCPT's 250 lands on DATA
        (b"MAIL", b"250 2.0.0 extra\r\n", True),
        (b"MAIL", b"354 extra\r\n", False),  # a 354 lands on RCPT
        (b"DATA", b"354 extra\r\n", False),  # a second 354 after DATA's
    ],
)
async def test_an_extra_reply_in_a_pipelined_group_is_a_protocol_error(
    make_scripted_server: MakeServer, verb: bytes, extra: bytes, before: bool
) -> None:
    server = GroupServer(hold_groups=True, on_command=extra_reply_on(verb, extra, before=before))
    scripted = make_scripted_server(server)
    client = SMTP(
        hostname=scripted.host,
        port=scripted.port,
        start_tls=False,
        timeout=5,
        local_hostname="client.test",
    )
    await client.connect()
    try:
        with pytest.raises(SMTPProtocolError) as caught:
            await asyncio.wait_for(client.sendmail("a@example.com", ["b@example.com"], BODY), 5)
        assert not isinstance(
            caught.value, (SMTPDataError, SMTPSenderRefused, SMTPRecipientsRefused)
        )
        assert not client.is_connected  # a connection whose state is in doubt is closed
        assert server.data == []  # the content never left
    finally:
        client.close()
