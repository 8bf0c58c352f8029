"""Failover: an ordered list of SMTP hosts, each skipped for a cool-down after it fails.

A :class:`Failover` is given as ``failover=`` to :class:`~smtp_backends.SMTP`
or :class:`~smtp_backends.SMTPPool`; it replaces ``hostname``/``port`` for
connecting. Each new connection tries the hosts in order, skipping those
cooling down. A host that refuses the connection, the greeting, EHLO, TLS
or AUTH (any :class:`~smtp_backends.errors.SMTPException` while connecting),
or that answers 421 later in the session, cools down for ``cooldown``
seconds and the next host is used.

Failover happens only between messages, never inside one: a message whose
data already left (its outcome unknown when the connection drops after the
dot) is never sent to a second host. Only a message refused with 421
before its content was accepted (so the first host certainly does not have
it) is reported "not sent", which a pool sends over a new connection, to
the next host.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from .errors import (
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPUnknownOutcomeError,
)
from .transport import logger

if TYPE_CHECKING:
    from .config import ConnectionConfig

__all__ = ("Failover", "Host")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Host:
    """One server of a :class:`Failover` list.

    Args:
        hostname: its name or address (also the name its certificate must match).
        port: its port (None: the connection's ``port``, or its default).
    """

    hostname: str
    port: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.hostname, str) or not self.hostname.strip():
            raise ValueError(f"Invalid failover host name: {self.hostname!r}")
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 < self.port < 65536
        ):
            raise ValueError(f"Invalid failover port: {self.port!r}")

    def __str__(self) -> str:
        return self.hostname if self.port is None else f"{self.hostname}:{self.port}"


def _host(value: str | tuple[str, int] | Host) -> Host:
    if isinstance(value, Host):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Host(value[0], value[1])
    if isinstance(value, str):
        name, colon, port = value.rpartition(":")
        if colon and port.isdigit() and not name.endswith("]") and ":" not in name:
            return Host(name, int(port))
        if value.startswith("[") and "]:" in value:  # [IPv6]:port
            name, _, port = value[1:].partition("]:")
            return Host(name, int(port))
        return Host(value.strip("[]"))
    raise TypeError(f"A failover host is a str, (host, port) or Host, not {type(value).__name__}")


def is_421(outcome: object) -> bool:
    """Whether a message's outcome is the server's 421 (it closed the session) before
    the message was accepted; an unknown outcome never counts."""
    if isinstance(outcome, SMTPUnknownOutcomeError):
        return False
    if isinstance(outcome, SMTPRecipientsRefused):
        return any(getattr(error, "code", None) == 421 for error in outcome.recipients)
    if isinstance(outcome, SMTPResponseException):
        return outcome.code == 421
    return isinstance(outcome, SMTPServerDisconnected) and "(421)" in str(outcome)


class Failover:
    """Hosts in order of preference, shared by every connection that holds this object.

    Args:
        hosts: ``"smtp1.example.com"``, ``"smtp2.example.com:2525"``,
            ``("10.0.0.3", 587)`` or :class:`Host` objects, in order.
        cooldown: seconds a failed host is skipped.

    Raises:
        ValueError: no hosts, a bad host or port, or a negative cool-down.
    """

    def __init__(
        self, hosts: Iterable[str | tuple[str, int] | Host], *, cooldown: float = 60.0
    ) -> None:
        if isinstance(hosts, (str, Host)):
            hosts = [hosts]
        self.hosts: tuple[Host, ...] = tuple(_host(host) for host in hosts)
        if not self.hosts:
            raise ValueError("A Failover needs at least one host")
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown < 0:
            raise ValueError(f"cooldown must be a number of seconds >= 0, not {cooldown!r}")
        self.cooldown = float(cooldown)
        self._until: dict[Host, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        now = time.monotonic()
        hosts = ", ".join(
            f"{host} (cooling {self._until[host] - now:.0f} s)"
            if self._until.get(host, 0.0) > now
            else str(host)
            for host in self.hosts
        )
        return f"<Failover {hosts}>"

    def candidates(self) -> list[Host]:
        """The hosts to try, in order: those not cooling down; if all are, all of
        them, the one whose cool-down ends first first (better a try than no mail)."""
        now = time.monotonic()
        with self._lock:
            ready = [host for host in self.hosts if self._until.get(host, 0.0) <= now]
            if ready:
                return ready
            return sorted(self.hosts, key=lambda host: self._until.get(host, 0.0))

    def mark_failed(self, host: Host, reason: object) -> None:
        """Skip ``host`` for the cool-down."""
        with self._lock:
            self._until[host] = time.monotonic() + self.cooldown
        logger.warning("failover: %s failed (%s); skipped for %g s", host, reason, self.cooldown)

    def cooling_down(self, host: Host) -> bool:
        """Whether ``host`` is being skipped now."""
        with self._lock:
            return self._until.get(host, 0.0) > time.monotonic()

    async def connect(
        self,
        attempt: Callable[[ConnectionConfig], Awaitable[T]],
        config: ConnectionConfig,
    ) -> tuple[Host, ConnectionConfig, T]:
        """Run ``attempt`` (connect, greet, TLS, AUTH) on each candidate until one works.

        Returns:
            The host, its connection settings and what ``attempt`` returned.

        Raises:
            SMTPException: the last host's error, when every host failed.
        """
        error: SMTPException | None = None
        for host in self.candidates():
            port = host.port if host.port is not None else config.port
            host_config = config.replace(hostname=host.hostname, port=port)
            try:
                result = await attempt(host_config)
            except SMTPException as exc:
                self.mark_failed(host, exc)
                error = exc
                continue
            with self._lock:
                self._until.pop(host, None)
            return host, host_config, result
        assert error is not None
        raise error

    def judge(self, host: Host | None, outcome: T) -> T | SMTPServerDisconnected:
        """A message's outcome from ``host``: a 421 cools the host down and becomes
        "not sent" (the host refused it), so that a pool sends it elsewhere."""
        if host is None or not is_421(outcome):
            return outcome
        self.mark_failed(host, outcome)
        lost = SMTPServerDisconnected(f"Not sent: {host} answered 421 ({outcome})")
        lost.__cause__ = outcome if isinstance(outcome, BaseException) else None
        return lost
