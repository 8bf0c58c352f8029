"""smtp_backends.django.tasks.TasksBackend: mail queued on Django's own task framework.

With Django's ImmediateBackend in this process, and with a real worker: django-tasks-db's
DatabaseBackend, its ``db_worker`` command run as a subprocess against a SQLite file
(tests/django_tasks_project). Real aiosmtpd servers on loopback receive the mail.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")
pytest.importorskip("pytest_django")

import django

if django.VERSION < (6, 0):
    pytest.skip(
        f"django.tasks is Django 6.0+ (installed: {django.__version__}); the newest-Django "
        "job of scripts/test runs these tests",
        allow_module_level=True,
    )

from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.tasks import TaskResultStatus

from smtp_backends.django import AsyncSMTPBackend
from smtp_backends.django import tasks as mail_tasks
from smtp_backends.django.config import RemovedInDjango2028Warning
from smtp_backends.django.tasks import TasksBackend
from tests.django_project.testing import BACKEND, HAS_MAILERS, no_bridge
from tests.servers import SMTPServer

__all__ = ("no_bridge",)

pytestmark = pytest.mark.usefixtures("no_bridge")

ROOT = Path(__file__).resolve().parent.parent
TASKS_BACKEND = "smtp_backends.django.tasks.TasksBackend"
IMMEDIATE = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
needs_mailers = pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS and 'using': Django 6.1+")


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def message(n: int = 0, **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", [f"user{n}@example.com"])
    return EmailMessage(
        subject=f"S{n}", body="Body\n", from_email="Web <web@example.com>", **kwargs
    )


def mailers(server: SMTPServer | None, port: int | None = None, **tasks: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", **tasks}},
        "smtp": {
            "BACKEND": BACKEND,
            "OPTIONS": {
                "host": "127.0.0.1",
                "port": port if server is None else server.port,
                "pool_size": 1,
            },
        },
    }


@needs_mailers
def test_immediate_backend_sends_through_the_pooled_mailer(
    settings: Any, smtpd: SMTPServer
) -> None:
    settings.TASKS = IMMEDIATE
    settings.MAILERS = mailers(smtpd)
    assert mail.send_mail("Hello", "Body", "web@example.com", ["a@example.com"]) == 1
    backend = mail.mailers["default"]
    batch = [message(n, bcc=["hidden@example.com"]) for n in range(3)]
    batch.append(EmailMessage(subject="nobody", body="x", from_email="a@example.com"))
    assert backend.send_messages(batch) == 3  # the one without recipients is skipped
    result = backend.last_result
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"sent": 3, "refused": {}, "failed": []}
    assert [m.rcpt_tos for m in smtpd.messages] == [
        ["a@example.com"],
        ["user0@example.com", "hidden@example.com"],
        ["user1@example.com", "hidden@example.com"],
        ["user2@example.com", "hidden@example.com"],
    ]
    assert smtpd.handler.connections == 1  # one pooled connection for every task
    assert b"hidden@example.com" not in smtpd.messages[1].original_content

    # The task's argument is JSON: the exact bytes (base64) and envelopes, no pickle,
    # no credential: the worker reads the mailer's settings itself.
    [payload] = result.args
    assert json.loads(json.dumps(payload)) == payload
    assert set(payload) == {"v", "using", "messages"} and payload["using"] == "smtp"
    first = payload["messages"][0]
    assert first["sender"] == "web@example.com"
    assert base64.b64decode(first["data"]) == smtpd.messages[1].original_content
    assert mail_tasks.decode(payload)[0] == "smtp"


@needs_mailers
def test_a_failed_send_fails_the_task_with_the_error(settings: Any, unused_port: int) -> None:
    settings.TASKS = IMMEDIATE
    settings.MAILERS = mailers(None, port=unused_port)
    backend = mail.mailers["default"]
    assert backend.send_messages([message(), message(1)]) == 2  # queued
    result = backend.last_result
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class.__name__ == "SMTPConnectError"
    assert "0 of 2 message(s) sent" in error.traceback


@needs_mailers
def test_refusals_are_reported_and_other_recipients_get_the_mail(
    settings: Any, make_smtpd: Any
) -> None:
    server = make_smtpd(refuse_rcpt_prefix="refuse")
    settings.TASKS = IMMEDIATE
    settings.MAILERS = mailers(server)
    backend = mail.mailers["default"]
    assert backend.send_messages([message(to=["ok@example.com", "refuse@example.com"])]) == 1
    report = backend.last_result.return_value
    assert report["sent"] == 1 and list(report["refused"]) == ["refuse@example.com"]
    assert report["refused"]["refuse@example.com"].startswith("550")
    assert server.messages[0].rcpt_tos == ["ok@example.com"]


@needs_mailers
def test_options_and_errors_name_the_setting(settings: Any, smtpd: SMTPServer) -> None:
    from django.core.mail import InvalidMailer

    settings.TASKS = IMMEDIATE
    settings.MAILERS = {
        **mailers(smtpd),
        "bulk": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "queue_name": "mail"}},
        "nothing": {"BACKEND": TASKS_BACKEND, "OPTIONS": {}},
        "self": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "self"}},
        "missing": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "nope"}},
        "wrapped": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "default"}},
        "typo": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "priorty": 1}},
        "priority": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "priority": "1"}},
        "silent": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "fail_silently": True}},
    }
    backend = mail.mailers["bulk"]
    assert (backend.using, backend.queue_name, backend.task_backend) == ("smtp", "mail", "default")
    # The task backend refuses an unknown queue: an enqueue error, raised...
    with pytest.raises(Exception, match="Queue 'mail' is not valid"):
        backend.send_messages([message()])
    # ... unless fail_silently, which the backend handles itself (no deprecation warning).
    settings.MAILERS["silent"]["OPTIONS"]["queue_name"] = "mail"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent = mail.mailers["silent"]
        assert silent.fail_silently is True
        assert silent.send_messages([message()]) == 0
    assert smtpd.messages == []
    problems = {
        "nothing": "must define 'using'",
        "self": "another mailer",
        "missing": "not in MAILERS",
        "wrapped": "is not smtp_backends.django.AsyncSMTPBackend",
        "typo": "Unknown options 'priorty'",
        "priority": r"OPTIONS\['priority'\] must be an int, not '1'",
    }
    for alias, problem in problems.items():
        with pytest.raises(InvalidMailer, match=problem):
            mail.mailers[alias]
    with pytest.raises(ValueError, match="Invalid address"):
        mail.mailers["default"].send_messages([message(to=["a@b.org, c@d.org"])])


def test_email_backend_configuration(smtpd: SMTPServer) -> None:
    """Without MAILERS: SMTP_BACKENDS_TASKS, and the task sends with its 'smtp' options."""
    from django.test.utils import override_settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RemovedInDjango2028Warning)
        override = override_settings(
            TASKS=IMMEDIATE,
            EMAIL_BACKEND=TASKS_BACKEND,
            SMTP_BACKENDS_TASKS={"smtp": {"host": "127.0.0.1", "port": smtpd.port}},
        )
        override.enable()
    try:  # the test project defines no MAILERS: the EMAIL_BACKEND configuration
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
            assert mail.send_mail("S", "B", "web@example.com", ["a@example.com"]) == 1
            assert smtpd.messages[0].rcpt_tos == ["a@example.com"]
            backend = TasksBackend()
            assert backend.using is None and backend.task_backend == "default"
            with (
                override_settings(SMTP_BACKENDS_TASKS={"queue_name": 5}),
                pytest.raises(
                    ImproperlyConfigured, match=r"SMTP_BACKENDS_TASKS\['queue_name'\] must be a str"
                ),
            ):
                TasksBackend()
            with (
                override_settings(SMTP_BACKENDS_TASKS={"colour": 1}),
                pytest.raises(ImproperlyConfigured, match="colour"),
            ):
                TasksBackend()
            with pytest.raises(ImproperlyConfigured, match=r"needs Django 6\.1's MAILERS"):
                TasksBackend(using="smtp")
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
            override.disable()


def test_a_worker_refuses_what_is_not_a_payload() -> None:
    with pytest.raises(ValueError, match="Not a smtp_backends mail payload"):
        mail_tasks.run({"v": 99})
    with pytest.raises(ValueError, match="Not a smtp_backends mail payload"):
        mail_tasks.run("pickle?")
    assert AsyncSMTPBackend is mail_tasks.AsyncSMTPBackend


# --------------------------------------------------------------------------- a real worker


def _django(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


_ENQUEUE = """
import django
django.setup()
from django.core import mail
backend = mail.mailers["default"]
messages = [
    mail.EmailMessage("Queued %d" % n, "Body", "web@example.com", ["user%d@example.com" % n])
    for n in range(3)
]
print(backend.send_messages(messages[:1]), backend.last_result.id)
print(backend.send_messages(messages[1:]), backend.last_result.id)
"""

_RESULTS = """
import sys, django
django.setup()
from smtp_backends.django.mail_task import send_queued_mail
for result_id in sys.argv[1:]:
    result = send_queued_mail.get_result(result_id)
    print(result.status, result.return_value["sent"])
"""


@needs_mailers
@pytest.mark.skipif(
    pytest.importorskip("importlib.util").find_spec("django_tasks_db") is None,
    reason="django-tasks-db is not installed (the dev extra installs it on Python 3.12+)",
)
def test_database_backend_and_its_worker(smtpd: SMTPServer, tmp_path: Path) -> None:
    """Queued in one process, stored in the database, sent by db_worker in another."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.django_tasks_project.settings",
        "SMTP_BACKENDS_TEST_DB": str(tmp_path / "tasks.sqlite3"),
        "SMTP_BACKENDS_TEST_SMTP_PORT": str(smtpd.port),
        "PYTHONPATH": str(ROOT),
    }
    _django(["-m", "django", "migrate", "--verbosity", "0"], env)
    first, second = _django(["-c", _ENQUEUE], env).split("\n")[:2]
    assert first.split()[0] == "1" and second.split()[0] == "2"
    ids = [first.split()[1], second.split()[1]]
    assert smtpd.messages == []  # queued, not sent: no worker has run yet
    _django(["-m", "django", "db_worker", "--batch", "--no-startup-delay", "--no-reload"], env)
    assert sorted(m.rcpt_tos[0] for m in smtpd.messages) == [
        "user0@example.com",
        "user1@example.com",
        "user2@example.com",
    ]
    assert {m.mail_from for m in smtpd.messages} == {"web@example.com"}
    assert _django(["-c", _RESULTS, *ids], env).split("\n")[:2] == [
        "SUCCESSFUL 1",
        "SUCCESSFUL 2",
    ]


@needs_mailers
def test_smtputf8_option(settings: Any, make_smtpd: Any) -> None:
    """A non-ASCII local part: refused before queuing (as Django), queued with smtputf8."""
    from django.core.mail import InvalidMailer

    server = make_smtpd(smtputf8=True)
    settings.TASKS = IMMEDIATE
    settings.MAILERS = {
        **mailers(server),
        "utf8": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "smtputf8": True}},
        "bad": {"BACKEND": TASKS_BACKEND, "OPTIONS": {"using": "smtp", "smtputf8": "yes"}},
    }
    email = message(to=["nø@example.dk"])
    with pytest.raises(ValueError, match="local-part contains non-ASCII"):
        mail.mailers["default"].send_messages([email])
    backend = mail.mailers["utf8"]
    assert backend.send_messages([email]) == 1
    assert backend.last_result.status == TaskResultStatus.SUCCESSFUL
    [received] = server.messages
    assert received.rcpt_tos == ["nø@example.dk"] and "SMTPUTF8" in received.mail_options
    with pytest.raises(InvalidMailer, match=r"OPTIONS\['smtputf8'\] must be True or False"):
        mail.mailers["bad"]
