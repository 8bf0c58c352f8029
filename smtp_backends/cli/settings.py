"""Connection settings for ``send`` and ``check``: flags first, then ``SMTP_BACKENDS_*``.

Every setting has a flag and an environment variable; a flag given on the
command line wins over the variable. A value that does not parse is reported
with the name of the flag or variable it came from (never with a password).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = (
    "ENV_PREFIX",
    "SettingsError",
    "add_connection_arguments",
    "connection_options",
    "parse_bool",
    "parse_port",
    "parse_start_tls",
    "parse_timeout",
    "read_password",
    "split_host_port",
)

ENV_PREFIX = "SMTP_BACKENDS_"


class SettingsError(ValueError):
    """A setting from a flag or an environment variable is unusable; the text names it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case).

    Raises:
        ValueError: anything else.
    """
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use 1/0, true/false, yes/no, on/off)")


def parse_start_tls(text: str) -> bool | None:
    """``auto`` (None: upgrade when offered), or a yes/no value (required / never).

    Raises:
        ValueError: anything else.
    """
    if text.strip().lower() == "auto":
        return None
    try:
        return parse_bool(text)
    except ValueError:
        raise ValueError(f"{text!r} is not auto or a yes/no value") from None


def parse_port(text: str) -> int:
    """A TCP port, 1-65535.

    Raises:
        ValueError: not a number in that range.
    """
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a port (1-65535)")
    return port


def parse_timeout(text: str) -> float:
    """Seconds, a number above zero.

    Raises:
        ValueError: anything else.
    """
    try:
        seconds = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds above zero")
    return seconds


def _parse_file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError(f"{text!r} is not a readable file")
    return text


def _parse_text(text: str) -> str:
    if not text or any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError(f"{text!r} is empty or holds control characters")
    return text


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address.

    Raises:
        ValueError: an empty host or a bad port.
    """
    text = text.strip()
    match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", text)
    if match:
        host, port = match[1], match[2]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # a name, an IPv4 address or a bare IPv6 address (no port)
        host, port = text, None
    if not host:
        raise ValueError(f"{text!r} has no host name")
    if ":" in host:
        ipaddress.IPv6Address(host.split("%")[0])  # raises ValueError for garbage
    return host, None if port is None else parse_port(port)


@dataclass(frozen=True)
class _Setting:
    """One connection setting: its SMTP keyword (the flag's dest), its variable, its parser."""

    option: str
    variable: str
    parse: Callable[[str], Any]


_SETTINGS = (
    _Setting("hostname", "HOST", _parse_text),
    _Setting("port", "PORT", parse_port),
    _Setting("username", "USERNAME", _parse_text),
    _Setting("use_tls", "USE_TLS", parse_bool),
    _Setting("start_tls", "START_TLS", parse_start_tls),
    _Setting("timeout", "TIMEOUT", parse_timeout),
    _Setting("validate_certs", "VALIDATE_CERTS", parse_bool),
    _Setting("cert_bundle", "CA_FILE", _parse_file),
    _Setting("client_cert", "CLIENT_CERT", _parse_file),
    _Setting("client_key", "CLIENT_KEY", _parse_file),
    _Setting("local_hostname", "LOCAL_HOSTNAME", _parse_text),
    _Setting("pipelining", "PIPELINING", parse_bool),
    _Setting("allow_insecure_auth", "ALLOW_INSECURE_AUTH", parse_bool),
)


def _flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` for argparse: its ValueError becomes argparse's "invalid value" message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__.lstrip("_")
    return convert


def add_connection_arguments(parser: argparse.ArgumentParser, *, host_flag: bool = True) -> None:
    """Add the connection flags (every one defaults to "not given": None)."""
    group = parser.add_argument_group(
        "connection", f"each flag also reads {ENV_PREFIX}<NAME>; a flag given here wins"
    )
    if host_flag:
        group.add_argument(
            "--host",
            dest="hostname",
            metavar="HOST",
            type=_flag_type(_parse_text),
            help="server name or address, or HOST:PORT (HOST; default localhost)",
        )
    group.add_argument(
        "--port",
        type=_flag_type(parse_port),
        help="server port (PORT; default 25, 465 with --tls, 587 with --starttls yes)",
    )
    group.add_argument(
        "--username", type=_flag_type(_parse_text), metavar="NAME", help="log in as (USERNAME)"
    )
    group.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable "
        f"(default: {ENV_PREFIX}PASSWORD; without either, a prompt)",
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        action="store_const",
        const=True,
        dest="use_tls",
        help="implicit TLS from the first byte, as on port 465 (USE_TLS)",
    )
    tls.add_argument(
        "--starttls",
        choices=("auto", "yes", "no"),
        dest="start_tls",
        help="upgrade with STARTTLS: when offered (auto, the default), required, never (START_TLS)",
    )
    group.add_argument(
        "--timeout",
        type=_flag_type(parse_timeout),
        metavar="SECONDS",
        help="seconds per operation (TIMEOUT; 60)",
    )
    group.add_argument(
        "--no-verify",
        action="store_const",
        const=False,
        dest="validate_certs",
        help="do not verify the certificate or host name (VALIDATE_CERTS=0)",
    )
    group.add_argument(
        "--cafile",
        type=_flag_type(_parse_file),
        dest="cert_bundle",
        metavar="FILE",
        help="extra trusted CA certificates, PEM (CA_FILE)",
    )
    group.add_argument(
        "--client-cert",
        type=_flag_type(_parse_file),
        metavar="FILE",
        help="client certificate, PEM (CLIENT_CERT)",
    )
    group.add_argument(
        "--client-key",
        type=_flag_type(_parse_file),
        metavar="FILE",
        help="its private key, PEM (CLIENT_KEY)",
    )
    group.add_argument(
        "--local-hostname",
        type=_flag_type(_parse_text),
        metavar="NAME",
        help="name sent with EHLO (LOCAL_HOSTNAME)",
    )
    group.add_argument(
        "--no-pipelining",
        action="store_const",
        const=False,
        dest="pipelining",
        help="never pipeline commands (PIPELINING=0)",
    )
    group.add_argument(
        "--allow-insecure-auth",
        action="store_const",
        const=True,
        help="allow AUTH without TLS to a remote host (ALLOW_INSECURE_AUTH)",
    )


def connection_options(
    arguments: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The SMTP keywords the flags and ``SMTP_BACKENDS_*`` variables give.

    A flag wins over its variable; settings given by neither are left out
    (the client's defaults apply). ``--host`` may carry a port
    (``HOST:PORT``). The password is not read here: see :func:`read_password`.

    Raises:
        SettingsError: a variable's value does not parse (the text names the
            variable), or a ``--host`` holds a bad port.
    """
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for setting in _SETTINGS:
        value = getattr(arguments, setting.option, None)
        if value is None:
            name = ENV_PREFIX + setting.variable
            text = environ.get(name)
            if text is None or text == "":
                continue
            try:
                value = setting.parse(text)
            except ValueError as error:
                raise SettingsError(f"{name}: {error}") from None
        elif setting.option == "start_tls":
            value = parse_start_tls(value)
        options[setting.option] = value
    if "hostname" in options:
        try:
            host, port = split_host_port(options["hostname"])
        except ValueError as error:
            raise SettingsError(f"--host / {ENV_PREFIX}HOST: {error}") from None
        options["hostname"] = host
        if port is not None:
            options.setdefault("port", port)
    if options.get("use_tls") and options.get("start_tls"):
        raise SettingsError(
            "implicit TLS (--tls / USE_TLS) and required STARTTLS (--starttls yes / "
            "START_TLS) exclude each other"
        )
    if options.get("use_tls") is False:
        del options["use_tls"]
    return options


def read_password(
    arguments: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
    *,
    interactive: bool = True,
) -> str | None:
    """The password: from ``--password-env VAR``, ``SMTP_BACKENDS_PASSWORD`` or a prompt.

    Returns None when no username is set (nothing to log in with). The
    prompt (which does not echo) is used only when ``interactive``.

    Raises:
        SettingsError: ``--password-env`` names an unset variable, or no
            password can be had without a prompt. The password itself never
            appears in the text.
    """
    environ = os.environ if environ is None else environ
    variable = getattr(arguments, "password_env", None)
    if variable is not None:
        value = environ.get(variable)
        if value is None:
            raise SettingsError(f"--password-env: the variable {variable} is not set")
        return value
    value = environ.get(ENV_PREFIX + "PASSWORD")
    if value is not None:
        return value
    if not interactive:
        raise SettingsError(
            f"a password is needed: set {ENV_PREFIX}PASSWORD or use --password-env VAR "
            "(no terminal to prompt on)"
        )
    return prompt("SMTP password: ")
