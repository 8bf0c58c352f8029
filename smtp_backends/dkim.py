"""DKIM signing (RFC 6376; Ed25519-SHA256, RFC 8463) with dkimpy (the ``dkim`` extra).

A :class:`DKIMSigner` is configuration: built and checked once (every key
signs a probe message in the constructor, so a bad key fails at start-up,
not at the first send), immutable afterwards, and safe to share between
clients, pools and threads. Give it as ``dkim=`` to :class:`~smtp_backends.SMTP`,
:class:`~smtp_backends.SMTPPool` or :func:`~smtp_backends.send`, and every
message sent there is signed.

Where the signature is made matters: the client signs the message's final
bytes, after serialisation and CRLF normalisation and before dot-stuffing
(which the receiving server undoes), so what the verifier sees is exactly
what was signed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from .protocol.data import normalize_line_endings

__all__ = (
    "DEFAULT_OVERSIGNED_HEADERS",
    "DEFAULT_SIGNED_HEADERS",
    "DKIMKey",
    "DKIMSigner",
)

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

#: Header fields signed when present (RFC 6376 5.4.1's recommendations, less
#: the ones a relay routinely changes).
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Message-ID",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
)

#: Header fields signed once more than they occur, so that nobody can add
#: another one (RFC 6376 8.15): a second From or Subject would break the
#: signature instead of being shown to the reader.
DEFAULT_OVERSIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Reply-To",
    "Message-ID",
)

# RFC 6376 5.4: never these (a relay adds or removes them).
_NEVER_SIGNED = frozenset(
    {"return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature"}
)
_CANONICALIZATIONS = ("simple", "relaxed")
# RFC 6376 3.1: a selector is one or more dot-separated sub-domains.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable ASCII except ":"
_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
# PKCS#8 PrivateKeyInfo for Ed25519 (RFC 8410 7): fixed 16-byte prefix, 32-byte seed.
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PROBE = (
    b"From: probe@example.invalid\r\nTo: probe@example.invalid\r\n"
    b"Subject: DKIM key check\r\n\r\nprobe\r\n"
)


def _dkimpy() -> Any:
    try:
        import dkim
    except ImportError:  # pragma: no cover - the extra is part of `dev`
        from .extras import install_hint

        raise ImportError(f"DKIM signing needs dkimpy: {install_hint('dkim')}") from None
    return dkim


def _check_domain(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"The DKIM {what} must be a str, not {type(value).__name__}")
    value = value.strip().rstrip(".")
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"Invalid DKIM {what}: {value!r}") from None
    if not _DOMAIN.fullmatch(value):
        raise ValueError(f"Invalid DKIM {what}: {value!r}")
    return value.lower()


def _load_key(data: bytes, algorithm: Algorithm | None) -> tuple[bytes, Algorithm]:
    """The key in the form dkimpy takes, and its algorithm.

    RSA: PEM (PKCS#1 or PKCS#8), passed on as is. Ed25519: PKCS#8 PEM
    (``openssl genpkey -algorithm ed25519``) or the base64 32-byte seed
    that dkimpy's ``dknewkey`` writes; dkimpy wants the latter.
    """
    match = _PEM.search(data)
    if match is None:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except binascii.Error:
            raise ValueError("Unreadable DKIM private key: neither PEM nor a base64 key") from None
        if len(seed) != 32 or algorithm == "rsa-sha256":
            raise ValueError("Unreadable DKIM private key: neither PEM nor an Ed25519 seed")
        return base64.b64encode(seed), "ed25519-sha256"
    kind = match.group(1)
    if kind == b"ENCRYPTED PRIVATE KEY":
        raise ValueError("Encrypted DKIM private keys are not supported: decrypt it first")
    try:
        der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except binascii.Error:
        raise ValueError("Unreadable DKIM private key: bad base64 in the PEM block") from None
    if kind == b"PRIVATE KEY" and der.startswith(_ED25519_PKCS8_PREFIX) and len(der) == 48:
        if algorithm == "rsa-sha256":
            raise ValueError("The DKIM key is an Ed25519 key, not RSA")
        return base64.b64encode(der[16:]), "ed25519-sha256"
    if kind not in (b"RSA PRIVATE KEY", b"PRIVATE KEY"):
        raise ValueError(f"Unsupported DKIM key type: {kind.decode()}")
    if algorithm == "ed25519-sha256":
        raise ValueError("The DKIM key is an RSA key, not Ed25519")
    return data, "rsa-sha256"


@dataclasses.dataclass(frozen=True)
class DKIMKey:
    """One signing key: the domain (``d=``), the selector (``s=``) and the private key.

    Args:
        domain: the signing domain, whose DNS publishes the public key at
            ``<selector>._domainkey.<domain>``.
        selector: the selector.
        private_key: the key: RSA as PEM (PKCS#1 or PKCS#8), Ed25519 as
            PKCS#8 PEM or a base64 seed. Kept out of the repr.
        algorithm: ``"rsa-sha256"`` or ``"ed25519-sha256"``; found from the
            key when None.

    Raises:
        ValueError: an invalid domain or selector, or an unreadable key
            (checked by signing a probe message).
        ImportError: dkimpy (or PyNaCl, for Ed25519) is not installed.
    """

    domain: str
    selector: str
    private_key: bytes | str = dataclasses.field(repr=False)
    algorithm: Algorithm | None = None

    def __post_init__(self) -> None:
        dkim = _dkimpy()  # without the extra, say so before anything else
        object.__setattr__(self, "domain", _check_domain(self.domain, "domain"))
        object.__setattr__(self, "selector", _check_domain(self.selector, "selector"))
        if isinstance(self.private_key, str):
            object.__setattr__(self, "private_key", self.private_key.encode("ascii"))
        if not isinstance(self.private_key, bytes):
            raise TypeError("private_key must be bytes (PEM or base64)")
        if self.algorithm not in (None, "rsa-sha256", "ed25519-sha256"):
            raise ValueError(f"Unsupported DKIM algorithm: {self.algorithm!r}")
        key, algorithm = _load_key(self.private_key, self.algorithm)
        object.__setattr__(self, "private_key", key)
        object.__setattr__(self, "algorithm", algorithm)
        try:
            dkim.DKIM(_PROBE, linesep=b"\r\n").sign(
                self.selector.encode(),
                self.domain.encode(),
                key,
                signature_algorithm=algorithm.encode(),
                include_headers=[b"from"],
            )
        except dkim.NaClNotFoundError:  # pragma: no cover - PyNaCl is part of the extra
            from .extras import install_hint

            raise ImportError(f"Ed25519 DKIM keys need PyNaCl: {install_hint('dkim')}") from None
        except dkim.DKIMException as exc:
            raise ValueError(f"Unusable DKIM private key for {self.domain}: {exc}") from None

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        domain: str,
        selector: str,
        algorithm: Algorithm | None = None,
    ) -> DKIMKey:
        """Read the private key from a file (PEM, or an Ed25519 base64 seed).

        Raises:
            OSError: the file cannot be read.
            ValueError: as the constructor.
        """
        with open(path, "rb") as file:
            data = file.read()
        return cls(domain=domain, selector=selector, private_key=data, algorithm=algorithm)


def _as_keys(value: DKIMKey | Iterable[DKIMKey], what: str) -> tuple[DKIMKey, ...]:
    keys = (value,) if isinstance(value, DKIMKey) else tuple(value)
    for key in keys:
        if not isinstance(key, DKIMKey):
            raise TypeError(f"{what} must hold DKIMKey objects, not {type(key).__name__}")
    return keys


def _header_names(names: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{what} must be a sequence of header names, not a str")
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"Invalid header name in {what}: {name!r}")
        if name.lower() in _NEVER_SIGNED:
            raise ValueError(f"{name} must not be signed (RFC 6376 5.4)")
        if name.lower() not in (n.lower() for n in result):
            result.append(name)
    return tuple(result)


# eq=False: compared and hashed by identity (by_domain is a dict), so a
# settings object holding one stays hashable.
@dataclasses.dataclass(frozen=True, eq=False)
class DKIMSigner:
    """Signs every message with one or more DKIM signatures.

    Args:
        keys: the keys to sign with by default: one signature per key, so an
            RSA key and an Ed25519 key give the two signatures RFC 8463
            suggests during the transition.
        by_domain: keys per From domain (``{"example.org": DKIMKey(...)}``);
            a message whose From address is in one of these domains, or a
            subdomain of one, is signed with those keys instead of ``keys``.
        headers: header fields to sign when present (default
            :data:`DEFAULT_SIGNED_HEADERS`); From is required.
        oversign: header fields signed once more than they occur (default
            :data:`DEFAULT_OVERSIGNED_HEADERS`), so none can be added.
        canonicalization: ``(header, body)``, each ``"relaxed"`` (default)
            or ``"simple"``.
        require: raise instead of sending unsigned when no key applies to a
            message (no default ``keys`` and its From domain not in
            ``by_domain``).

    Raises:
        ValueError / TypeError: invalid settings, before any message is sent.
    """

    keys: tuple[DKIMKey, ...] = ()
    by_domain: Mapping[str, tuple[DKIMKey, ...]] = dataclasses.field(default_factory=dict)
    headers: tuple[str, ...] = DEFAULT_SIGNED_HEADERS
    oversign: tuple[str, ...] = DEFAULT_OVERSIGNED_HEADERS
    canonicalization: tuple[str, str] = ("relaxed", "relaxed")
    require: bool = False
    _lower_headers: frozenset[str] = dataclasses.field(
        default=frozenset(), init=False, repr=False, compare=False
    )
    _lower_oversign: tuple[bytes, ...] = dataclasses.field(
        default=(), init=False, repr=False, compare=False
    )
    _canonicalize: tuple[bytes, bytes] = dataclasses.field(
        default=(b"relaxed", b"relaxed"), init=False, repr=False, compare=False
    )

    def __init__(
        self,
        keys: DKIMKey | Iterable[DKIMKey] = (),
        *,
        by_domain: Mapping[str, DKIMKey | Iterable[DKIMKey]] | None = None,
        headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
        oversign: Sequence[str] = DEFAULT_OVERSIGNED_HEADERS,
        canonicalization: tuple[str, str] | str = ("relaxed", "relaxed"),
        require: bool = False,
    ) -> None:
        default = _as_keys(keys, "keys")
        domains: dict[str, tuple[DKIMKey, ...]] = {}
        for domain, value in (by_domain or {}).items():
            domains[_check_domain(domain, "by_domain domain")] = _as_keys(value, "by_domain")
        if not default and not domains:
            raise ValueError("A DKIMSigner needs at least one key (keys or by_domain)")
        signed = _header_names(headers, "headers")
        if "from" not in (name.lower() for name in signed):
            raise ValueError("The From header must be signed (RFC 6376 5.4)")
        extra = _header_names(oversign, "oversign")
        if isinstance(canonicalization, str):
            parts = canonicalization.split("/")
            canonicalization = (parts[0], parts[1] if len(parts) > 1 else "simple")
        header_c, body_c = canonicalization
        if header_c not in _CANONICALIZATIONS or body_c not in _CANONICALIZATIONS:
            raise ValueError(
                f"canonicalization must be 'relaxed' or 'simple', not {canonicalization!r}"
            )
        set_ = object.__setattr__
        set_(self, "keys", default)
        set_(self, "by_domain", domains)
        set_(self, "headers", signed)
        set_(self, "oversign", extra)
        set_(self, "canonicalization", (header_c, body_c))
        set_(self, "require", bool(require))
        set_(self, "_lower_headers", frozenset(name.lower() for name in signed))
        set_(self, "_lower_oversign", tuple(name.lower().encode() for name in extra))
        set_(self, "_canonicalize", (header_c.encode(), body_c.encode()))

    def keys_for(self, from_domain: str | None) -> tuple[DKIMKey, ...]:
        """The keys for mail from ``from_domain``: its own (or a parent's), else the default."""
        if from_domain and self.by_domain:
            labels = from_domain.lower().rstrip(".").split(".")
            for start in range(len(labels) - 1):
                found = self.by_domain.get(".".join(labels[start:]))
                if found:
                    return found
        return self.keys

    def sign(self, data: bytes) -> bytes:
        """Return ``data`` with its DKIM-Signature header fields prepended.

        ``data`` is a whole message; its line endings are normalised to CRLF
        first (what goes on the wire), and the result ends with CRLF.

        Raises:
            ValueError: the message cannot be signed (no From header, no
                header/body separation dkimpy can read), or ``require`` is
                set and no key applies.
        """
        dkim = _dkimpy()
        data = normalize_line_endings(data)
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            signer = dkim.DKIM(data, linesep=b"\r\n")
        except dkim.DKIMException as exc:
            raise ValueError(f"Cannot DKIM-sign this message: {exc}") from None
        from_domain = _from_domain(signer.headers)
        keys = self.keys_for(from_domain)
        if not keys:
            if self.require:
                raise ValueError(f"No DKIM key for the From domain {from_domain!r}")
            return data
        include = self._include(signer.headers)
        signatures: list[bytes] = []
        for key in keys:
            assert key.algorithm is not None
            try:
                signatures.append(
                    signer.sign(
                        key.selector.encode(),
                        key.domain.encode(),
                        key.private_key,
                        signature_algorithm=key.algorithm.encode(),
                        canonicalize=self._canonicalize,
                        include_headers=include,
                    )
                )
            except dkim.DKIMException as exc:
                raise ValueError(f"Cannot DKIM-sign this message: {exc}") from None
        return b"".join(signatures) + data

    def _include(self, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        """h=: each configured field once per occurrence, then the oversigned ones once more."""
        wanted = self._lower_headers
        include = [
            lowered
            for name, _ in headers
            if (lowered := name.lower()).decode("ascii", "replace") in wanted
        ]
        if b"from" not in include:
            raise ValueError("Cannot DKIM-sign a message without a From header")
        include.extend(self._lower_oversign)
        return include


def _from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The domain of the (first) From address, lower case, or None."""
    for name, value in headers:
        if name.lower() == b"from":
            text = value.decode("utf-8", "replace").replace("\r\n", "")
            for _, address in email.utils.getaddresses([text]):
                domain = address.rpartition("@")[2].strip().rstrip(">")
                if domain:
                    return domain.lower()
            return None
    return None
