"""``email_dispatched``: Flask-Mail's signal, sent for every message dispatched."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import Any

import blinker

__all__ = ("email_dispatched", "signals")


def _takes_message_first(receiver: Callable[..., Any]) -> bool:
    """Whether a receiver is written ``def receiver(message, app)``.

    Flask-Mail's documentation shows receivers in that form, but blinker calls
    ``receiver(app, message=message)``, which fails for them with "multiple
    values for argument 'message'". Such receivers are called as documented.
    """
    try:
        parameters = list(inspect.signature(receiver).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        bool(parameters)
        and parameters[0].name == "message"
        and parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    )


class _MessageFirst:
    """Calls a ``receiver(message, app)`` the way the documentation shows it."""

    def __init__(self, receiver: Callable[..., Any]) -> None:
        self.receiver = receiver
        parameters = inspect.signature(receiver).parameters
        self.pass_app = "app" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )

    def __call__(self, sender: Any, /, **kwargs: Any) -> Any:
        message = kwargs.pop("message")
        if self.pass_app:
            kwargs["app"] = sender
        return self.receiver(message, **kwargs)


class _DispatchSignal(blinker.NamedSignal):
    """The ``email_dispatched`` signal: sent with the app as sender, ``message=``."""

    def receivers_for(self, sender: Any) -> Generator[Callable[..., Any], None, None]:
        for receiver in super().receivers_for(sender):
            if not inspect.iscoroutinefunction(receiver) and _takes_message_first(receiver):
                yield _MessageFirst(receiver)
            else:
                yield receiver


signals: blinker.Namespace = blinker.Namespace()
#: Sent after every message is dispatched, with the Flask app as sender and
#: the :class:`Message` as ``message``; also when sending is suppressed.
email_dispatched: blinker.NamedSignal = _DispatchSignal(
    "email-dispatched",
    doc="Sent when an email is dispatched, even when sending is suppressed.",
)
signals["email-dispatched"] = email_dispatched
