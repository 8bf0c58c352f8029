"""Settings: TasksBackend -> django-tasks-db's DatabaseBackend -> AsyncSMTPBackend on loopback.

``SMTP_BACKENDS_TEST_DB`` is the SQLite file, ``SMTP_BACKENDS_TEST_SMTP_PORT`` the port of
the test's SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import os

SECRET_KEY = "smtp-backends-tasks-tests-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django_tasks_db"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SMTP_BACKENDS_TEST_DB"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
MAILERS = {
    "default": {
        "BACKEND": "smtp_backends.django.tasks.TasksBackend",
        "OPTIONS": {"using": "smtp"},
    },
    "smtp": {
        "BACKEND": "smtp_backends.django.AsyncSMTPBackend",
        "OPTIONS": {
            "host": "127.0.0.1",
            "port": int(os.environ["SMTP_BACKENDS_TEST_SMTP_PORT"]),
            "pool_size": 1,
        },
    },
}
