"""The server's certificate chain, for ``check``: who it names, who issued it, when it ends.

The chain comes from the TLS connection's ``ssl_object``
(``SMTP.get_transport_info("ssl_object")``): Python 3.13 gives the whole
chain the server sent (``get_unverified_chain()``); older versions have the
same call only on the private ``_sslobj``, used when present, else the
leaf alone (``getpeercert(binary_form=True)``). The DER certificates are
decoded with the ``cryptography`` package (the ``cli`` extra); without it,
the leaf is described from ``getpeercert()``, which Python fills in only for
a verified certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ("CertificateInfo", "describe_chain", "name_matches", "peer_chain")


@dataclass(frozen=True)
class CertificateInfo:
    """What ``check`` shows of one certificate."""

    subject: str
    issuer: str
    #: DNS names and IP addresses of the subjectAltName extension.
    names: tuple[str, ...]
    not_after: datetime.datetime | None
    sha256: str | None

    def days_left(self, now: datetime.datetime | None = None) -> float | None:
        """Days until the certificate expires (negative once expired)."""
        if self.not_after is None:
            return None
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400

    def as_json(self) -> dict[str, Any]:
        """The certificate as a JSON object."""
        days = self.days_left()
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "days_left": None if days is None else round(days, 1),
            "sha256": self.sha256,
        }


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The certificates the server presented, leaf first, as DER bytes."""
    chain: Any = None
    public = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        chain = public()
    else:
        private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
        if private is not None:
            chain = private()
    if chain:
        return [
            bytes(item) if isinstance(item, (bytes, bytearray)) else item.public_bytes(2)
            for item in chain  # 2: _ssl.ENCODING_DER
        ]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _decode(der: bytes) -> CertificateInfo:
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    names: list[str] = []
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        names.extend(extension.value.get_values_for_type(x509.DNSName))
        names.extend(str(ip) for ip in extension.value.get_values_for_type(x509.IPAddress))
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        names=tuple(names),
        not_after=certificate.not_valid_after_utc,
        sha256=hashlib.sha256(der).hexdigest(),
    )


def _from_peercert(info: dict[str, Any], der: bytes | None) -> CertificateInfo:
    """A certificate from :meth:`ssl.SSLSocket.getpeercert`'s dictionary."""

    def rdns(key: str) -> str:
        parts = [f"{name}={value}" for rdn in info.get(key, ()) for name, value in rdn]
        return ",".join(reversed(parts))

    names = tuple(
        value for kind, value in info.get("subjectAltName", ()) if kind in ("DNS", "IP Address")
    )
    not_after = None
    if "notAfter" in info:
        seconds = ssl.cert_time_to_seconds(info["notAfter"])
        not_after = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return CertificateInfo(
        subject=rdns("subject"),
        issuer=rdns("issuer"),
        names=names,
        not_after=not_after,
        sha256=hashlib.sha256(der).hexdigest() if der else None,
    )


def cryptography_available() -> bool:
    """Whether DER certificates can be decoded (the ``cryptography`` package)."""
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        return False
    return True


def describe_chain(ssl_object: Any) -> list[CertificateInfo]:
    """The presented chain, decoded (leaf first); see the module's notes."""
    chain = peer_chain(ssl_object)
    if cryptography_available():
        return [_decode(der) for der in chain]
    info = ssl_object.getpeercert()
    if info:
        return [_from_peercert(info, chain[0] if chain else None)]
    return [
        CertificateInfo(
            "(install the cli extra to decode)", "", (), None, hashlib.sha256(der).hexdigest()
        )
        for der in chain
    ]


def name_matches(host: str, names: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of the certificate's names (RFC 6125 6.4; one left ``*``)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        address = None
    if address is not None:
        return any(name == str(address) for name in names)
    wanted = host.rstrip(".").lower()
    for name in names:
        pattern = name.rstrip(".").lower()
        if pattern == wanted:
            return True
        label, _, rest = wanted.partition(".")
        if pattern.startswith("*.") and label and rest == pattern[2:]:
            return True
    return False
