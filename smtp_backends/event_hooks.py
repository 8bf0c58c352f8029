"""Where the sending layers turn what they do into :mod:`smtp_backends.events`.

The client, the pool and the Mailer call these only after checking
``events.bus.active`` (nobody subscribed: nothing here runs).

Each message's outcome is reported once, by the layer that knows it is
final:

* the client reports every outcome of a transaction it ran, except one its
  pool may still retry (lost before its end of data): that one goes to the
  pool's :class:`Ledger`, and the pool reports it as retried or final;
* the outermost call (a :func:`scoped` one: ``Mailer.deliver``, a pool's or
  a client's send) reports, when it ends, every outcome nobody reported:
  messages that never reached a connection (no connection could be had, a
  bad message refused before the wire).

Outcome objects are matched by identity: what a layer reports is what the
layers above return.
"""

from __future__ import annotations

import collections
import contextvars
import email.message
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from . import events
from .errors import SMTPRecipientsRefused, SMTPResponseException
from .outcomes import Verdict, classify, refusals, resend_now
from .protocol.transaction import Envelope

T = TypeVar("T")

__all__ = ("Ledger", "open_ledger", "scoped", "watch")

_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*((?:[^\r\n]|\r\n[ \t])*)")
# A header section is seldom longer; the search stops there.
_HEADER_LIMIT = 64 * 1024


def message_id_of(data: bytes | str) -> str | None:
    """The Message-ID in a message's header section, or None."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    head = raw[:_HEADER_LIMIT]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    if end >= 0:
        head = head[: end + 2]
    found = _MESSAGE_ID.search(head)
    if found is None:
        return None
    return b" ".join(found.group(1).split()).decode("ascii", "replace") or None


def server_of(config: Any) -> tuple[str, int | None]:
    """``(host, port)`` of a :class:`ConnectionConfig` (a socket's path and None)."""
    if config.socket_path is not None:
        return str(config.socket_path), None
    return config.effective_hostname, config.effective_port


class _Info:
    """What the client learnt of one message while preparing it."""

    __slots__ = ("clock", "message_id", "recipients", "sender", "size", "started")

    def __init__(
        self,
        message_id: str | None,
        sender: str,
        recipients: tuple[str, ...],
        size: int,
        started: float,
        clock: float,
    ) -> None:
        self.message_id = message_id
        self.sender = sender
        self.recipients = recipients
        self.size = size
        self.started = started
        self.clock = clock

    def fields(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "sender": self.sender,
            "recipients": self.recipients,
            "size": self.size,
            "started": self.started,
            "duration": time.perf_counter() - self.clock,
        }


def _from_envelope(envelope: Envelope, started: float, clock: float) -> _Info:
    content = envelope.content
    return _Info(
        message_id_of(content),
        envelope.sender,
        tuple(envelope.recipients),
        len(content),
        started,
        clock,
    )


def _from_item(item: Any) -> _Info:
    """What can be told of an item that never reached a connection (never renders it)."""
    now, clock = time.time(), time.perf_counter()
    if isinstance(item, email.message.Message):
        message_id = item.get("Message-ID")
        return _Info(str(message_id).strip() if message_id else None, "", (), 0, now, clock)
    data = getattr(item, "data", None)
    sender, recipients = getattr(item, "sender", ""), getattr(item, "recipients", ())
    if isinstance(item, tuple) and len(item) == 3:
        sender, recipients, data = item
    if isinstance(data, (bytes, str)) and isinstance(sender, str):
        rcpts = (recipients,) if isinstance(recipients, str) else tuple(recipients)
        return _Info(message_id_of(data), sender, rcpts, len(data), now, clock)
    return _Info(None, "", (), 0, now, clock)


class _Scope:
    """The outermost send in progress: its server, batch number and reports.

    Its message and batch events are emitted in ``origin``, the context of
    the code that sent (so that a subscriber sees the caller's context
    variables: OpenTelemetry's current span, a request id...), even when
    they happen in a transport's callback or on the bridge loop.
    """

    __slots__ = ("batch", "clock", "host", "origin", "port", "reported")

    def __init__(self, host: str, port: int | None, batch: int | None) -> None:
        self.host = host
        self.port = port
        self.batch = batch
        self.clock = time.perf_counter()
        self.origin = _origin.get() or contextvars.copy_context()
        # How many times each outcome object was reported (a lost connection
        # gives several messages one exception object).
        self.reported: collections.Counter[int] = collections.Counter()

    def claim(self, outcome: object) -> bool:
        """Whether ``outcome`` was reported (once per report)."""
        key = id(outcome)
        if self.reported[key] > 0:
            self.reported[key] -= 1
            return True
        return False


_origin: contextvars.ContextVar[contextvars.Context | None] = contextvars.ContextVar(
    "smtp_backends.events.origin", default=None
)
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "smtp_backends.events.scope", default=None
)
_ledger: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar(
    "smtp_backends.events.ledger", default=None
)


def _emit_in(scope: _Scope | None, event: events.Event) -> None:
    """Emit ``event`` in the context of the code that sent."""
    if scope is None:
        events.emit(event)
        return
    try:
        scope.origin.run(events.emit, event)
    except RuntimeError:  # that context is running already (a nested send): emit here
        events.emit(event)


def from_caller(function: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``function``, to run on the bridge with its events emitted in this caller's context."""
    origin = contextvars.copy_context()

    async def call(*args: Any, **kwargs: Any) -> T:
        token = _origin.set(origin)
        try:
            return await function(*args, **kwargs)
        finally:
            _origin.reset(token)

    return call


def report(
    host: str, port: int | None, scope: _Scope | None, info: _Info | None, outcome: object
) -> None:
    """Emit the events of one message's final outcome."""
    common: dict[str, Any] = {"host": host, "port": port, "batch": scope and scope.batch}
    if info is not None:
        common.update(info.fields())
    else:
        common["started"] = time.time()

    def emit(event: events.Event) -> None:
        _emit_in(scope, event)

    if isinstance(outcome, tuple):
        refused, reply = outcome
        for recipient, answer in refused.items():
            emit(
                events.RecipientRefused(
                    **common,
                    recipient=recipient,
                    code=answer.code,
                    reply=answer.message,
                    verdict=Verdict.RETRYABLE if 400 <= answer.code < 500 else Verdict.PERMANENT,
                )
            )
        emit(events.MessageSent(**common, reply=reply, refused=len(refused)))
    elif isinstance(outcome, BaseException):
        verdict = classify(outcome)
        if verdict is Verdict.UNKNOWN:
            emit(events.OutcomeUnknown(**common, error=outcome))
        else:
            if isinstance(outcome, SMTPRecipientsRefused):
                for recipient, error, kind in refusals(outcome):
                    emit(
                        events.RecipientRefused(
                            **common,
                            recipient=recipient,
                            code=error.code,
                            reply=error.message,
                            verdict=kind,
                        )
                    )
            code = outcome.code if isinstance(outcome, SMTPResponseException) else None
            emit(
                events.MessageFailed(
                    **common,
                    error=outcome,
                    code=code if code is not None and code >= 0 else None,
                    verdict=verdict,
                )
            )
    else:
        return
    if scope is not None:
        scope.reported[id(outcome)] += 1


def watch(
    config: Any,
    items: Sequence[Any],
    prepare: Callable[[Any], Envelope],
    on_result: Callable[[int, Any], object] | None,
) -> tuple[range, Callable[[int], Envelope], Callable[[int, Any], object]]:
    """The client's items, preparing function and result callback, wrapped to report
    each message: the items become their positions, so that each envelope prepared
    is recorded at its message's position."""
    scope, ledger = _scope.get(), _ledger.get()
    host, port = server_of(config)
    infos: list[_Info | None] = [None] * len(items)

    def prepared(index: int) -> Envelope:
        started, clock = time.time(), time.perf_counter()
        envelope = prepare(items[index])
        infos[index] = _from_envelope(envelope, started, clock)
        return envelope

    def told(index: int, outcome: Any) -> object:
        info = infos[index]
        if ledger is not None and resend_now(outcome):
            ledger.defer(index, info)  # the pool decides: retried, or final
        else:
            if ledger is not None:
                ledger.seen.add(index)
            report(host, port, scope, info, outcome)
        return on_result(index, outcome) if on_result is not None else None

    return range(len(items)), prepared, told


class Ledger:
    """A pool's record of the outcomes a client left it to judge (one send_messages call)."""

    __slots__ = ("deferred", "host", "port", "scope", "seen")

    def __init__(self, config: Any) -> None:
        self.host, self.port = server_of(config)
        self.scope = _scope.get()
        self.deferred: dict[int, _Info | None] = {}
        self.seen: set[int] = set()

    def defer(self, position: int, info: _Info | None) -> None:
        """The client leaves this outcome to the pool."""
        self.seen.add(position)
        self.deferred[position] = info

    def judged(self, position: int, outcome: object, retried: bool, item: Any = None) -> None:
        """The pool's decision on one outcome: report it as retried, or as final.

        ``item`` is what was sent (for a message the client never prepared).
        """
        if retried:
            info = self.deferred.pop(position, None) or _from_item(item)
            common: dict[str, Any] = {"host": self.host, "port": self.port}
            common["batch"] = self.scope and self.scope.batch
            if info is not None:
                common.update(info.fields())
            error = outcome if isinstance(outcome, BaseException) else None
            _emit_in(self.scope, events.MessageRetried(**common, error=error))
        elif position in self.deferred:
            report(self.host, self.port, self.scope, self.deferred.pop(position), outcome)
        # Otherwise the client reported it, or it never reached the client
        # (the outermost call reports it).


def open_ledger(config: Any) -> tuple[Ledger, contextvars.Token[Ledger | None]]:
    """A ledger for the client sends that follow in this context (reset the token after)."""
    ledger = Ledger(config)
    return ledger, _ledger.set(ledger)


def close_ledger(token: contextvars.Token[Ledger | None]) -> None:
    """Forget the ledger of :func:`open_ledger`."""
    _ledger.reset(token)


def in_scope() -> bool:
    """Whether an outer call already reports for this send."""
    return _scope.get() is not None


async def scoped(
    config: Any,
    items: Sequence[Any],
    run: Callable[[Callable[[int, Any], object]], Awaitable[T]],
    *,
    batch: bool,
    on_result: Callable[[int, Any], object] | None = None,
) -> T:
    """Run the outermost send ``run(told)``, reporting what nobody below reported.

    Args:
        config: the :class:`ConnectionConfig` it sends with.
        items: what it sends (for messages that never reached a connection).
        run: the send, given the result callback to pass down (a batch's
            layers call it once per item with its final outcome); returns
            one outcome, or a list of one per item.
        batch: announce it as a batch (:class:`BatchStarted` / :class:`BatchFinished`).
        on_result: the caller's result callback (called by ``told``).
    """
    host, port = server_of(config)
    scope = _Scope(host, port, events.next_batch_number() if batch else None)
    token = _scope.set(scope)
    if batch:
        started = events.BatchStarted(host=host, port=port, batch=scope.batch, size=len(items))
        _emit_in(scope, started)
    # The final outcome of each item as the layer below told it: it is the
    # true one even when that layer then fails as a whole and returns (or
    # raises) one error for every item.
    outcomes: dict[int, Any] = {}

    def told(index: int, outcome: Any) -> object:
        outcomes[index] = outcome
        return on_result(index, outcome) if on_result is not None else None

    results: list[Any] = []
    try:
        result = await run(told)
        results = list(result) if isinstance(result, list) else [result]
        return result
    except Exception as exc:
        results = [exc] * len(items)
        raise
    finally:
        _scope.reset(token)
        sent = 0
        # None left on a cancellation: the messages' fate is their connection's.
        for index, (item, returned) in enumerate(zip(items, results, strict=False)):
            outcome = outcomes.get(index, returned)
            sent += isinstance(outcome, tuple)
            if not scope.claim(outcome):
                report(host, port, scope, _from_item(item), outcome)
                scope.claim(outcome)  # that report was this item's, not the next one's
        if batch:
            _emit_in(
                scope,
                events.BatchFinished(
                    host=host,
                    port=port,
                    batch=scope.batch,
                    size=len(items),
                    sent=sent,
                    failed=len(items) - sent,
                    duration=time.perf_counter() - scope.clock,
                ),
            )


# Connections ---------------------------------------------------------------------

# Pooled connections lent out: id(entry) -> when (perf_counter).
lent: dict[int, float] = {}


def connection_opened(config: Any, started: float, encrypted: bool) -> None:
    """A client finished connecting (``started``: perf_counter before it began)."""
    host, port = server_of(config)
    events.emit(
        events.ConnectionOpened(
            host=host,
            port=port,
            duration=time.perf_counter() - started,
            encrypted=encrypted,
        )
    )


def connection_closed(config: Any, clean: bool, opened: float | None) -> None:
    """A client closed its connection (``opened``: perf_counter when it was ready)."""
    host, port = server_of(config)
    lifetime = time.perf_counter() - opened if opened is not None else 0.0
    events.emit(events.ConnectionClosed(host=host, port=port, clean=clean, lifetime=lifetime))


def acquired(config: Any, entry: object, waited_from: float, in_use: int) -> None:
    """A pool lent ``entry`` (``waited_from``: perf_counter when the send asked)."""
    now = time.perf_counter()
    lent[id(entry)] = now
    host, port = server_of(config)
    events.emit(
        events.ConnectionAcquired(host=host, port=port, wait=now - waited_from, in_use=in_use)
    )


def released(config: Any, entry: object, in_use: int) -> None:
    """A send gave ``entry`` back (only if :func:`acquired` saw it lent)."""
    since = lent.pop(id(entry), None)
    if since is None:
        return
    host, port = server_of(config)
    events.emit(
        events.ConnectionReleased(
            host=host, port=port, held=time.perf_counter() - since, in_use=in_use
        )
    )


def recycled(config: Any, reason: str, messages: int) -> None:
    """A pool retires a healthy connection."""
    host, port = server_of(config)
    events.emit(events.ConnectionRecycled(host=host, port=port, reason=reason, messages=messages))
