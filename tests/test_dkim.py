"""DKIM signing: every signature checked with dkimpy's own verifier.

The verifier's DNS lookups are answered from the test's public keys (``dnsfunc``): no
network. Signatures are checked on what :meth:`DKIMSigner.sign` returns and on what a
real SMTP server on loopback received.
"""

from __future__ import annotations

import base64
import email.message
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtp_backends import SMTP, SMTPPool, send
from smtp_backends.dkim import DKIMKey, DKIMSigner
from tests.servers import SMTPServer

# RSA key generation costs a little: one key per size for the whole module.
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=1024)
_ED = ed25519.Ed25519PrivateKey.generate()


def _rsa_pem(key: rsa.RSAPrivateKey, pkcs8: bool = False) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _ed_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _rsa_record(key: rsa.RSAPrivateKey) -> bytes:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _ed_record(key: ed25519.Ed25519PrivateKey) -> bytes:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


DNS = {
    b"rsa._domainkey.example.com.": _rsa_record(_RSA),
    b"ed._domainkey.example.com.": _ed_record(_ED),
    b"other._domainkey.example.org.": _rsa_record(_RSA_OTHER),
}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    """The TXT record of ``name``, from the test's keys only."""
    return DNS.get(name)


RSA_KEY = DKIMKey(domain="example.com", selector="rsa", private_key=_rsa_pem(_RSA))
ED_KEY = DKIMKey(domain="example.com", selector="ed", private_key=_ed_pem(_ED))
OTHER_KEY = DKIMKey(domain="example.org", selector="other", private_key=_rsa_pem(_RSA_OTHER))


def signatures(data: bytes) -> list[dict[bytes, bytes]]:
    """The tags of every DKIM-Signature in ``data``, top first."""
    checker = dkimpy.DKIM(data)
    found = []
    for name, value in checker.headers:
        if name.lower() == b"dkim-signature":
            found.append(dkimpy.util.parse_tag_value(value))
    return found


def verify_all(data: bytes) -> list[bool]:
    """Verify every signature of ``data`` with dkimpy."""
    count = len(signatures(data))
    assert count, "the message carries no DKIM-Signature"
    results = []
    for index in range(count):
        try:
            results.append(bool(dkimpy.DKIM(data).verify(idx=index, dnsfunc=dnsfunc)))
        except dkimpy.ValidationError:  # dkimpy raises for some mismatches (body hash)
            results.append(False)
    return results


def plain_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Sender <sender@example.com>"
    message["To"] = "someone@example.net"
    message["Subject"] = "Plain"
    message["Message-ID"] = "<plain@example.com>"
    message["Date"] = "Fri, 04 Dec 2026 12:00:00 +0000"
    message.set_content("Hello,\n.a line starting with a dot\n\nbye\n")
    return message


def html_message() -> EmailMessage:
    message = plain_message()
    message.replace_header("Subject", "HTML and attachments")
    message.add_alternative("<p>Hello <b>world</b></p>", subtype="html")
    message.add_attachment(
        bytes(range(256)) * 40, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    message.add_attachment("col1,col2\n1,2\n", subtype="csv", filename="data.csv")
    return message


def eight_bit_message() -> EmailMessage:
    message = plain_message()
    message.replace_header("Subject", "Grüße aus Köln")
    message.set_content("Grüße, déjà vu, 日本語\n", cte="8bit")
    return message


def long_line_data() -> bytes:
    return (
        b"From: sender@example.com\r\nTo: someone@example.net\r\nSubject: long\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        + b"x" * 996
        + b"\r\n"
        + b"word " * 199
        + b"\n.\n..dots\n"  # bare LFs and lines that dot-stuffing changes
    )


SAMPLES: dict[str, Callable[[], bytes]] = {
    "plain": lambda: plain_message().as_bytes(policy=plain_message().policy.clone(linesep="\r\n")),
    "html+attachments": lambda: html_message().as_bytes(
        policy=html_message().policy.clone(linesep="\r\n")
    ),
    "8bit": lambda: eight_bit_message().as_bytes(
        policy=eight_bit_message().policy.clone(linesep="\r\n", utf8=True)
    ),
    "long-lines": long_line_data,
}


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_rsa_and_ed25519_signatures_both_verify(sample: str) -> None:
    signed = DKIMSigner([RSA_KEY, ED_KEY]).sign(SAMPLES[sample]())
    tags = signatures(signed)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    assert all(t[b"c"] == b"relaxed/relaxed" for t in tags)
    assert all(t[b"d"] == b"example.com" for t in tags)
    assert verify_all(signed) == [True, True]


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_one_changed_body_byte_breaks_every_signature(sample: str) -> None:
    signed = DKIMSigner([RSA_KEY, ED_KEY]).sign(SAMPLES[sample]())
    head, _, body = signed.partition(b"\r\n\r\n")
    index = len(body) // 2
    while body[index : index + 1] in (b"\r", b"\n", b" "):
        index += 1
    changed = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    assert verify_all(head + b"\r\n\r\n" + changed) == [False, False]


def test_a_changed_signed_header_breaks_the_signature() -> None:
    signed = DKIMSigner(RSA_KEY).sign(SAMPLES["plain"]())
    assert verify_all(signed.replace(b"Subject: Plain", b"Subject: Plaim")) == [False]


def test_an_added_from_header_breaks_the_signature_oversigning() -> None:
    signed = DKIMSigner(RSA_KEY).sign(SAMPLES["plain"]())
    assert verify_all(b"From: evil@example.net\r\n" + signed) == [False]
    assert verify_all(signed) == [True]


def test_default_headers_signed_are_the_present_ones_plus_oversigned() -> None:
    signed = DKIMSigner(RSA_KEY).sign(SAMPLES["plain"]())
    [tags] = signatures(signed)
    signed_names = [name.strip() for name in tags[b"h"].split(b":")]
    for name in (
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    ):
        assert name in signed_names
    assert signed_names.count(b"from") == 2  # once, and once more so none can be added
    assert b"received" not in signed_names


def test_configurable_headers_and_canonicalization() -> None:
    signer = DKIMSigner(
        RSA_KEY, headers=["From", "Subject"], oversign=[], canonicalization=("simple", "simple")
    )
    signed = signer.sign(SAMPLES["plain"]())
    [tags] = signatures(signed)
    assert tags[b"h"].replace(b" ", b"") == b"from:subject"
    assert tags[b"c"] == b"simple/simple"
    assert verify_all(signed) == [True]
    # Headers outside the list may change; listed ones may not.
    assert verify_all(signed.replace(b"To: someone", b"To: another")) == [True]


def test_relaxed_survives_refolding_and_trailing_blank_lines() -> None:
    signed = DKIMSigner(RSA_KEY).sign(SAMPLES["plain"]())
    relaid = signed.replace(b"Subject: Plain", b"Subject:   Plain ") + b"\r\n\r\n"
    assert verify_all(relaid) == [True]


def test_bare_line_feeds_are_normalised_before_signing() -> None:
    data = b"From: sender@example.com\nTo: a@example.net\nSubject: lf\n\nline one\nline two"
    signed = DKIMSigner(RSA_KEY).sign(data)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert signed.endswith(b"line two\r\n")
    assert verify_all(signed) == [True]


def test_key_per_from_domain_and_default() -> None:
    signer = DKIMSigner(RSA_KEY, by_domain={"example.org": OTHER_KEY})
    other = SAMPLES["plain"]().replace(b"sender@example.com", b"news@mail.example.org")
    signed = signer.sign(other)
    [tags] = signatures(signed)
    assert (tags[b"d"], tags[b"s"]) == (b"example.org", b"other")  # a subdomain's parent
    assert verify_all(signed) == [True]
    [tags] = signatures(signer.sign(SAMPLES["plain"]()))
    assert tags[b"d"] == b"example.com"


def test_no_matching_key_sends_unsigned_unless_required() -> None:
    only_org = DKIMSigner(by_domain={"example.org": OTHER_KEY})
    data = SAMPLES["plain"]()
    assert only_org.sign(data) == data
    with pytest.raises(ValueError, match="No DKIM key"):
        DKIMSigner(by_domain={"example.org": OTHER_KEY}, require=True).sign(data)


def test_message_without_from_is_refused() -> None:
    with pytest.raises(ValueError, match="without a From"):
        DKIMSigner(RSA_KEY).sign(b"To: a@example.net\r\nSubject: x\r\n\r\nbody\r\n")


# --------------------------------------------------------------------------- keys


def test_keys_from_files_pkcs1_pkcs8_and_ed25519_seed(tmp_path: Path) -> None:
    (tmp_path / "pkcs1.pem").write_bytes(_rsa_pem(_RSA))
    (tmp_path / "pkcs8.pem").write_bytes(_rsa_pem(_RSA, pkcs8=True))
    (tmp_path / "ed.pem").write_bytes(_ed_pem(_ED))
    seed = _ED.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (tmp_path / "ed.key").write_bytes(base64.b64encode(seed) + b"\n")
    keys = [
        DKIMKey.from_file(tmp_path / "pkcs1.pem", domain="example.com", selector="rsa"),
        DKIMKey.from_file(tmp_path / "pkcs8.pem", domain="example.com", selector="rsa"),
        DKIMKey.from_file(tmp_path / "ed.pem", domain="example.com", selector="ed"),
        DKIMKey.from_file(tmp_path / "ed.key", domain="EXAMPLE.com.", selector="ed"),
    ]
    assert [k.algorithm for k in keys] == ["rsa-sha256", "rsa-sha256"] + ["ed25519-sha256"] * 2
    assert keys[3].domain == "example.com"
    assert verify_all(DKIMSigner(keys).sign(SAMPLES["plain"]())) == [True] * 4


def test_the_private_key_never_shows_in_reprs() -> None:
    assert "PRIVATE" not in repr(RSA_KEY)
    assert "PRIVATE" not in repr(DKIMSigner(RSA_KEY))
    assert "rsa" in repr(RSA_KEY)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"private_key": b"not a key"}, "Unreadable"),
        (
            {
                "private_key": b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n"
                b"-----END RSA PRIVATE KEY-----"
            },
            "Unusable",
        ),
        ({"private_key": _ed_pem(_ED), "algorithm": "rsa-sha256"}, "Ed25519 key, not RSA"),
        ({"private_key": _rsa_pem(_RSA), "algorithm": "ed25519-sha256"}, "RSA key, not Ed25519"),
        ({"private_key": _rsa_pem(_RSA), "selector": "bad selector"}, "selector"),
        ({"private_key": _rsa_pem(_RSA), "domain": "exa mple.com"}, "domain"),
        ({"private_key": _rsa_pem(_RSA), "algorithm": "rsa-sha1"}, "algorithm"),
    ],
)
def test_bad_keys_fail_at_construction(kwargs: dict[str, object], error: str) -> None:
    arguments: dict[str, object] = {"domain": "example.com", "selector": "s", **kwargs}
    with pytest.raises(ValueError, match=error):
        DKIMKey(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, "at least one key"),
        ({"keys": RSA_KEY, "headers": ["To", "Subject"]}, "From header must be signed"),
        ({"keys": RSA_KEY, "headers": ["From", "Received"]}, "must not be signed"),
        ({"keys": RSA_KEY, "headers": ["From", "Bad:Name"]}, "Invalid header name"),
        ({"keys": RSA_KEY, "canonicalization": ("loose", "simple")}, "canonicalization"),
    ],
)
def test_bad_signer_settings_fail_at_construction(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        DKIMSigner(**kwargs)  # type: ignore[arg-type]


def test_signer_type_is_checked_by_the_config() -> None:
    with pytest.raises(TypeError, match="DKIMSigner"):
        SMTP(dkim="yes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- over the wire


SIGNER = DKIMSigner([RSA_KEY, ED_KEY])


def _received(server: SMTPServer) -> list[bytes]:
    return [m.original_content for m in server.messages]


async def test_messages_sent_through_a_real_server_verify_as_received(smtpd: SMTPServer) -> None:
    host, port = smtpd.address
    async with SMTP(hostname=host, port=port, dkim=SIGNER) as client:
        await client.send_message(plain_message())
        await client.send_message(html_message())
        await client.send_message(eight_bit_message())
        await client.sendmail("sender@example.com", ["x@example.net"], long_line_data())
        await client.send_messages(
            [plain_message(), ("sender@example.com", "y@example.net", SAMPLES["plain"]())]
        )
    received = _received(smtpd)
    assert len(received) == 6
    for data in received:
        assert verify_all(data) == [True, True]
    # Dot-stuffing happened on the wire and was undone by the server, not signed.
    assert b"\r\n.a line starting with a dot" in received[0]


async def test_pool_and_send_sign_every_message(smtpd: SMTPServer) -> None:
    host, port = smtpd.address
    async with SMTPPool(hostname=host, port=port, max_connections=2, dkim=SIGNER) as pool:
        await pool.send_message(plain_message())
        await pool.send_messages([html_message() for _ in range(3)])
    await send(plain_message(), hostname=host, port=port, dkim=DKIMSigner(ED_KEY))
    received = _received(smtpd)
    assert [len(verify_all(data)) for data in received] == [2, 2, 2, 2, 1]
    assert all(all(verify_all(data)) for data in received)


async def test_bcc_is_removed_before_signing(smtpd: SMTPServer) -> None:
    message = plain_message()
    message["Bcc"] = "hidden@example.net"
    host, port = smtpd.address
    async with SMTP(hostname=host, port=port, dkim=SIGNER) as client:
        await client.send_message(message)
    [data] = _received(smtpd)
    assert b"hidden@" not in data
    assert verify_all(data) == [True, True]
    assert "hidden@example.net" in smtpd.messages[0].rcpt_tos


async def test_without_dkim_nothing_is_signed(smtpd: SMTPServer) -> None:
    host, port = smtpd.address
    async with SMTP(hostname=host, port=port) as client:
        assert client.config.dkim is None
        await client.send_message(plain_message())
    assert b"DKIM-Signature" not in _received(smtpd)[0]


def test_message_class_is_untouched_by_signing() -> None:
    message = plain_message()
    before = message.as_bytes()
    SIGNER.sign(message.as_bytes())
    assert message.as_bytes() == before
    assert isinstance(message, email.message.Message)
