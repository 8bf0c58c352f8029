"""The ``aiosmtplib`` package that aiosmtplib's own tests import here: smtp_backends.

:func:`write_shim` writes a package named ``aiosmtplib`` whose public modules re-export
smtp_backends' names (code written for aiosmtplib must run with the import changed).
Its private modules (``auth``, ``email``, ``esmtp``, ``protocol``) hold placeholders only,
so that every test file of aiosmtplib's suite imports and runs; calling a placeholder
raises, and each test that does is listed in :mod:`tests.aiosmtplib_upstream.left_out`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ("PRIVATE", "write_shim")

#: aiosmtplib's private modules and the names its tests import from them.
PRIVATE = {
    "auth": (
        "auth_crammd5_verify",
        "auth_login_encode",
        "auth_plain_encode",
        "auth_xoauth2_encode",
    ),
    "email": (
        "extract_recipients",
        "extract_sender",
        "flatten_message",
        "parse_address",
        "quote_address",
    ),
    "esmtp": ("parse_esmtp_extensions",),
    "protocol": ("FlowControlMixin", "SMTPProtocol"),
}

_PUBLIC = {
    "__init__.py": (
        '"""aiosmtplib\'s public names, served by smtp_backends."""\n'
        "from smtp_backends import *  # noqa: F403\n"
        "from smtp_backends import __all__\n"
    ),
    "errors.py": "from smtp_backends.errors import *  # noqa: F403\n",
    "response.py": "from smtp_backends import SMTPResponse\n",
    "smtp.py": "from smtp_backends import SMTP\n",
    "status.py": "from smtp_backends import SMTPStatus\n",
    "typing.py": (
        "from smtp_backends import SMTPStatus, SMTPTokenGenerator\n"
        "from smtp_backends.client import Default\n"
    ),
    "_private.py": (
        '"""Placeholders for aiosmtplib\'s private helpers (smtp_backends has its own)."""\n'
        "\n"
        "\n"
        "class Private:\n"
        "    def __init__(self, name):\n"
        "        self.name = name\n"
        "\n"
        "    def __call__(self, *args, **kwargs):\n"
        "        raise RuntimeError(\n"
        '            f"aiosmtplib.{self.name} is private to aiosmtplib; "\n'
        '            "smtp_backends does not provide it"\n'
        "        )\n"
        "\n"
        "    def __repr__(self):\n"
        '        return f"<aiosmtplib.{self.name}: private, not provided>"\n'
    ),
}


def write_shim(directory: Path) -> Path:
    """Write the ``aiosmtplib`` shim package under ``directory``; return ``directory``.

    Put ``directory`` first on ``PYTHONPATH`` of the process that runs the tests.
    """
    package = directory / "aiosmtplib"
    package.mkdir(parents=True, exist_ok=True)
    files = dict(_PUBLIC)
    for module, names in PRIVATE.items():
        lines = ["from ._private import Private\n", "\n"]
        lines += [f'{name} = Private("{module}.{name}")\n' for name in names]
        files[f"{module}.py"] = "".join(lines)
    for name, text in files.items():
        path = package / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return directory
