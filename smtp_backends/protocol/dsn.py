"""Delivery status notifications (RFC 3461) and REQUIRETLS (RFC 8689): the parameters.

Sans-IO: a :class:`DSN` request becomes MAIL parameters (``RET``, ``ENVID``)
and per-recipient RCPT parameters (``NOTIFY``, ``ORCPT``), every value
encoded as xtext (RFC 3461 4) or utf-8-addr-xtext (RFC 6533 3), so nothing a
caller gives can end a command line or add a parameter. Whether the
session allows them (the server offers DSN / REQUIRETLS, the session is
encrypted) is checked by :func:`mail_parameters` before anything is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..errors import SMTPNotSupported
from . import commands
from .extensions import Extensions
from .transaction import Envelope

__all__ = (
    "DSN",
    "add_rcpt_parameters",
    "mail_parameters",
    "orcpt_value",
    "xtext",
)

_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")
_RET = ("FULL", "HDRS")
# RFC 3461 4: xchar is "!" to "~" except "+" and "="; anything else is +HH.
_XTEXT_SAFE = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
# RFC 6533 3: QCHAR is printable ASCII except "+", "=" and "\\".
_QCHAR = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("="), ord("\\")}


def xtext(value: str) -> str:
    """Encode ``value`` as xtext (RFC 3461 4): UTF-8 octets, ``+HH`` for the unsafe ones."""
    return "".join(
        chr(octet) if octet in _XTEXT_SAFE else f"+{octet:02X}" for octet in value.encode("utf-8")
    )


def _utf8_addr_xtext(value: str) -> str:
    """RFC 6533 3 utf-8-addr-xtext: ``\\x{HEX}`` for every character that is not a QCHAR."""
    return "".join(
        char if ord(char) in _QCHAR else "\\x{" + f"{ord(char):X}" + "}" for char in value
    )


def orcpt_value(address: str) -> str:
    """The ORCPT value for an original recipient address.

    ``rfc822;`` with xtext for an ASCII address (RFC 3461 4.2), ``utf-8;`` with
    utf-8-addr-xtext for an internationalised one (RFC 6533 3).
    """
    if address.isascii():
        return "rfc822;" + xtext(address)
    return "utf-8;" + _utf8_addr_xtext(address)


@dataclasses.dataclass(frozen=True)
class DSN:
    """What delivery status notifications to ask for (RFC 3461), checked once.

    Args:
        notify: ``"NEVER"``, or any of ``"SUCCESS"``, ``"FAILURE"``,
            ``"DELAY"`` (a str or a sequence; None leaves it to the server).
        ret: ``"FULL"`` (the whole message in a failure report) or ``"HDRS"``
            (headers only); None leaves it to the server.
        envid: an envelope id returned in reports (printable ASCII, at most
            100 characters); sent as xtext.
        orcpt: True sends each recipient's own address as its original
            recipient; a mapping gives the original address per recipient.

    Raises:
        ValueError / TypeError: an unknown keyword, NEVER with another
            value, or an envid that is not printable ASCII or too long.
    """

    notify: str | Sequence[str] | None = None
    ret: str | None = None
    envid: str | None = None
    orcpt: bool | Mapping[str, str] = False

    def __post_init__(self) -> None:
        notify = self.notify
        if notify is not None:
            words = (notify,) if isinstance(notify, str) else tuple(notify)
            words = tuple(str(word).strip().upper() for word in words)
            if not words:
                raise ValueError("notify must name at least one of NEVER, SUCCESS, FAILURE, DELAY")
            if "NEVER" in words and len(words) > 1:
                raise ValueError(
                    "NOTIFY=NEVER cannot be combined with another value (RFC 3461 4.1)"
                )
            unknown = [word for word in words if word not in (*_NOTIFY, "NEVER")]
            if unknown:
                raise ValueError(f"Unknown NOTIFY value(s): {', '.join(unknown)}")
            object.__setattr__(self, "notify", tuple(dict.fromkeys(words)))
        if self.ret is not None:
            ret = str(self.ret).strip().upper()
            if ret not in _RET:
                raise ValueError(f"ret must be FULL or HDRS, not {self.ret!r}")
            object.__setattr__(self, "ret", ret)
        if self.envid is not None:
            if not isinstance(self.envid, str):
                raise TypeError("envid must be a str")
            # RFC 3461 4.4: printable ASCII, at most 100 characters.
            if (
                not self.envid
                or len(self.envid) > 100
                or not all(0x20 <= ord(char) < 0x7F for char in self.envid)
            ):
                raise ValueError("envid must be 1 to 100 printable ASCII characters")
        orcpt = self.orcpt
        if isinstance(orcpt, Mapping):
            for recipient, original in orcpt.items():
                commands.envelope_address(recipient)
                commands.envelope_address(original)
            object.__setattr__(self, "orcpt", dict(orcpt))
        elif not isinstance(orcpt, bool):
            raise TypeError("orcpt must be True/False or a mapping recipient -> original address")

    def __hash__(self) -> int:
        orcpt = self.orcpt
        key = tuple(sorted(orcpt.items())) if isinstance(orcpt, Mapping) else orcpt
        return hash((self.notify, self.ret, self.envid, key))

    @property
    def per_recipient(self) -> bool:
        """Whether RCPT commands get parameters (NOTIFY or ORCPT)."""
        return self.notify is not None or bool(self.orcpt)

    def mail_options(self) -> list[str]:
        """``RET=`` and ``ENVID=`` for MAIL (RFC 3461 4.3, 4.4)."""
        options = []
        if self.ret is not None:
            options.append(f"RET={self.ret}")
        if self.envid is not None:
            options.append(f"ENVID={xtext(self.envid)}")
        return options

    def rcpt_options(self, recipient: str) -> list[str]:
        """``NOTIFY=`` and ``ORCPT=`` for one recipient's RCPT (RFC 3461 4.1, 4.2)."""
        options = []
        if self.notify is not None:
            options.append("NOTIFY=" + ",".join(self.notify))
        orcpt = self.orcpt
        if orcpt:
            original = orcpt.get(recipient, recipient) if isinstance(orcpt, Mapping) else recipient
            options.append("ORCPT=" + orcpt_value(commands.envelope_address(original)))
        return options


def mail_parameters(
    dsn: DSN | None, requiretls: bool, extensions: Extensions, encrypted: bool
) -> list[str]:
    """The MAIL parameters for ``dsn`` and REQUIRETLS, after checking the session allows them.

    Raises:
        SMTPNotSupported: DSN asked for and the server does not offer it;
            REQUIRETLS asked for on a session that is not TLS, or to a server
            that does not offer it (RFC 8689 4.1: the client must not send
            the message then).
    """
    options: list[str] = []
    if dsn is not None:
        if not extensions.supports("dsn"):
            raise SMTPNotSupported(
                "Delivery status notifications were asked for, and the server does not "
                "offer DSN (RFC 3461)"
            )
        options.extend(dsn.mail_options())
    if requiretls:
        if not encrypted:
            raise SMTPNotSupported(
                "REQUIRETLS was asked for, and this session is not encrypted (RFC 8689 4.1): "
                "connect with use_tls or STARTTLS"
            )
        if not extensions.supports("requiretls"):
            raise SMTPNotSupported(
                "REQUIRETLS was asked for, and the server does not offer it (RFC 8689)"
            )
        options.append("REQUIRETLS")
    return options


def add_rcpt_parameters(envelope: Envelope, dsn: DSN) -> None:
    """Append each recipient's NOTIFY/ORCPT to its encoded RCPT command.

    The parameters are ASCII (xtext) and each is checked by
    :func:`~smtp_backends.protocol.commands.option`.
    """
    if not dsn.per_recipient:
        return
    rcpts = envelope.commands[1:-1]
    for index, (recipient, line) in enumerate(zip(envelope.recipients, rcpts, strict=True)):
        extra = " ".join(commands.option(value) for value in dsn.rcpt_options(recipient))
        envelope.commands[1 + index] = line[:-2] + b" " + extra.encode("ascii") + b"\r\n"
