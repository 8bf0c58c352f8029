"""The command line's parsing: flags, SMTP_BACKENDS_* variables, message sources."""

from __future__ import annotations

import argparse
import email
import email.policy
import io
import re
from pathlib import Path

import pytest

from smtp_backends.cli import build_parser, main
from smtp_backends.cli.settings import (
    SettingsError,
    connection_options,
    parse_bool,
    parse_port,
    parse_start_tls,
    parse_timeout,
    read_password,
    split_host_port,
)
from smtp_backends.cli.sources import (
    SourceError,
    build_message,
    load_sources,
    split_addresses,
    strip_bcc,
)


def parse(*argv: str) -> argparse.Namespace:
    parser, _ = build_parser()
    return parser.parse_args(["send", *argv])


# --------------------------------------------------------------------------- values


def test_value_parsers_accept_and_refuse() -> None:
    for text in ("1", "true", "YES", " on "):
        assert parse_bool(text) is True
    for text in ("0", "false", "No", "off"):
        assert parse_bool(text) is False
    with pytest.raises(ValueError, match="not a yes/no value"):
        parse_bool("maybe")
    assert parse_start_tls("auto") is None
    assert parse_start_tls("yes") is True
    assert parse_start_tls("0") is False
    with pytest.raises(ValueError, match="not auto or a yes/no value"):
        parse_start_tls("sometimes")
    assert parse_port("587") == 587
    for bad in ("0", "65536", "x", ""):
        with pytest.raises(ValueError):
            parse_port(bad)
    assert parse_timeout("2.5") == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError):
            parse_timeout(bad)


def test_split_host_port() -> None:
    assert split_host_port("smtp.example.com") == ("smtp.example.com", None)
    assert split_host_port("smtp.example.com:587") == ("smtp.example.com", 587)
    assert split_host_port("[::1]:2525") == ("::1", 2525)
    assert split_host_port("[::1]") == ("::1", None)
    assert split_host_port("::1") == ("::1", None)
    for bad in (":25", "host:port", "host:0", "[::1]:", "not:an:address"):
        with pytest.raises(ValueError):
            split_host_port(bad)


# --------------------------------------------------------------------------- flags and variables


def test_nothing_given_leaves_the_client_defaults() -> None:
    assert connection_options(parse("x.eml"), {}) == {}


def test_every_variable_is_read() -> None:
    environ = {
        "SMTP_BACKENDS_HOST": "mail.example.com",
        "SMTP_BACKENDS_PORT": "2525",
        "SMTP_BACKENDS_USERNAME": "app",
        "SMTP_BACKENDS_START_TLS": "yes",
        "SMTP_BACKENDS_TIMEOUT": "7",
        "SMTP_BACKENDS_VALIDATE_CERTS": "0",
        "SMTP_BACKENDS_CA_FILE": __file__,
        "SMTP_BACKENDS_LOCAL_HOSTNAME": "client.example.com",
        "SMTP_BACKENDS_PIPELINING": "off",
        "SMTP_BACKENDS_ALLOW_INSECURE_AUTH": "1",
    }
    assert connection_options(parse("x.eml"), environ) == {
        "hostname": "mail.example.com",
        "port": 2525,
        "username": "app",
        "start_tls": True,
        "timeout": 7.0,
        "validate_certs": False,
        "cert_bundle": __file__,
        "local_hostname": "client.example.com",
        "pipelining": False,
        "allow_insecure_auth": True,
    }
    assert connection_options(parse("x.eml"), {"SMTP_BACKENDS_USE_TLS": "true"}) == {
        "use_tls": True
    }
    # A false USE_TLS is the default: left out rather than passed.
    assert connection_options(parse("x.eml"), {"SMTP_BACKENDS_USE_TLS": "0"}) == {}


def test_flags_win_over_variables() -> None:
    environ = {
        "SMTP_BACKENDS_HOST": "env.example.com",
        "SMTP_BACKENDS_PORT": "2525",
        "SMTP_BACKENDS_TIMEOUT": "7",
        "SMTP_BACKENDS_START_TLS": "yes",
        "SMTP_BACKENDS_VALIDATE_CERTS": "1",
    }
    arguments = parse(
        "x.eml", "--host", "flag.example.com", "--port", "1025", "--timeout", "3",
        "--starttls", "no", "--no-verify",
    )  # fmt: skip
    options = connection_options(arguments, environ)
    assert options == {
        "hostname": "flag.example.com",
        "port": 1025,
        "timeout": 3.0,
        "start_tls": False,
        "validate_certs": False,
    }


def test_host_may_carry_the_port_and_an_explicit_port_wins() -> None:
    assert connection_options(parse("x.eml", "--host", "[::1]:2525"), {}) == {
        "hostname": "::1",
        "port": 2525,
    }
    options = connection_options(parse("x.eml", "--host", "a.example:2525", "--port", "25"), {})
    assert options == {"hostname": "a.example", "port": 25}
    options = connection_options(parse("x.eml"), {"SMTP_BACKENDS_HOST": "b.example:465"})
    assert options == {"hostname": "b.example", "port": 465}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SMTP_BACKENDS_PORT", "70000", "SMTP_BACKENDS_PORT: 70000 is not a port"),
        ("SMTP_BACKENDS_PORT", "smtp", "SMTP_BACKENDS_PORT: 'smtp' is not a port number"),
        ("SMTP_BACKENDS_TIMEOUT", "-3", "SMTP_BACKENDS_TIMEOUT: '-3' is not a number"),
        ("SMTP_BACKENDS_USE_TLS", "perhaps", "SMTP_BACKENDS_USE_TLS: 'perhaps' is not a yes/no"),
        ("SMTP_BACKENDS_START_TLS", "x", "SMTP_BACKENDS_START_TLS: 'x' is not auto"),
        ("SMTP_BACKENDS_CA_FILE", "/nonexistent.pem", "SMTP_BACKENDS_CA_FILE: '/nonexistent"),
        ("SMTP_BACKENDS_HOST", "a.example:99999", "--host / SMTP_BACKENDS_HOST: 99999"),
        ("SMTP_BACKENDS_LOCAL_HOSTNAME", "a\nb", "SMTP_BACKENDS_LOCAL_HOSTNAME:"),
    ],
)
def test_a_bad_variable_is_named(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        connection_options(parse("x.eml"), {variable: value})
    assert str(error.value).startswith(message)


def test_a_bad_flag_is_named_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["send", "--port", "70000"], "argument --port: 70000 is not a port"),
        (["send", "--timeout", "0"], "argument --timeout: '0' is not a number of seconds"),
        (["send", "--starttls", "maybe"], "argument --starttls: invalid choice: 'maybe'"),
        (["check", "--cafile", "/nonexistent.pem"], "argument --cafile: '/nonexistent.pem'"),
        (["send", "--tls", "--starttls", "yes"], "not allowed with argument --tls"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_implicit_tls_and_required_starttls_exclude_each_other() -> None:
    environ = {"SMTP_BACKENDS_USE_TLS": "1", "SMTP_BACKENDS_START_TLS": "1"}
    with pytest.raises(SettingsError, match="exclude each other"):
        connection_options(parse("x.eml"), environ)
    # The flag for one wins over the variable for the other... and still conflicts.
    with pytest.raises(SettingsError, match="exclude each other"):
        connection_options(parse("x.eml", "--tls"), {"SMTP_BACKENDS_START_TLS": "yes"})
    options = connection_options(
        parse("x.eml", "--starttls", "auto"), {"SMTP_BACKENDS_USE_TLS": "1"}
    )
    assert options == {"use_tls": True, "start_tls": None}


# --------------------------------------------------------------------------- the password


def test_password_sources_in_order() -> None:
    def no_prompt(text: str) -> str:
        raise AssertionError("prompted")

    arguments = parse("x.eml", "--password-env", "MY_SECRET")
    environ = {"MY_SECRET": "from-var", "SMTP_BACKENDS_PASSWORD": "from-default"}
    assert read_password(arguments, environ, no_prompt) == "from-var"
    assert read_password(parse("x.eml"), environ, no_prompt) == "from-default"
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return "typed"

    assert read_password(parse("x.eml"), {}, prompt) == "typed"
    assert prompts == ["SMTP password: "]


def test_password_errors_never_hold_the_password() -> None:
    with pytest.raises(SettingsError, match="the variable MISSING is not set"):
        read_password(parse("x.eml", "--password-env", "MISSING"), {"OTHER": "hunter2"})
    with pytest.raises(SettingsError, match="no terminal to prompt on") as error:
        read_password(parse("x.eml"), {}, interactive=False)
    assert "hunter2" not in str(error.value)


def test_there_is_no_password_flag(capsys: pytest.CaptureFixture[str]) -> None:
    # A password given as a flag would sit in the shell history and in `ps`.
    with pytest.raises(SystemExit):
        main(["send", "--password", "hunter2"])
    assert "unrecognized arguments" in capsys.readouterr().err


# --------------------------------------------------------------------------- message sources


def test_strip_bcc_keeps_every_other_byte() -> None:
    data = (
        b"From: a@example.org\r\nBcc: hidden@example.org,\r\n  other@example.org\r\n"
        b"To: b@example.org\r\nRESENT-BCC: r@example.org\r\nSubject: x\r\n\r\n"
        b"Bcc: this line is body text\r\n"
    )
    assert strip_bcc(data) == (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\n"
        b"Bcc: this line is body text\r\n"
    )
    untouched = b"From: a@example.org\nX-Bcc-Note: kept\n\nbody\n"
    assert strip_bcc(untouched) is untouched
    assert strip_bcc(b"Bcc: only@example.org\r\n") == b""
    assert strip_bcc(b"Subject: x\nBcc: y@example.org") == b"Subject: x\n"
    assert strip_bcc(b"A: 1\nBcc: y@example.org\n\nbody") == b"A: 1\n\nbody"
    assert strip_bcc(b"A: 1\r\nBcc: y\r\n\r\nbody") == b"A: 1\r\n\r\nbody"


def test_split_addresses() -> None:
    assert split_addresses(["a@example.org", "B <b@example.org>, c@example.org"], "--to") == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    assert split_addresses(None, "--cc") == []
    for bad in ("", "nobody", "a@example.org, oops"):
        with pytest.raises(SourceError, match="--to: "):
            split_addresses([bad], "--to")


def _eml(to: str = "b@example.org", extra: str = "") -> bytes:
    return f"From: a@example.org\r\nTo: {to}\r\n{extra}Subject: s\r\n\r\nbody\r\n".encode()


def test_load_files_directories_and_mboxes(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "2.eml").write_bytes(_eml("two@example.org"))
    (tmp_path / "box" / "1.eml").write_bytes(_eml("one@example.org", "Bcc: z@example.org\r\n"))
    (tmp_path / "box" / "notes.txt").write_text("not a message")
    mbox = tmp_path / "archive.mbox"
    mbox.write_bytes(
        b"From a@example.org Thu Dec  3 10:00:00 2026\n"
        + _eml("m1@example.org").replace(b"\r", b"")
        + b"\nFrom a@example.org Thu Dec  3 10:00:01 2026\n"
        + _eml("m2@example.org").replace(b"\r", b"")
    )  # fmt: skip
    single = tmp_path / "one.eml"
    single.write_bytes(_eml())
    loaded = load_sources([str(tmp_path / "box"), str(mbox), str(single)])
    assert [m.label for m in loaded] == [
        str(tmp_path / "box" / "1.eml"),
        str(tmp_path / "box" / "2.eml"),
        f"{mbox}[0]",
        f"{mbox}[1]",
        str(single),
    ]
    assert [m.recipients for m in loaded] == [
        ("one@example.org", "z@example.org"),
        ("two@example.org",),
        ("m1@example.org",),
        ("m2@example.org",),
        ("b@example.org",),
    ]
    assert b"Bcc" not in loaded[0].data and b"z@example.org" not in loaded[0].data
    assert loaded[1].data == _eml("two@example.org")
    assert loaded[4].item == ("a@example.org", ["b@example.org"], _eml())


def test_flags_replace_the_envelope_of_loaded_messages(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(_eml())
    [message] = load_sources([str(path)], "bounce@example.org", ["x@example.org"])
    assert (message.sender, message.recipients) == ("bounce@example.org", ("x@example.org",))
    assert message.data == _eml()


def test_stdin_holds_one_message_or_an_mbox() -> None:
    [message] = load_sources(["-"], stdin=io.BytesIO(_eml()))
    assert (message.label, message.data) == ("<stdin>", _eml())
    mbox = b"From x Thu Dec  3 10:00:00 2026\n" + _eml("1@example.org").replace(b"\r", b"")
    mbox += b"\nFrom x Thu Dec  3 10:00:00 2026\n" + _eml("2@example.org").replace(b"\r", b"")
    loaded = load_sources(["-"], stdin=io.BytesIO(mbox))
    assert [(m.label, m.recipients) for m in loaded] == [
        ("<stdin>[0]", ("1@example.org",)),
        ("<stdin>[1]", ("2@example.org",)),
    ]


def test_unusable_sources_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    no_from = tmp_path / "nofrom.eml"
    no_from.write_bytes(b"To: b@example.org\r\n\r\nbody\r\n")
    no_to = tmp_path / "noto.eml"
    no_to.write_bytes(b"From: a@example.org\r\n\r\nbody\r\n")
    bad = tmp_path / "bad.eml"
    bad.write_bytes(b"From: a@example.org\r\nTo: ev\x00il@example.org\r\n\r\nbody\r\n")
    for sources, message in (
        ([str(tmp_path / "missing.eml")], "missing.eml: no such file or directory"),
        ([str(tmp_path / "empty")], "no .eml files in this directory"),
        ([str(no_from)], "nofrom.eml: no Sender or From header (give --from)"),
        ([str(no_to)], "noto.eml: no To, Cc or Bcc header (give --to)"),
        ([str(bad)], "bad.eml: Address contains a control character"),
    ):
        with pytest.raises(SourceError, match=re.escape(message)):
            load_sources(sources)
    with pytest.raises(SourceError, match="no message on standard input"):
        load_sources(["-"], stdin=io.BytesIO(b"\n"))


def test_built_message_keeps_bcc_out_of_its_bytes(tmp_path: Path) -> None:
    attachment = tmp_path / "report.csv"
    attachment.write_text("a,b\n1,2\n")
    body = tmp_path / "body.txt"
    body.write_text("Hello from a file\n")
    message = build_message(
        sender="me@example.org",
        to=["you@example.org"],
        cc=["cc@example.org"],
        bcc=["hidden@example.org"],
        subject="Résumé",
        body=f"@{body}",
        html="<p>Hi</p>",
        attachments=[str(attachment)],
    )
    assert message.recipients == ("you@example.org", "cc@example.org", "hidden@example.org")
    assert b"hidden@example.org" not in message.data
    assert message.item is message.message
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert parsed["Subject"] == "Résumé"
    assert parsed["Cc"] == "cc@example.org"
    assert parsed["Message-ID"].endswith("@example.org>")
    assert [part.get_content_type() for part in parsed.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/csv",
    ]
    assert parsed.get_body(("plain",)).get_content().rstrip() == "Hello from a file"
    forwarded = tmp_path / "forwarded.eml"
    forwarded.write_bytes(_eml())
    with_message = build_message(
        sender="me@example.org", to=["a@example.org"], attachments=[str(forwarded)]
    )
    parsed = email.message_from_bytes(with_message.data, policy=email.policy.default)
    [attached] = parsed.iter_attachments()
    # A message travels as a message, 7bit here, never base64 (RFC 2046 5.2.1).
    assert attached.get_content_type() == "message/rfc822"
    assert attached["Content-Transfer-Encoding"] == "7bit"
    assert attached.get_content()["To"] == "b@example.org"
    with pytest.raises(SourceError, match="at least one recipient"):
        build_message(sender="me@example.org", to=[])
    with pytest.raises(SourceError, match="--attach: cannot read"):
        build_message(sender="me@example.org", to=["a@example.org"], attachments=["/nope"])
    with pytest.raises(SourceError, match="--html: cannot read"):
        build_message(sender="me@example.org", to=["a@example.org"], html="@/nope.html")
    stdin = io.BytesIO(b"Body from stdin\n")
    from_stdin = build_message(
        sender="me@example.org", to=["a@example.org"], body="@-", stdin=stdin
    )
    assert b"Body from stdin" in from_stdin.data


def test_the_rich_progress_bar_in_process() -> None:
    from smtp_backends.cli.output import RichProgress, make_progress

    stream = io.StringIO()
    assert type(make_progress(stream, quiet=False)).__name__ == "PlainProgress"
    assert type(make_progress(stream, quiet=True)).__name__ == "SilentProgress"
    progress = RichProgress(stream)
    progress.start(2, "127.0.0.1:25")
    progress.update(1, "sent", "a.eml: 250 OK", problem=False)
    progress.note("a note")
    progress.update(2, "failed", "b.eml: 554 no", problem=True)
    progress.stop()
    text = stream.getvalue()
    assert "a note" in text and "failed b.eml: 554 no" in text and "a.eml" not in text
    assert "2/2" in text and "sent 1" in text and "problems 1" in text
