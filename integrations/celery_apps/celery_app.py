"""The Celery app of the integration suite: ``celery -A integrations.celery_apps.celery_app``.

It carries two mail tasks: the Django one (``register_celery``, SMTP settings from
integrations/celery_apps/settings.py) and the Flask one (``mail.init_celery``). Final
failures are pushed to a Redis list so that the test process can see them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from celery import Celery
from django.conf import settings

from smtp_backends.celery import Failure, message_failed
from smtp_backends.django import register_celery

REDIS_URL = os.environ.get("SMTP_BACKENDS_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: The Redis list that receives one JSON record per final failure.
FAILURES_KEY = "smtp_backends:test:failures"

if not settings.configured:  # the workers; the test process has configured Django already
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrations.celery_apps.settings")
    django.setup()

app = Celery("smtp_backends_integration", broker=REDIS_URL)
app.conf.update(
    # Short, so that a killed worker's unacknowledged tasks come back quickly.
    # kombu sweeps for them every interval * throttle seconds (100 by default).
    broker_transport_options={
        "visibility_timeout": 6,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    worker_prefetch_multiplier=1,
    task_default_queue=os.environ.get("SMTP_BACKENDS_TEST_QUEUE", "mail"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

django_mail = register_celery(app)

from integrations.celery_apps.flask_site import create_app, mail  # noqa: E402

flask_app = create_app()
flask_mail = mail.init_celery(
    app,
    flask_app,
    name="smtp_backends.flask_mail",
    max_retries=2,
    retry_backoff=0.5,
    retry_backoff_max=2.0,
)


def _record_failure(sender: Any, failure: Failure, **_: Any) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        record = {
            "message_id": failure.message_id,
            "recipients": list(failure.recipients),
            "reason": failure.reason,
            "error": type(failure.error).__name__,
        }
        client.rpush(FAILURES_KEY, json.dumps(record))
    finally:
        client.close()


message_failed.connect(_record_failure, weak=False)
