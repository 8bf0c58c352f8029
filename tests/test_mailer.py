"""smtp_backends.mailer: the process's pooled sending for one settings value."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from smtp_backends import SMTP, SMTPRecipientsRefused, bridge
from smtp_backends.mailer import Mailer, MailerSlot, Outgoing, addr_spec, get_mailer
from smtp_backends.outcomes import Verdict, classify
from smtp_backends.settings import MailerSettings
from tests.servers import SMTPServer

SENDER = "from@example.com"


@pytest.fixture(autouse=True)
def fresh_bridge(make_smtpd: object) -> Iterator[None]:
    """Pools made by a test close (QUIT) before its servers stop."""
    bridge.shutdown()
    yield
    bridge.shutdown()


def data(subject: str = "hi") -> bytes:
    return f"Subject: {subject}\r\n\r\nbody\r\n".encode()


def item(to: str, subject: str = "hi") -> tuple[str, list[str], bytes]:
    return (SENDER, [to], data(subject))


def settings_for(server: SMTPServer, **changes: Any) -> MailerSettings:
    return MailerSettings(host=server.host, port=server.port, timeout=10, **changes)


def test_addr_spec() -> None:
    assert addr_spec("Ann <ann@example.com>") == "ann@example.com"
    assert addr_spec('"Lee, Ann" <ann@example.com>') == "ann@example.com"
    assert addr_spec(" <> ") == "<>"
    assert addr_spec("a@example.com, b@example.com") == "a@example.com, b@example.com"


def test_one_mailer_per_settings_and_one_pool_for_many_sends(smtpd: SMTPServer) -> None:
    settings = settings_for(smtpd)
    mailer = get_mailer(settings)
    assert get_mailer(settings_for(smtpd)) is mailer
    for n in range(5):
        (outcome,) = get_mailer(settings_for(smtpd)).send([item(f"r{n}@example.com")])
        assert classify(outcome) is Verdict.SENT
    assert smtpd.handler.connections == 1
    assert repr(mailer).startswith(f"<Mailer {smtpd.host}:{smtpd.port}")


def test_a_list_keeps_its_order_on_one_connection(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd, pool_size=4))
    outcomes = mailer.send([item(f"r{n}@example.com") for n in range(12)])
    assert all(classify(o) is Verdict.SENT for o in outcomes)
    assert [m.rcpt_tos[0] for m in smtpd.messages] == [f"r{n}@example.com" for n in range(12)]
    assert {m.connection_id for m in smtpd.messages} == {1}


def test_without_keep_order_a_list_spreads_over_the_pool(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd, pool_size=3, keep_order=False))
    assert len(mailer.send([item(f"r{n}@example.com") for n in range(30)])) == 30
    assert len({m.connection_id for m in smtpd.messages}) == 3
    assert len(mailer.pools) == 1  # the shared lane only


def test_async_twin_from_fresh_loops_reuses_the_bridge_pool(smtpd: SMTPServer) -> None:
    """asgiref and Flask run async views on fresh loops: the pool lives on the bridge."""
    mailer = get_mailer(settings_for(smtpd))
    for n in range(3):
        (outcome,) = asyncio.run(mailer.asend([item(f"r{n}@example.com")]))
        assert classify(outcome) is Verdict.SENT
    assert smtpd.handler.connections == 1


def test_lazy_items_on_result_and_failures_as_outcomes(smtpd: SMTPServer) -> None:
    rendered: list[int] = []
    heard: list[tuple[int, Verdict]] = []

    def lazy(n: int) -> Any:
        def render() -> tuple[str, list[str], bytes]:
            rendered.append(n)
            if n == 2:
                raise ValueError("cannot render")
            return item("refuse@example.com" if n == 1 else f"r{n}@example.com")

        return render

    outcomes = Mailer(settings_for(smtpd)).send(
        [lazy(n) for n in range(4)], on_result=lambda i, o: heard.append((i, classify(o)))
    )
    assert rendered == [0, 1, 2, 3]
    assert isinstance(outcomes[1], SMTPRecipientsRefused)
    assert isinstance(outcomes[2], ValueError)
    assert sorted(heard) == [
        (0, Verdict.SENT),
        (1, Verdict.PERMANENT),
        (2, Verdict.PERMANENT),
        (3, Verdict.SENT),
    ]


def test_outgoing_carries_esmtp_parameters(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd))
    outgoing = Outgoing(SENDER, ["a@example.com", "refuse@example.com"], data(), ["BODY=8BITMIME"])
    ((refused, reply),) = mailer.send([outgoing])  # type: ignore[misc]
    assert list(refused) == ["refuse@example.com"] and reply
    assert "BODY=8BITMIME" in smtpd.messages[0].mail_options


def test_pool_size_zero_is_a_connection_per_call(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd, pool_size=0))
    for _ in range(2):
        assert classify(mailer.send([item("a@example.com")])[0]) is Verdict.SENT
    assert smtpd.handler.connections == 2
    assert smtpd.handler.commands.count("QUIT") == 2


def test_a_connection_of_ones_own(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd))
    client = mailer.connect()
    assert isinstance(client, SMTP) and client.is_connected
    outcomes = mailer.send([item("a@example.com"), item("b@example.com")], via=client)
    assert [classify(o) for o in outcomes] == [Verdict.SENT, Verdict.SENT]
    mailer.disconnect(client)
    assert not client.is_connected and smtpd.handler.commands[-1] == "QUIT"
    assert mailer.pools == []


async def test_a_connection_of_ones_own_async(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd))
    client = await mailer.aconnect()
    (outcome,) = await mailer.asend([item("a@example.com")], via=client)
    assert classify(outcome) is Verdict.SENT
    await mailer.adisconnect(client)
    assert not client.is_connected


def test_failures_of_the_whole_connection_are_each_items_outcome() -> None:
    settings = MailerSettings(host="127.0.0.1", port=9, timeout=2)  # discard: refused
    outcomes = Mailer(settings).send([item("a@example.com"), item("b@example.com")])
    assert [classify(o) for o in outcomes] == [Verdict.RETRYABLE] * 2
    assert Mailer(settings.replace(pool_size=0)).send([item("a@example.com")])[0] is not None
    assert Mailer(settings).send([]) == []


def test_a_slot_retires_its_mailer_when_the_settings_change(
    smtpd: SMTPServer, make_smtpd: Any
) -> None:
    other = make_smtpd()
    slot = MailerSlot()
    assert slot.current is None
    first = slot.get(settings_for(smtpd))
    assert slot.get(settings_for(smtpd)) is first and first.scope is slot
    first.send([item("a@example.com")])
    (old_pool,) = first.pools
    second = slot.get(settings_for(other))
    assert second is not first and slot.current is second
    second.send([item("b@example.com")])
    deadline = time.monotonic() + 10
    while not old_pool.closed or "QUIT" not in smtpd.handler.commands:
        assert time.monotonic() < deadline, "the retired pool did not close"
        time.sleep(0.01)
    # Another slot with the same settings has pools of its own.
    MailerSlot().get(settings_for(other)).send([item("c@example.com")])
    assert other.handler.connections == 2
    slot.close_later()
    assert slot.release() is second and slot.current is None
    assert slot.get(settings_for(other)) is not second


def test_close_and_aclose(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd))
    mailer.close()  # nothing open yet
    mailer.send([item("a@example.com")])
    mailer.close()
    assert mailer.pools == [] and smtpd.handler.commands[-1] == "QUIT"
    mailer.send([item("b@example.com")])

    async def lifespan() -> None:
        async with mailer:
            pass

    asyncio.run(lifespan())
    assert mailer.pools == [] and smtpd.handler.connections == 2


def test_close_later_from_a_finaliser_context(smtpd: SMTPServer) -> None:
    mailer = Mailer(settings_for(smtpd))
    mailer.send([item("a@example.com")])
    (pool,) = mailer.pools
    mailer.close_later()
    deadline = time.monotonic() + 10
    while not pool.closed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    bridge.shutdown()
    mailer.close_later()  # the bridge is gone: nothing to do, no error
    gc.collect()


def child_sends(mailer: Mailer, settings: MailerSettings) -> int:  # pragma: no cover
    """In a forked child: a Mailer and pool of its own; the exit code says why not."""
    child = get_mailer(settings)
    if child is mailer:
        return 3
    (outcome,) = child.send([item("child@example.com")])
    if classify(outcome) is not Verdict.SENT:
        return 4
    if child.pools == mailer.pools:
        return 5
    bridge.shutdown(timeout=10)
    return 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_never_uses_its_parents_connections(smtpd: SMTPServer) -> None:
    settings = settings_for(smtpd)
    mailer = get_mailer(settings)
    mailer.send([item("parent-1@example.com")])
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() with threads running; the bridge is built for it.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 2
        try:
            code = child_sends(mailer, settings)
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    (outcome,) = mailer.send([item("parent-2@example.com")])
    assert classify(outcome) is Verdict.SENT
    by_rcpt = {m.rcpt_tos[0]: m.connection_id for m in smtpd.messages}
    assert by_rcpt["parent-1@example.com"] == by_rcpt["parent-2@example.com"]
    assert by_rcpt["child@example.com"] != by_rcpt["parent-1@example.com"]


def test_locks_held_at_fork_are_new_in_the_child() -> None:
    """A lock some parent thread held while forking must not hang the child."""
    from smtp_backends import mailer as mailer_module

    slot = MailerSlot()
    slot._lock.acquire()
    mailer_module._mailers_lock.acquire()
    mailer_module._after_fork_in_child()  # what os.register_at_fork runs in the child
    settings = MailerSettings(host="h")
    assert slot.get(settings).settings is settings
    assert get_mailer(settings) is get_mailer(settings)
