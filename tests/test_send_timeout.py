"""``send_timeout``: one bound on a whole send, on top of the per-operation ``timeout``.

The servers here answer every command just under the per-operation limit, which alone lets a
send stretch to several times that limit. With ``send_timeout`` the send ends in time, with
the error that says what happened to the message: not sent (SMTPTimeoutError /
SMTPReadTimeoutError) when the time ran out before its dot left, unknown outcome
(SMTPUnknownOutcomeTimeoutError) after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from smtp_backends import (
    SMTP,
    ConnectionConfig,
    SMTPConnectTimeoutError,
    SMTPPool,
    SMTPPoolTimeoutError,
    SMTPReadTimeoutError,
    SMTPTimeoutError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
    send,
)
from tests.scripted import GroupServer, Item, delayed
from tests.servers import ScriptedServer

SLOW = 0.4  # each slow reply, just under...
OP_TIMEOUT = 0.6  # ...the per-operation timeout
RAW = b"Subject: hi\r\n\r\nbody\r\n"


def slow_server(
    make_scripted_server: Callable[..., ScriptedServer],
    *,
    pipelining: bool = False,
    slow: Callable[[GroupServer, Item], bool] = lambda group, item: True,
    delay: float = SLOW,
) -> tuple[ScriptedServer, list[GroupServer]]:
    """A server (a fresh GroupServer per connection) answering ``slow`` items after ``delay``."""
    groups: list[GroupServer] = []

    def on_command(group: GroupServer, item: Item) -> Any:
        reply = group.reply(item)
        if item.verb == b"QUIT" or not slow(group, item):
            return reply
        return delayed(reply, delay)

    async def handler(reader: Any, writer: Any) -> None:
        group = GroupServer(extensions=("PIPELINING",) if pipelining else (), on_command=on_command)
        groups.append(group)
        await group(reader, writer)

    return make_scripted_server(handler), groups


def stored(groups: list[GroupServer]) -> int:
    return sum(len(group.data) for group in groups)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("value", [0, -1, True, "5", float("nan")])
def test_send_timeout_is_validated(value: object) -> None:
    with pytest.raises(ValueError, match="send_timeout"):
        ConnectionConfig(send_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="send_timeout"):
        SMTP(send_timeout=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="send_timeout"):
        SMTPPool(send_timeout=value)


def test_send_timeout_is_an_option_of_client_and_pool() -> None:
    assert ConnectionConfig().send_timeout is None
    client = SMTP(send_timeout=30)
    assert client.send_timeout == 30
    client.send_timeout = 5
    assert client.config.send_timeout == 5
    assert SMTPPool(send_timeout=2.5).config.send_timeout == 2.5


async def test_a_bad_per_call_send_timeout_fails_before_anything_is_written(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(make_scripted_server, slow=lambda group, item: False)
    host, port = scripted.address
    async with SMTP(hostname=host, port=port, start_tls=False) as client:
        with pytest.raises(ValueError, match="send_timeout"):
            await client.sendmail("a@example.com", ["b@example.com"], RAW, send_timeout=-1)
        await client.noop()
    assert b"MAIL" not in groups[0].verbs


# --------------------------------------------------------------------------- SMTP


async def test_without_send_timeout_a_slow_server_stretches_one_send(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # What the option is for: lock-step MAIL, RCPT, DATA and the dot, each answered
    # just in time, take four times the per-operation timeout's worth of waiting.
    scripted, groups = slow_server(make_scripted_server)
    host, port = scripted.address
    async with SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False) as client:
        await client.ehlo()
        started = time.monotonic()
        await client.sendmail("a@example.com", ["b@example.com"], RAW)
        assert time.monotonic() - started >= 4 * SLOW
    assert stored(groups) == 1


@pytest.mark.parametrize("pipelining", [False, True])
async def test_send_timeout_before_the_dot_means_not_sent(
    make_scripted_server: Callable[..., ScriptedServer], pipelining: bool
) -> None:
    scripted, groups = slow_server(make_scripted_server, pipelining=pipelining)
    host, port = scripted.address
    limit = 0.5
    client = SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False, send_timeout=limit)
    async with client:
        await client.ehlo()
        started = time.monotonic()
        with pytest.raises(SMTPReadTimeoutError) as caught:
            await client.sendmail("a@example.com", ["b@example.com"], RAW)
        elapsed = time.monotonic() - started
        assert not client.is_connected  # a timeout closes the connection, as ever
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert "send_timeout (0.5 s)" in str(caught.value)
    assert limit - 0.05 <= elapsed < limit + 0.35
    await scripted.wait_done()
    assert stored(groups) == 0


async def test_send_timeout_after_the_dot_means_unknown_outcome(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # Everything is quick but the reply to the dot.
    scripted, groups = slow_server(
        make_scripted_server, pipelining=True, slow=lambda group, item: item.kind == "data"
    )
    host, port = scripted.address
    async with SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False) as client:
        started = time.monotonic()
        with pytest.raises(SMTPUnknownOutcomeTimeoutError) as caught:
            await client.sendmail("a@example.com", ["b@example.com"], RAW, send_timeout=0.25)
        elapsed = time.monotonic() - started
    assert isinstance(caught.value, SMTPReadTimeoutError)
    assert "send_timeout (0.25 s)" in str(caught.value)
    assert elapsed < 0.25 + 0.3
    await scripted.wait_done()
    assert stored(groups) == 1  # the server did get it: hence "unknown", never "not sent"


async def test_send_timeout_counts_the_ehlo_a_send_needs(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(make_scripted_server, pipelining=True)
    host, port = scripted.address
    client = SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False)
    async with client:
        with pytest.raises(SMTPTimeoutError) as caught:
            await client.send_message(_message(), send_timeout=SLOW / 2)  # EHLO alone takes longer
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    assert "send_timeout" in str(caught.value)
    await scripted.wait_done()
    assert b"MAIL" not in groups[0].verbs


async def test_waiting_for_the_connection_counts_against_send_timeout(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # The first send holds the connection while its dot's reply takes 0.4 s; a second
    # send on the same client with 0.2 s gives up waiting for it: not sent, and the
    # connection is untouched for the first.
    scripted, groups = slow_server(
        make_scripted_server, pipelining=True, slow=lambda group, item: item.kind == "data"
    )
    host, port = scripted.address
    async with SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False) as client:
        await client.ehlo()
        first = asyncio.ensure_future(client.sendmail("a@example.com", ["b@example.com"], RAW))
        await asyncio.sleep(0.05)
        with pytest.raises(SMTPTimeoutError, match="send_timeout") as caught:
            await client.sendmail("c@example.com", ["d@example.com"], RAW, send_timeout=0.2)
        assert not isinstance(caught.value, SMTPUnknownOutcomeError)
        errors, _ = await first
        assert errors == {}
        assert client.is_connected
    assert stored(groups) == 1
    assert b"MAIL FROM:<c@example.com>" not in groups[0].lines


async def test_per_call_none_lifts_the_configured_send_timeout(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(
        make_scripted_server, pipelining=True, slow=lambda group, item: item.kind == "data"
    )
    host, port = scripted.address
    client = SMTP(hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False, send_timeout=0.1)
    async with client:
        await client.ehlo()
        errors, _ = await client.sendmail(
            "a@example.com", ["b@example.com"], RAW, send_timeout=None
        )
    assert errors == {}
    assert stored(groups) == 1


async def test_send_messages_bounds_each_message_on_its_own(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # Every reply takes 0.1 s: a pipelined message's transaction takes about 0.5 s (its
    # group of four replies, then its dot's), the batch of 5 about 2 s. A send_timeout of
    # 0.8 s bounds each message, not the batch.
    scripted, groups = slow_server(make_scripted_server, pipelining=True, delay=0.1)
    host, port = scripted.address
    async with SMTP(
        hostname=host, port=port, timeout=OP_TIMEOUT, start_tls=False, send_timeout=0.8
    ) as client:
        items = [(f"m{n}@example.com", ["b@example.com"], RAW) for n in range(5)]
        started = time.monotonic()
        outcomes = await client.send_messages(items)
        elapsed = time.monotonic() - started
    assert all(isinstance(outcome, tuple) for outcome in outcomes), outcomes
    assert elapsed > 0.8 * 1.5  # far longer than send_timeout in all, and still fine
    assert stored(groups) == 5


# --------------------------------------------------------------------------- send()


async def test_send_bounds_connecting_and_sending_together(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(make_scripted_server, pipelining=True)
    host, port = scripted.address
    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        await send(
            RAW,
            "a@example.com",
            ["b@example.com"],
            hostname=host,
            port=port,
            timeout=OP_TIMEOUT,
            send_timeout=0.6,
        )
    elapsed = time.monotonic() - started
    # Without it: EHLO, the envelope group and the dot, each just in time (about 1.2 s+).
    assert elapsed < 0.6 + 0.35
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    await scripted.wait_done()
    assert stored(groups) == 0


async def test_send_times_out_while_connecting(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, _ = slow_server(make_scripted_server)
    host, port = scripted.address
    with pytest.raises(SMTPConnectTimeoutError, match="send_timeout"):
        await send(
            RAW,
            "a@example.com",
            ["b@example.com"],
            hostname=host,
            port=port,
            timeout=OP_TIMEOUT,
            send_timeout=SLOW / 2,  # the EHLO of connecting takes longer
        )


# --------------------------------------------------------------------------- the pool


async def test_pool_send_message_bounds_connecting_and_sending(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(make_scripted_server, pipelining=True)
    host, port = scripted.address
    async with SMTPPool(
        hostname=host, port=port, timeout=OP_TIMEOUT, send_timeout=0.6, max_connections=1
    ) as pool:
        started = time.monotonic()
        with pytest.raises(SMTPTimeoutError) as caught:
            await pool.sendmail("a@example.com", ["b@example.com"], RAW)
        elapsed = time.monotonic() - started
        assert pool._planner.entries == [] or all(
            entry.client is None or not entry.client.is_connected for entry in pool._planner.entries
        )
    assert elapsed < 0.6 + 0.35
    assert not isinstance(caught.value, SMTPUnknownOutcomeError)
    await scripted.wait_done()
    assert stored(groups) == 0


async def test_pool_send_message_per_call_send_timeout(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(
        make_scripted_server, pipelining=True, slow=lambda group, item: item.kind == "data"
    )
    host, port = scripted.address
    async with SMTPPool(hostname=host, port=port, timeout=OP_TIMEOUT) as pool:
        with pytest.raises(SMTPUnknownOutcomeTimeoutError):
            await pool.send_message(_message(), send_timeout=0.3)
        errors, _ = await pool.send_message(_message())  # no bound: slow, but sent
    assert errors == {}
    await scripted.wait_done()
    assert stored(groups) == 2


async def test_pool_batch_items_time_out_on_their_own_and_the_rest_goes_on(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    # m2's dot is answered late once (unknown outcome: never resent); m5's MAIL is
    # answered late once (not sent: it goes out again, on another connection).
    seen: dict[str, int] = {}

    def slow(group: GroupServer, item: Item) -> bool:
        if item.kind == "command" and item.verb == b"MAIL":
            sender = item.line.split(b"<")[1].split(b">")[0].decode()
            seen[sender] = seen.get(sender, 0) + 1
            group.current = sender  # type: ignore[attr-defined]
            return sender == "m5@example.com" and seen[sender] == 1
        if item.kind == "data":
            return getattr(group, "current", None) == "m2@example.com"
        return False

    scripted, groups = slow_server(make_scripted_server, pipelining=True, slow=slow)
    host, port = scripted.address
    items = [(f"m{n}@example.com", ["b@example.com"], RAW) for n in range(8)]
    async with SMTPPool(
        hostname=host, port=port, timeout=OP_TIMEOUT, send_timeout=0.25, max_connections=1
    ) as pool:
        outcomes = await asyncio.wait_for(pool.send_messages(items), 20)
    assert isinstance(outcomes[2], SMTPUnknownOutcomeTimeoutError)
    assert [n for n, o in enumerate(outcomes) if not isinstance(o, tuple)] == [2]
    assert seen["m2@example.com"] == 1
    assert seen["m5@example.com"] == 2
    await scripted.wait_done()
    assert stored(groups) == 8


def _message() -> Any:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "hi"
    message.set_content("body\n")
    return message


async def test_a_bad_per_call_send_timeout_for_a_batch_fails_before_anything_is_written(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(make_scripted_server, slow=lambda group, item: False)
    host, port = scripted.address
    async with SMTP(hostname=host, port=port, start_tls=False) as client:
        with pytest.raises(ValueError, match="send_timeout"):
            await client.send_messages(
                [("a@example.com", ["b@example.com"], RAW)],
                send_timeout="1",  # type: ignore[arg-type]
            )
        await client.noop()
    assert b"MAIL" not in groups[0].verbs


async def test_pool_send_message_waiting_for_a_busy_pool_counts_against_send_timeout(
    make_scripted_server: Callable[..., ScriptedServer],
) -> None:
    scripted, groups = slow_server(
        make_scripted_server, pipelining=True, slow=lambda group, item: item.kind == "data"
    )
    host, port = scripted.address
    async with SMTPPool(hostname=host, port=port, timeout=OP_TIMEOUT, max_connections=1) as pool:
        busy = asyncio.ensure_future(pool.sendmail("a@example.com", ["b@example.com"], RAW))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(SMTPPoolTimeoutError, match=r"send_timeout \(0.15 s\)"):
            await pool.sendmail("c@example.com", ["d@example.com"], RAW, send_timeout=0.15)
        assert time.monotonic() - started < 0.15 + 0.3
        errors, _ = await busy
    assert errors == {}
    assert stored(groups) == 1
