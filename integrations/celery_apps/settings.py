"""Django settings of the workers (the test process uses tests.django_project's)."""

from __future__ import annotations

import os

SECRET_KEY = "smtp-backends-celery-integration-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
INSTALLED_APPS: list[str] = []
ROOT_URLCONF = "integrations.celery_apps.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
DEFAULT_FROM_EMAIL = "webmaster@example.com"

# What the web process needs (the app, the queue) and what the workers send with.
SMTP_BACKENDS_CELERY = {
    "app": "integrations.celery_apps.celery_app.app",
    "queue": os.environ.get("SMTP_BACKENDS_TEST_QUEUE", "mail"),
    "batch_size": 50,
    "smtp": {
        "host": "127.0.0.1",
        "port": int(os.environ.get("SMTP_BACKENDS_TEST_SMTP_PORT", "25")),
        "timeout": 10,
        "pool_size": 1,
        # The test server tells the workers apart by their EHLO name.
        "local_hostname": os.environ.get("SMTP_BACKENDS_TEST_WORKER", "web") + ".test",
    },
    "max_retries": 2,
    "retry_backoff": 0.5,
    "retry_backoff_max": 2.0,
}
