"""The site's URLs; ``accounts/`` is Django's own login and password reset views."""

from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("contact/", views.contact, name="contact"),
    path("newsletter/", views.newsletter, name="newsletter"),
    path("boom/", views.boom, name="boom"),
    path("accounts/me/", views.me, name="me"),
    path("accounts/", include("django.contrib.auth.urls")),
]
