"""The exception hierarchy, its shapes (like aiosmtplib's) and pickling (smtp_backends.errors)."""

from __future__ import annotations

import asyncio
import copy
import pickle
import smtplib
import ssl
import sys

import pytest

import smtp_backends.errors as errors_module
from smtp_backends.errors import (
    SMTPAuthenticationError,
    SMTPCertificateError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPGreetingLostError,
    SMTPHeloError,
    SMTPInsecureAuthError,
    SMTPNotSupported,
    SMTPPoolClosedError,
    SMTPPoolTimeoutError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
    SMTPUnknownOutcomeError,
    SMTPUnknownOutcomeTimeoutError,
)

# Every class, with the bases it promises (besides SMTPException).
BASES: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    SMTPException: (smtplib.SMTPException,),
    SMTPServerDisconnected: (smtplib.SMTPServerDisconnected, ConnectionError),
    SMTPUnknownOutcomeError: (
        SMTPServerDisconnected,
        smtplib.SMTPServerDisconnected,
        ConnectionError,
    ),
    SMTPTimeoutError: (TimeoutError,),
    SMTPReadTimeoutError: (SMTPTimeoutError, TimeoutError),
    SMTPUnknownOutcomeTimeoutError: (
        SMTPUnknownOutcomeError,
        SMTPServerDisconnected,
        SMTPReadTimeoutError,
        SMTPTimeoutError,
        TimeoutError,
        ConnectionError,
    ),
    SMTPPoolTimeoutError: (SMTPTimeoutError, TimeoutError),
    SMTPGreetingLostError: (
        SMTPConnectError,
        SMTPServerDisconnected,
        smtplib.SMTPConnectError,
        smtplib.SMTPServerDisconnected,
        ConnectionError,
    ),
    SMTPPoolClosedError: (),
    SMTPNotSupported: (smtplib.SMTPNotSupportedError,),
    SMTPInsecureAuthError: (),
    SMTPResponseException: (smtplib.SMTPResponseException,),
    SMTPProtocolError: (SMTPResponseException, smtplib.SMTPResponseException),
    SMTPConnectError: (smtplib.SMTPConnectError, ConnectionError),
    SMTPTLSError: (SMTPConnectError, ssl.SSLError, ConnectionError),
    SMTPCertificateError: (SMTPTLSError, ssl.SSLCertVerificationError, ssl.SSLError),
    SMTPConnectTimeoutError: (SMTPTimeoutError, SMTPConnectError, TimeoutError, ConnectionError),
    SMTPConnectResponseError: (SMTPResponseException, SMTPConnectError, ConnectionError),
    SMTPHeloError: (SMTPResponseException, smtplib.SMTPHeloError),
    SMTPDataError: (SMTPResponseException, smtplib.SMTPDataError),
    SMTPAuthenticationError: (SMTPResponseException, smtplib.SMTPAuthenticationError),
    SMTPSenderRefused: (SMTPResponseException, smtplib.SMTPSenderRefused),
    SMTPRecipientRefused: (SMTPResponseException, smtplib.SMTPResponseException),
    SMTPRecipientsRefused: (smtplib.SMTPRecipientsRefused,),
}

# Things the classes must NOT be.
NOT_BASES: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    SMTPException: (ConnectionError, TimeoutError),
    SMTPServerDisconnected: (TimeoutError,),
    SMTPUnknownOutcomeError: (TimeoutError,),
    SMTPTimeoutError: (ConnectionError,),
    SMTPReadTimeoutError: (ConnectionError, SMTPUnknownOutcomeError),
    SMTPPoolTimeoutError: (ConnectionError, SMTPReadTimeoutError),
    SMTPResponseException: (ConnectionError,),
    SMTPProtocolError: (ConnectionError, SMTPServerDisconnected),
    SMTPConnectError: (ssl.SSLError, TimeoutError),
    SMTPTLSError: (ssl.SSLCertVerificationError,),
    SMTPAuthenticationError: (SMTPProtocolError,),
    SMTPRecipientsRefused: (SMTPResponseException,),
    SMTPInsecureAuthError: (SMTPResponseException, ConnectionError),
}


def test_every_public_name_is_covered() -> None:
    assert set(errors_module.__all__) == {cls.__name__ for cls in BASES}
    for name in errors_module.__all__:
        assert getattr(errors_module, name).__module__ == "smtp_backends.errors"


def test_public_package_reexports_errors() -> None:
    import smtp_backends

    for cls in BASES:
        assert getattr(smtp_backends, cls.__name__) is cls


@pytest.mark.parametrize(("cls", "bases"), BASES.items(), ids=[c.__name__ for c in BASES])
def test_hierarchy(cls: type[BaseException], bases: tuple[type[BaseException], ...]) -> None:
    assert issubclass(cls, SMTPException)
    assert issubclass(cls, smtplib.SMTPException)
    for base in bases:
        assert issubclass(cls, base), base
    for base in NOT_BASES.get(cls, ()):
        assert not issubclass(cls, base), base


def test_smtplib_handlers_catch_ours() -> None:
    with pytest.raises(smtplib.SMTPSenderRefused):
        raise SMTPSenderRefused(550, "No", "s@example.org")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        raise SMTPUnknownOutcomeError("gone")
    with pytest.raises(ssl.SSLCertVerificationError):
        raise SMTPCertificateError("certificate verify failed")
    with pytest.raises(OSError):
        raise SMTPConnectTimeoutError("timed out")


# Shapes -------------------------------------------------------------------------------------

SAMPLES: list[tuple[BaseException, str, str, tuple[object, ...]]] = [
    # (instance, str, repr, args)
    (SMTPException("m"), "m", "SMTPException('m')", ("m",)),
    (SMTPServerDisconnected("gone"), "gone", "SMTPServerDisconnected('gone')", ("gone",)),
    (
        SMTPUnknownOutcomeError("after dot"),
        "after dot",
        "SMTPUnknownOutcomeError('after dot')",
        ("after dot",),
    ),
    (
        SMTPUnknownOutcomeTimeoutError("t"),
        "t",
        "SMTPUnknownOutcomeTimeoutError('t')",
        ("t",),
    ),
    (SMTPTimeoutError("t"), "t", "SMTPTimeoutError('t')", ("t",)),
    (SMTPReadTimeoutError("t"), "t", "SMTPReadTimeoutError('t')", ("t",)),
    (SMTPPoolTimeoutError("t"), "t", "SMTPPoolTimeoutError('t')", ("t",)),
    (SMTPPoolClosedError("c"), "c", "SMTPPoolClosedError('c')", ("c",)),
    (SMTPNotSupported("n"), "n", "SMTPNotSupported('n')", ("n",)),
    (SMTPInsecureAuthError("i"), "i", "SMTPInsecureAuthError('i')", ("i",)),
    (SMTPResponseException(550, "x"), "(550, 'x')", "SMTPResponseException(550, 'x')", (550, "x")),
    (SMTPProtocolError("bad"), "bad", "SMTPProtocolError('bad')", ("bad",)),
    (SMTPConnectError("refused"), "refused", "SMTPConnectError('refused')", ("refused",)),
    (SMTPTLSError("handshake"), "handshake", "SMTPTLSError('handshake')", ("handshake",)),
    (SMTPCertificateError("cert"), "cert", "SMTPCertificateError('cert')", ("cert",)),
    (SMTPConnectTimeoutError("t"), "t", "SMTPConnectTimeoutError('t')", ("t",)),
    (
        SMTPConnectResponseError(554, "go away"),
        "(554, 'go away')",
        "SMTPConnectResponseError(554, 'go away')",
        (554, "go away"),
    ),
    (SMTPHeloError(501, "h"), "(501, 'h')", "SMTPHeloError(501, 'h')", (501, "h")),
    (SMTPDataError(554, "d"), "(554, 'd')", "SMTPDataError(554, 'd')", (554, "d")),
    (
        SMTPAuthenticationError(535, "a"),
        "(535, 'a')",
        "SMTPAuthenticationError(535, 'a')",
        (535, "a"),
    ),
    (
        SMTPSenderRefused(550, "x", "s@example.org"),
        "(550, 'x', 's@example.org')",
        "SMTPSenderRefused(550, 'x', 's@example.org')",
        (550, "x", "s@example.org"),
    ),
    (
        SMTPRecipientRefused(550, "x", "r@example.org"),
        "(550, 'x', 'r@example.org')",
        "SMTPRecipientRefused(550, 'x', 'r@example.org')",
        (550, "x", "r@example.org"),
    ),
]


@pytest.mark.parametrize(
    ("exc", "text", "representation", "args"),
    SAMPLES,
    ids=[type(s[0]).__name__ for s in SAMPLES],
)
def test_shapes(
    exc: BaseException, text: str, representation: str, args: tuple[object, ...]
) -> None:
    assert str(exc) == text
    assert repr(exc) == representation
    assert exc.args == args


def test_recipients_refused_shape() -> None:
    inner = [
        SMTPRecipientRefused(550, "5.1.1 Unknown", "a@example.org"),
        SMTPRecipientRefused(452, "4.5.3 Too many", "b@example.org"),
    ]
    exc = SMTPRecipientsRefused(inner)
    assert exc.recipients is inner
    assert exc.args == (inner,)
    assert str(exc) == (
        "[SMTPRecipientRefused(550, '5.1.1 Unknown', 'a@example.org'), "
        "SMTPRecipientRefused(452, '4.5.3 Too many', 'b@example.org')]"
    )
    assert repr(exc) == f"SMTPRecipientsRefused({inner!r})"
    assert exc.message == "a@example.org: 550 5.1.1 Unknown; b@example.org: 452 4.5.3 Too many"
    assert SMTPRecipientsRefused([]).message == ""


@pytest.mark.parametrize(
    ("exc", "code", "message", "smtp_error"),
    [
        (SMTPResponseException(550, "x"), 550, "x", b"x"),
        (SMTPResponseException(421, "4.3.2 é"), 421, "4.3.2 é", "4.3.2 é".encode()),
        (SMTPResponseException(550, "a\ud800b"), 550, "a\ud800b", b"a?b"),
        (SMTPProtocolError("Reply too long"), -1, "Reply too long", b"Reply too long"),
        (SMTPConnectResponseError(554, "no"), 554, "no", b"no"),
        (SMTPHeloError(501, "h"), 501, "h", b"h"),
        (SMTPDataError(554, "d"), 554, "d", b"d"),
        (SMTPAuthenticationError(-1, "rounds"), -1, "rounds", b"rounds"),
        (SMTPSenderRefused(553, "bad", "s@example.org"), 553, "bad", b"bad"),
        (SMTPRecipientRefused(550, "no", "r@example.org"), 550, "no", b"no"),
    ],
)
def test_response_attributes(
    exc: SMTPResponseException, code: int, message: str, smtp_error: bytes
) -> None:
    assert exc.code == code
    assert exc.smtp_code == code
    assert exc.message == message
    assert exc.smtp_error == smtp_error


@pytest.mark.parametrize(
    "exc",
    [
        SMTPConnectError("c"),
        SMTPTLSError("c"),
        SMTPCertificateError("c"),
        SMTPConnectTimeoutError("c"),
    ],
)
def test_connect_errors_have_no_reply(exc: SMTPConnectError) -> None:
    assert exc.smtp_code == -1
    assert exc.smtp_error == b"c"
    assert exc.message == "c"


def test_message_attributes() -> None:
    assert SMTPException("m").message == "m"
    assert SMTPServerDisconnected("gone").message == "gone"
    assert SMTPSenderRefused(550, "x", "s@example.org").sender == "s@example.org"
    assert SMTPRecipientRefused(550, "x", "r@example.org").recipient == "r@example.org"


def test_oserror_formatting_is_not_used() -> None:
    # smtplib.SMTPException derives from OSError, which would show "[Errno 550] x".
    assert str(SMTPResponseException(550, "x")) == "(550, 'x')"
    assert str(SMTPTLSError("handshake failed")) == "handshake failed"
    assert "Errno" not in str(SMTPSenderRefused(550, "x", "s@example.org"))


def test_shapes_match_aiosmtplib() -> None:
    aiosmtplib = pytest.importorskip("aiosmtplib")
    built = [
        ("SMTPException", ("m",)),
        ("SMTPServerDisconnected", ("gone",)),
        ("SMTPTimeoutError", ("t",)),
        ("SMTPReadTimeoutError", ("t",)),
        ("SMTPConnectTimeoutError", ("t",)),
        ("SMTPNotSupported", ("n",)),
        ("SMTPConnectError", ("c",)),
        ("SMTPResponseException", (550, "x")),
        ("SMTPConnectResponseError", (554, "no")),
        ("SMTPHeloError", (501, "h")),
        ("SMTPDataError", (554, "d")),
        ("SMTPAuthenticationError", (535, "a")),
        ("SMTPSenderRefused", (550, "x", "s@example.org")),
        ("SMTPRecipientRefused", (550, "x", "r@example.org")),
    ]
    for name, args in built:
        ours = getattr(errors_module, name)(*args)
        theirs = getattr(aiosmtplib, name)(*args)
        assert (str(ours), repr(ours), ours.args) == (str(theirs), repr(theirs), theirs.args), name
        assert ours.message == theirs.message, name
        if hasattr(theirs, "code"):
            assert ours.code == theirs.code, name
    ours_many = SMTPRecipientsRefused([SMTPRecipientRefused(550, "x", "r@example.org")])
    theirs_many = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "x", "r@example.org")]
    )
    assert str(ours_many) == str(theirs_many)
    assert repr(ours_many) == repr(theirs_many)


# Pickling --------------------------------------------------------------------------------

ALL_INSTANCES: list[BaseException] = [
    *(sample[0] for sample in SAMPLES),
    SMTPRecipientsRefused(
        [
            SMTPRecipientRefused(550, "no", "a@example.org"),
            SMTPRecipientRefused(451, "later", "b@example.org"),
        ]
    ),
    SMTPResponseException(550, "non-ASCII é ✓"),
]


def _state(exc: BaseException) -> object:
    """Type, args and attributes, recursively, so that two copies compare equal."""

    def norm(value: object) -> object:
        if isinstance(value, BaseException):
            return _state(value)
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return value

    return (type(exc), norm(exc.args), norm(vars(exc)), str(exc), repr(exc))


@pytest.mark.parametrize("exc", ALL_INSTANCES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(exc: BaseException, protocol: int) -> None:
    clone = pickle.loads(pickle.dumps(exc, protocol=protocol))
    assert clone is not exc
    assert _state(clone) == _state(exc)


@pytest.mark.parametrize("exc", ALL_INSTANCES, ids=lambda e: type(e).__name__)
def test_copy_round_trip(exc: BaseException) -> None:
    assert _state(copy.copy(exc)) == _state(exc)
    assert _state(copy.deepcopy(exc)) == _state(exc)


def test_pickle_keeps_the_attributes_handlers_use() -> None:
    sender = pickle.loads(pickle.dumps(SMTPSenderRefused(553, "bad", "s@example.org")))
    assert (sender.code, sender.message, sender.sender) == (553, "bad", "s@example.org")
    assert (sender.smtp_code, sender.smtp_error) == (553, b"bad")
    many = pickle.loads(
        pickle.dumps(SMTPRecipientsRefused([SMTPRecipientRefused(550, "no", "a@example.org")]))
    )
    assert [(r.code, r.message, r.recipient) for r in many.recipients] == [
        (550, "no", "a@example.org")
    ]
    assert many.message == "a@example.org: 550 no"
    protocol = pickle.loads(pickle.dumps(SMTPProtocolError("Reply line too long")))
    assert (protocol.code, protocol.message, protocol.args) == (
        -1,
        "Reply line too long",
        ("Reply line too long",),
    )
    tls = pickle.loads(pickle.dumps(SMTPCertificateError("hostname mismatch")))
    assert isinstance(tls, ssl.SSLCertVerificationError)
    assert (tls.smtp_code, tls.message) == (-1, "hostname mismatch")


def test_exception_with_traceback_and_cause_pickles() -> None:
    try:
        try:
            raise OSError("connection reset")
        except OSError as exc:
            raise SMTPUnknownOutcomeError("Connection lost after the end of data") from exc
    except SMTPUnknownOutcomeError as exc:
        clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is SMTPUnknownOutcomeError
    assert clone.message == "Connection lost after the end of data"


def test_every_name_aiosmtplib_exports_is_exported_here() -> None:
    """Code written for aiosmtplib runs with the import changed: its public names exist."""
    aiosmtplib = pytest.importorskip("aiosmtplib")
    import smtp_backends

    assert set(aiosmtplib.__all__) <= set(smtp_backends.__all__)
    for name in aiosmtplib.__all__:
        assert hasattr(smtp_backends, name), name
    assert [(s.name, s.value) for s in smtp_backends.SMTPStatus] == [
        (s.name, s.value) for s in aiosmtplib.SMTPStatus
    ]
    assert smtp_backends.SMTPStatus.completed == 250
    assert issubclass(smtp_backends.SMTPStatus, int)


TIMEOUT_ERRORS = [
    SMTPTimeoutError,
    SMTPReadTimeoutError,
    SMTPConnectTimeoutError,
    SMTPUnknownOutcomeTimeoutError,
    SMTPPoolTimeoutError,
]


@pytest.mark.parametrize("cls", TIMEOUT_ERRORS, ids=lambda cls: cls.__name__)
def test_timeouts_are_asyncio_timeouts(cls: type[SMTPTimeoutError]) -> None:
    """Before Python 3.11 asyncio.TimeoutError is not the builtin TimeoutError; ours are
    both on every supported Python, as aiosmtplib's are asyncio's (the 3.10 job checks)."""
    assert issubclass(cls, asyncio.TimeoutError)
    assert issubclass(cls, TimeoutError)
    with pytest.raises(asyncio.TimeoutError):
        raise cls("timed out")
    # What asyncio.wait_for raises and what we raise are caught by the same handler.
    caught = []
    for error in (cls("timed out"), asyncio.TimeoutError()):
        try:
            raise error
        except asyncio.TimeoutError as exc:
            caught.append(exc)
    assert len(caught) == 2


def test_the_interpreter_running_the_asyncio_timeout_test() -> None:
    """Recorded so that the 3.10 job's run shows the case that matters was exercised."""
    if sys.version_info < (3, 11):
        assert asyncio.TimeoutError is not TimeoutError
        assert SMTPTimeoutError.__mro__.index(asyncio.TimeoutError) > 0
    else:
        assert asyncio.TimeoutError is TimeoutError
