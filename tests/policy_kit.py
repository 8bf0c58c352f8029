"""What the policy tests of every framework share (tests/test_policies_*.py).

DKIM keys written to files as a settings file would name them, DNS answered from
those keys for dkimpy's verifier (no network), a check of every signature on the
bytes a loopback server received, and the rate measurement.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SENDER = "sender@example.com"
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED = ed25519.Ed25519PrivateKey.generate()
_ORG = rsa.generate_private_key(public_exponent=65537, key_size=2048)

RSA_PEM = _RSA.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
ED_PEM = _ED.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
ORG_PEM = _ORG.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


def _rsa_record(key: rsa.RSAPrivateKey) -> bytes:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


_ED_RAW = _ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
DNS = {
    b"s1._domainkey.example.com.": _rsa_record(_RSA),
    b"e1._domainkey.example.com.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(_ED_RAW),
    b"org._domainkey.example.org.": _rsa_record(_ORG),
}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    """The TXT record of ``name``, from the test keys only."""
    return DNS.get(name)


def dkim_settings(tmp_path: Path) -> dict[str, Any]:
    """DKIM settings as plain data (what a settings file holds): an RSA key from a
    file and an Ed25519 key as PEM text (two signatures), example.org by domain."""
    rsa_file = tmp_path / "dkim-rsa.pem"
    rsa_file.write_bytes(RSA_PEM)
    return {
        "keys": [
            {"domain": "example.com", "selector": "s1", "key_file": str(rsa_file)},
            {"domain": "example.com", "selector": "e1", "private_key": ED_PEM.decode()},
        ],
        "by_domain": {"example.org": {"selector": "org", "private_key": ORG_PEM.decode()}},
        "headers": ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version"],
    }


def signed_by(data: bytes) -> list[tuple[bytes, bytes, bool]]:
    """``(d=, s=, verified)`` for every DKIM-Signature of ``data``, checked by dkimpy."""
    found = []
    checker = dkimpy.DKIM(data)
    tags = [
        dkimpy.util.parse_tag_value(value)
        for name, value in checker.headers
        if name.lower() == b"dkim-signature"
    ]
    for index, tag in enumerate(tags):
        try:
            ok = bool(dkimpy.DKIM(data).verify(idx=index, dnsfunc=dnsfunc))
        except dkimpy.ValidationError:
            ok = False
        found.append((tag[b"d"], tag[b"s"], ok))
    return found


def tampered(data: bytes) -> bytes:
    """``data`` with one byte of its body changed."""
    head, sep, body = data.partition(b"\r\n\r\n")
    index = body.index(b"o")
    return head + sep + body[:index] + b"0" + body[index + 1 :]


#: The rate the rate-limit tests configure, and how many messages they send: the
#: first goes at once, the others one every 1/RATE s, so the whole takes
#: (COUNT - 1) / RATE = 1 s at least however fast the machine; a loaded machine
#: only makes it slower, hence the generous upper bound.
RATE = 20
COUNT = 21
MIN_SECONDS = (COUNT - 1) / RATE * 0.95
MAX_SECONDS = 8.0


def timed(send: Callable[[], Any]) -> float:
    """Seconds ``send()`` took."""
    start = time.monotonic()
    send()
    return time.monotonic() - start


def dsn_script() -> list[tuple[object, ...]]:
    """A lock-step server offering DSN that takes one message (aiosmtpd refuses the
    DSN parameters): the client's MAIL and RCPT lines are in ``received_lines``."""
    return [
        ("send", b"220 mail.example ESMTP\r\n"),
        ("expect", b"EHLO"),
        ("send", b"250-mail.example\r\n250-DSN\r\n250 REQUIRETLS\r\n"),
        ("expect", b"MAIL"),
        ("send", b"250 ok\r\n"),
        ("expect", b"RCPT"),
        ("send", b"250 ok\r\n"),
        ("expect", b"DATA"),
        ("send", b"354 go\r\n"),
        ("expect_data",),
        ("send", b"250 queued\r\n"),
        ("expect", b"QUIT"),
        ("send", b"221 bye\r\n"),
        ("close",),
    ]
