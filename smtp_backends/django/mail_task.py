"""The ``django.tasks`` task of :class:`~smtp_backends.django.TasksBackend` (Django 6.0+).

Imported when a message is first queued (and by the task workers, which find
the task by its dotted path, ``smtp_backends.django.mail_task.send_queued_mail``).
Defining a task needs the TASKS setting's ``default`` backend: Django's own
default (the ImmediateBackend) or the project's.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task

from .tasks import run

__all__ = ("send_queued_mail",)


@task  # type: ignore[untyped-decorator,unused-ignore]
def send_queued_mail(payload: dict[str, Any]) -> dict[str, Any]:
    """Send the messages of one ``send_messages()`` call (see :func:`.tasks.run`)."""
    return run(payload)
