"""The one way a message reaches the current app's mail state, without the extension.

The message class reads two settings of the current app (the default
sender, ``MAIL_ASCII_ATTACHMENTS``); importing the extension for that would
close a circle (the extension builds messages). Instead the state class
derives from :class:`StateView`, and :func:`current_state` finds it.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, has_app_context

__all__ = ("StateView", "current_state")


class StateView:
    """What a message may read of an app's mail state (the state class derives from it)."""

    __slots__ = ()

    default_sender: Any
    ascii_attachments: bool


def current_state() -> Any:
    """The current app's mail state (a :class:`StateView`), or None.

    None outside an application context, and for an app not set up with
    ``init_app``.
    """
    if not has_app_context():
        return None
    state = current_app.extensions.get("mail")
    return state if isinstance(state, StateView) else None
