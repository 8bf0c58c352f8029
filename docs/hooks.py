"""MkDocs hook: the settings tables, generated from the sending layer's option table.

A page line ``<!-- settings-table: NAME -->`` becomes the table of one
framework's settings (NAME: ``mailer``, ``django``, ``flask``). Every row
comes from :data:`smtp_backends.settings.OPTIONS` (the options),
:class:`~smtp_backends.settings.MailerSettings` (defaults, and the
descriptions in its docstring) and each adapter's own name map, so a new
option shows up in every table and a table cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from smtp_backends.settings import ENV_PREFIX, OPTIONS, MailerSettings

#: Shown for "no value" (an en dash).
NONE = "\u2013"

_MARKER = re.compile(r"^<!-- settings-table: (\w+) -->$", re.M)


def descriptions() -> dict[str, str]:
    """Each option's description, from the ``Attributes:`` of MailerSettings' docstring."""
    doc = inspect.getdoc(MailerSettings) or ""
    block = doc.split("Attributes:", 1)[1].split("\n\n", 1)[0]
    found: dict[str, str] = {}
    names: list[str] = []
    for line in block.splitlines():
        entry = re.match(r"^    (\w+(?: / \w+)*): (.*)$", line)
        if entry:
            names = entry.group(1).split(" / ")
            for name in names:
                found[name] = entry.group(2)
        elif line.strip():
            for name in names:
                found[name] += " " + line.strip()
    for name, text in found.items():
        text = re.sub(r"``(.*?)``", r"`\1`", text)
        found[name] = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    missing = set(OPTIONS) - set(found)
    if missing:
        raise ValueError(f"MailerSettings' docstring does not describe {sorted(missing)}")
    return found


def _default(field: str) -> Any:
    return MailerSettings.__dataclass_fields__[field].default


def _shown(value: Any) -> str:
    return NONE if value is None or value is dataclasses.MISSING else f"`{value!r}`"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mailer_table() -> str:
    """MailerSettings' fields: ``Mail(**options)`` (ASGI) and the environment variables."""
    about = descriptions()
    rows = [
        [
            f"`{field}`",
            # An SSLContext cannot come from text.
            NONE if option.kind == "context" else f"`{ENV_PREFIX}{field.upper()}`",
            _shown(_default(field)),
            about[field],
        ]
        for field, option in OPTIONS.items()
    ]
    return _table(["keyword", "environment variable", "default", "meaning"], rows)


def django_table() -> str:
    """Django: the MAILERS OPTIONS key and the EMAIL_BACKEND setting of each option."""
    from smtp_backends.django import config

    about = descriptions()
    defaults = {**{f: _default(f) for f in OPTIONS}, **config.OWN_OPTIONS}
    special = {
        "host": "required",
        "port": "465 with `use_ssl`, 587 with `use_tls`, else 25",
        "local_hostname": "Django's FQDN",
    }
    rows = []
    for field in OPTIONS:
        attribute = config.ATTRIBUTES.get(field)
        if attribute is None:
            continue
        legacy = config._LEGACY_NAMES.get(field)
        setting = f"`{legacy}`" if legacy else f"`{config.OPTIONS_SETTING}['{attribute}']`"
        default = special.get(field, _shown(defaults.get(attribute, defaults[field])))
        rows.append([f"`{attribute}`", setting, default, about[field]])
    return _table(["`OPTIONS` key (MAILERS)", "EMAIL_BACKEND setting", "default", "meaning"], rows)


def flask_table() -> str:
    """Flask: the ``MAIL_*`` key of each option."""
    from smtp_backends.flask import config

    about = descriptions()
    special = {"port": "25, 465 with `MAIL_USE_SSL`"}
    rows = []
    for field in OPTIONS:
        attribute = config.ATTRIBUTES.get(field)
        if attribute is None:
            continue
        default = config._DEFAULTS.get(attribute, _default(field))
        rows.append(
            [
                f"`{config.KEYS[attribute]}`",
                special.get(field, _shown(default)),
                about[field],
            ]
        )
    return _table(["setting", "default", "meaning"], rows)


TABLES = {"mailer": mailer_table, "django": django_table, "flask": flask_table}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each settings-table marker with its table."""
    return _MARKER.sub(lambda match: TABLES[match.group(1)](), markdown)
