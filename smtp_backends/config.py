"""Connection settings: defined once, validated once, shared by client and pool."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Union

from .protocol.commands import ehlo_name

if TYPE_CHECKING:
    from .dkim import DKIMSigner
    from .failover import Failover
    from .protocol.dsn import DSN
    from .proxy import SMTPProxy
    from .ratelimit import RateLimiter

__all__ = (
    "DEFAULT_TIMEOUT",
    "ConnectionConfig",
    "OAuthTokenGenerator",
    "SMTPTokenGenerator",
    "SocketPath",
)

#: Seconds allowed for each network operation unless told otherwise (as aiosmtplib).
DEFAULT_TIMEOUT = 60.0

#: An async callable returning a fresh OAuth 2.0 access token, for XOAUTH2.
OAuthTokenGenerator = Callable[[], Awaitable[str]]
#: aiosmtplib's name for :data:`OAuthTokenGenerator`.
SMTPTokenGenerator = OAuthTokenGenerator
SocketPath = Union[str, bytes, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class ConnectionConfig:
    """Everything needed to open and prepare one SMTP connection.

    The keywords are those of :class:`smtp_backends.SMTP` (aiosmtplib's),
    plus ``pipelining``, ``allow_insecure_auth`` and ``send_timeout`` (most
    seconds for one whole send, on top of the per-operation ``timeout``;
    None: no such bound), and the policies, each
    None (off, costing nothing) unless given: ``dkim`` (a
    :class:`~smtp_backends.dkim.DKIMSigner`), ``rate_limit`` (a
    :class:`~smtp_backends.ratelimit.RateLimiter`, shared by everyone holding
    it), ``failover`` (a :class:`~smtp_backends.failover.Failover`: its hosts
    replace ``hostname``/``port`` for connecting), ``proxy`` (a
    :class:`~smtp_backends.proxy.SMTPProxy` to tunnel through), ``dsn`` (a
    :class:`~smtp_backends.protocol.dsn.DSN`: the notifications every message
    asks for unless a send says otherwise) and ``requiretls`` (RFC 8689 for
    every message). Secrets are kept out of the repr.

    Raises:
        ValueError: contradictory or invalid settings (see :meth:`validate`).
    """

    hostname: str | None = None
    port: int | None = None
    username: str | bytes | None = None
    password: str | bytes | None = dataclasses.field(default=None, repr=False)
    oauth_token_generator: OAuthTokenGenerator | None = dataclasses.field(default=None, repr=False)
    local_hostname: str | None = None
    source_address: tuple[str, int] | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    use_tls: bool = False
    start_tls: bool | None = None
    validate_certs: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    tls_context: ssl.SSLContext | None = None
    cert_bundle: str | None = None
    socket_path: SocketPath | None = None
    sock: socket.socket | None = None
    pipelining: bool = True
    allow_insecure_auth: bool = False
    send_timeout: float | None = None
    dkim: DKIMSigner | None = None
    rate_limit: RateLimiter | None = None
    failover: Failover | None = None
    proxy: SMTPProxy | None = None
    dsn: DSN | None = None
    requiretls: bool = False

    def __post_init__(self) -> None:
        # As aiosmtplib: whitespace around the EHLO/HELO name is dropped (a name
        # read from a file or an environment variable often ends with a newline);
        # whitespace inside it is refused by validate().
        if isinstance(self.local_hostname, str):
            object.__setattr__(self, "local_hostname", self.local_hostname.strip())
        self.validate()

    def validate(self) -> None:
        """Check the settings together.

        Raises:
            ValueError: use_tls with start_tls=True, tls_context with a client
                certificate, password with a token generator, several ways to
                reach the server, a bad port, timeout, send_timeout or local
                host name.
        """
        if self.use_tls and self.start_tls:
            raise ValueError("The start_tls and use_tls options are not compatible.")
        if self.tls_context is not None and (self.client_cert or self.client_key):
            raise ValueError("Either a TLS context or a client certificate/key, not both.")
        if self.password is not None and self.oauth_token_generator is not None:
            raise ValueError(
                "password and oauth_token_generator are mutually exclusive: give one, not both."
            )
        if self.socket_path is not None and self.sock is not None:
            raise ValueError("The socket_path and sock options are not compatible.")
        through_socket = self.socket_path is not None or self.sock is not None
        if through_socket and self.port is not None:
            raise ValueError("A socket_path or sock replaces the port: give no port with it.")
        if through_socket and self.use_tls and self.hostname is None:
            # The certificate is checked against hostname: without it, nothing is.
            raise ValueError("TLS over a socket_path or sock needs the hostname to verify.")
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 0 < self.port < 65536
        ):
            raise ValueError(f"Invalid port: {self.port!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not self.timeout >= 0
        ):
            # 0 is allowed, as in aiosmtplib: every wait then times out at once.
            raise ValueError(f"Invalid timeout: {self.timeout!r} (seconds >= 0, or None)")
        if self.send_timeout is not None and (
            isinstance(self.send_timeout, bool)
            or not isinstance(self.send_timeout, (int, float))
            or not self.send_timeout > 0
        ):
            raise ValueError(f"Invalid send_timeout: {self.send_timeout!r} (seconds > 0, or None)")
        if self.hostname is not None and not isinstance(self.hostname, str):
            raise TypeError(f"hostname must be a str, not {type(self.hostname).__name__}")
        if self.hostname is not None and ("\r" in self.hostname or "\n" in self.hostname):
            raise ValueError(f"The hostname contains a line break: {self.hostname!r}")
        if self.local_hostname is not None:
            ehlo_name(self.local_hostname)
        if self.dkim is not None and not callable(getattr(self.dkim, "sign", None)):
            raise TypeError("dkim must be a smtp_backends.dkim.DKIMSigner")
        if self.rate_limit is not None and not callable(getattr(self.rate_limit, "send", None)):
            raise TypeError("rate_limit must be a smtp_backends.ratelimit.RateLimiter")
        if self.failover is not None:
            if not callable(getattr(self.failover, "connect", None)):
                raise TypeError("failover must be a smtp_backends.failover.Failover")
            if self.socket_path is not None or self.sock is not None:
                raise ValueError("failover picks TCP hosts: not with socket_path or sock")
        if self.dsn is not None and not callable(getattr(self.dsn, "rcpt_options", None)):
            raise TypeError("dsn must be a smtp_backends.protocol.dsn.DSN")
        if self.proxy is not None:
            if not callable(getattr(self.proxy, "open", None)):
                raise TypeError("proxy must be a smtp_backends.proxy.SMTPProxy")
            if self.socket_path is not None or self.sock is not None:
                raise ValueError("A proxy reaches TCP hosts: not with socket_path or sock")

    def replace(self, *, skip_none: bool = False, **changes: Any) -> ConnectionConfig:
        """A copy with ``changes`` applied and validated.

        Args:
            skip_none: treat None values as "not given" (keep the current value).

        Raises:
            TypeError: an unknown keyword.
            ValueError: the result is invalid.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"Unknown connection option(s): {', '.join(sorted(unknown))}")
        if skip_none:
            changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def effective_hostname(self) -> str:
        """The server name to connect to and to verify (``localhost`` by default)."""
        return self.hostname or "localhost"

    @property
    def effective_port(self) -> int:
        """The port: explicit, else 465 with use_tls, 587 with start_tls=True, else 25."""
        if self.port is not None:
            return self.port
        if self.use_tls:
            return 465
        if self.start_tls:
            return 587
        return 25

    def build_tls_context(self) -> ssl.SSLContext:
        """The client TLS context: the given one, or a verifying default.

        Certificates and host names are verified unless ``validate_certs`` is
        False; ``cert_bundle`` adds trusted CAs; ``client_cert``/``client_key``
        present a client certificate.
        """
        if self.tls_context is not None:
            return self.tls_context
        context = ssl.create_default_context(cafile=self.cert_bundle)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            # Without a password callback OpenSSL prompts for an encrypted key's
            # pass phrase on the terminal, blocking a server process there.
            context.load_cert_chain(
                self.client_cert, keyfile=self.client_key, password=_refuse_key_password
            )
        return context


def _refuse_key_password() -> str:
    """Called by OpenSSL only for an encrypted client key (there is no option for its password)."""
    raise ValueError(
        "client_key is encrypted: decrypt it, or load it with its password into an "
        "ssl.SSLContext (load_cert_chain(..., password=...)) and pass tls_context"
    )
