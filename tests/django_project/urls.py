"""URLs of the test project: mail-sending views and Django's auth views."""

from __future__ import annotations

from django.urls import include, path

from tests.django_project import views

urlpatterns = [
    path("send/", views.send_one),
    path("send-many/", views.send_many),
    path("asend/", views.asend_one),
    path("asend-many/", views.asend_many),
    path("asend-timed/", views.asend_timed),
    path("boom/", views.boom),
    path("accounts/", include("django.contrib.auth.urls")),
]
