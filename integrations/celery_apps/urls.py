"""URLs of the Django side: one view that queues a batch."""

from __future__ import annotations

from django.urls import path

from integrations.celery_apps.views import send_bulk

urlpatterns = [path("send/", send_bulk)]
