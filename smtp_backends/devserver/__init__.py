"""A development mail server: an SMTP server that keeps mail, and a web inbox to read it.

Point an application's SMTP settings at it and look at what it sent::

    from smtp_backends.devserver import DevServer

    with DevServer(smtp_port=0, http_port=0) as server:
        ...  # send mail to 127.0.0.1:server.smtp_port
        [message] = server.wait_for(1)
        print(message.subject, server.inbox_url)

or from a shell: ``python -m smtp_backends devserver`` (options:
:mod:`smtp_backends.devserver.command`; the JSON API: ``API.md`` next to this module).

Beyond keeping mail, it searches (:mod:`.search`), groups messages by plus-address
tag for per-test isolation, pushes changes to the browser (:mod:`.events`), checks a
message's links (:mod:`.linkcheck`), releases a message to a real SMTP server for
allowed recipients only (:mod:`.release`), and can misbehave by rule so that
applications can test their retries (:mod:`.chaos`).

The SMTP side is aiosmtpd (the ``devserver`` extra; how to install it:
``INSTALL_HINT``), imported only when a server starts; the web inbox uses the standard
library's :mod:`http.server`. Each runs on a thread of its own, so the server works the
same from sync code, async code and tests. It delivers nothing and keeps everything in
memory; it is meant for loopback, not for the internet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from ..extras import install_hint
from .chaos import Chaos, ChaosRule
from .guard import HostPolicy
from .linkcheck import LinkCheckConfig, LinkChecker, LinkResult
from .release import ReleaseConfig, Releaser, ReleaseResult
from .search import Query
from .store import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    Attachment,
    Mailbox,
    MessageTooLarge,
    StoredMessage,
)
from .web import InboxServer

if TYPE_CHECKING:
    from .smtp import SMTPThread

__all__ = (
    "INSTALL_HINT",
    "Attachment",
    "Chaos",
    "ChaosRule",
    "DevServer",
    "LinkCheckConfig",
    "LinkResult",
    "Mailbox",
    "MessageTooLarge",
    "Query",
    "ReleaseConfig",
    "ReleaseResult",
    "StoredMessage",
)

#: How to install what the SMTP side needs (the package is not on PyPI yet: from a clone
#: or the git URL of the README, then, once released, from PyPI).
INSTALL_HINT = install_hint("devserver")

# Mirrors smtp.DEFAULT_DATA_SIZE_LIMIT without importing aiosmtpd at import time.
_DATA_SIZE_LIMIT = 32 * 1024 * 1024


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be between 0 and 65535, not {port}")


class DevServer:
    """An SMTP server that stores what it receives, plus a web inbox showing it.

    Use it as a context manager (``with DevServer(...) as server:``) or call
    :meth:`start` and :meth:`stop`.

    Args:
        host: address both servers listen on (loopback by default).
        smtp_port: SMTP port; 0 picks a free one (see :attr:`smtp_port` after start).
        http_port: web inbox port; 0 picks a free one (see :attr:`http_port`).
        max_messages: keep at most this many messages; the oldest is dropped.
        max_bytes: keep at most this many bytes of messages (as received); the
            oldest are dropped, and a larger message is refused with 552.
        accept_any_auth: offer AUTH PLAIN and LOGIN without TLS and accept any
            credentials, so applications configured with a user name can send.
        data_size_limit: largest message accepted, in bytes (32 MiB).
        on_message: called with each stored message, on the SMTP server's thread.
        verbose: log every HTTP request to stderr.
        refresh: make the inbox page reload itself every this many seconds.
        allowed_hosts: host names the web inbox answers besides loopback names and
            ``host`` (``*``: any). Requests naming another host get 403 (DNS rebinding).
        chaos: rules the SMTP side answers by (see :mod:`.chaos`); also settable
            through ``PUT /api/chaos`` and :attr:`chaos`.
        release: the relay and allow-list for releasing messages (None: off).
        link_check: how far the link check may fetch (default: loopback only).

    Raises:
        ValueError: a port outside 0-65535, ``max_messages`` or ``max_bytes`` below
            1, or a name in ``allowed_hosts`` that is not a host name.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        smtp_port: int = 1025,
        http_port: int = 8025,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        accept_any_auth: bool = True,
        data_size_limit: int = _DATA_SIZE_LIMIT,
        on_message: Callable[[StoredMessage], None] | None = None,
        verbose: bool = False,
        refresh: float | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allowed_hosts: Iterable[str] = (),
        chaos: Chaos | Iterable[ChaosRule] | None = None,
        release: ReleaseConfig | None = None,
        link_check: LinkCheckConfig | None = None,
    ) -> None:
        _check_port("smtp_port", smtp_port)
        _check_port("http_port", http_port)
        self.host = host
        self.mailbox = Mailbox(max_messages, max_bytes)
        self.allowed_hosts = tuple(allowed_hosts)
        # Checked now rather than at start(): a typo is a constructor error.
        HostPolicy(host, self.allowed_hosts)
        #: The chaos rules in force (empty: normal answers); change them at any time.
        self.chaos = chaos if isinstance(chaos, Chaos) else Chaos(chaos or ())
        self.releaser = Releaser(release) if release is not None else None
        self.link_checker = LinkChecker(link_check)
        self.accept_any_auth = accept_any_auth
        self.data_size_limit = data_size_limit
        self.on_message = on_message
        self.verbose = verbose
        self.refresh = refresh
        self._smtp_port = smtp_port
        self._http_port = http_port
        self._smtp: SMTPThread | None = None
        self._http: InboxServer | None = None
        # The ports last bound; they stay readable after stop().
        self._bound: tuple[int, int] | None = None

    @property
    def running(self) -> bool:
        """Whether the server has been started and not stopped."""
        return self._smtp is not None

    @property
    def smtp_port(self) -> int:
        """The SMTP port: the bound one once started, else the one asked for."""
        return self._bound[0] if self._bound is not None else self._smtp_port

    @property
    def http_port(self) -> int:
        """The web inbox port: the bound one once started, else the one asked for."""
        return self._bound[1] if self._bound is not None else self._http_port

    @property
    def inbox_url(self) -> str:
        """The web inbox's address, such as ``http://127.0.0.1:8025/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}/"

    @property
    def messages(self) -> list[StoredMessage]:
        """A snapshot of the stored messages, oldest first."""
        return self.mailbox.messages()

    def wait_for(
        self,
        count: int,
        timeout: float = 10.0,
        *,
        query: str | Query | None = None,
        tag: str | None = None,
    ) -> list[StoredMessage]:
        """Block until at least ``count`` messages are stored; returns them, oldest first.

        Args:
            count: how many.
            timeout: seconds to wait.
            query: count only messages matching this search (see :mod:`.search`).
            tag: count only messages with this plus-address tag: a test that sends to
                ``user+<test id>@...`` waits for its own mail only.

        Raises:
            TimeoutError: fewer than ``count`` messages after ``timeout`` seconds.
        """
        return self.mailbox.wait_for(count, timeout, query=query, tag=tag)

    def search(self, query: str | Query = "", *, tag: str | None = None) -> list[StoredMessage]:
        """The stored messages matching ``query`` (and ``tag``), oldest first."""
        return self.mailbox.messages(query or None, tag=tag)

    def clear(self, query: str | Query | None = None, *, tag: str | None = None) -> None:
        """Forget every stored message, or those matching ``query`` / ``tag``.

        New messages keep counting ids up.
        """
        self.mailbox.clear(query, tag=tag)

    def release(
        self, message: StoredMessage | int, to: Iterable[str] | None = None
    ) -> ReleaseResult:
        """Send a stored message (or its id) to the relay, to ``to`` or its own recipients.

        Raises:
            RuntimeError: release is not configured.
            LookupError: no stored message has this id.
            ReleaseRefused: a recipient is not on the allow-list (nothing sent).
            ReleaseFailed: the relay refused or could not be reached.
        """
        if self.releaser is None:
            raise RuntimeError("release is not configured: pass release=ReleaseConfig(...)")
        if isinstance(message, int):
            found = self.mailbox.get(message)
            if found is None:
                raise LookupError(f"no stored message #{message}")
            message = found
        return self.releaser.release(message, to)

    def check_links(self, message: StoredMessage) -> list[LinkResult]:
        """Check every link of ``message`` (bounded as ``link_check`` says)."""
        return self.link_checker.check_message(message)

    def start(self) -> None:
        """Start the SMTP server and the web inbox; returns once both listen.

        Raises:
            ImportError: aiosmtpd is not installed (see :data:`INSTALL_HINT`).
            OSError: a port cannot be bound (in use, or a bad host).
            RuntimeError: already running.
        """
        if self._smtp is not None:
            raise RuntimeError("the development server is already running")
        try:
            from .smtp import SMTPThread
        except ImportError as error:
            raise ImportError(
                f"the development mail server needs aiosmtpd: {INSTALL_HINT}"
            ) from error
        smtp = SMTPThread(
            self.mailbox,
            self.host,
            self._smtp_port,
            accept_any_auth=self.accept_any_auth,
            # SIZE (RFC 1870) advertises what the byte cap can hold, too.
            data_size_limit=min(self.data_size_limit, self.mailbox.max_bytes),
            on_message=self.on_message,
            chaos=self.chaos,
        )
        smtp.start()
        try:
            http = InboxServer(
                (self.host, self._http_port),
                self.mailbox,
                verbose=self.verbose,
                refresh=self.refresh,
                allowed_hosts=self.allowed_hosts,
                chaos=self.chaos,
                link_checker=self.link_checker,
                releaser=self.releaser,
            )
        except BaseException:
            # Do not leave the SMTP side running behind a failed start.
            smtp.stop()
            raise
        http.start()
        self._smtp, self._http = smtp, http
        self._bound = (smtp.port, http.port)

    def stop(self) -> None:
        """Stop both servers and close their sockets; the messages stay (idempotent)."""
        smtp, self._smtp = self._smtp, None
        http, self._http = self._http, None
        if http is not None:
            http.stop()
        if smtp is not None:
            smtp.stop()

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<DevServer {state} smtp={self.host}:{self.smtp_port} "
            f"inbox={self.inbox_url} messages={len(self.mailbox)}>"
        )
