"""Settings of the example site.

Everything a newcomer may want to change comes from the environment:

- ``SMTP_HOST`` / ``SMTP_PORT``: where mail goes (127.0.0.1:1025, the development mail
  server started by ``run``).
- ``DJANGO_DEBUG``: ``1`` (the default) or ``0``. Django mails ADMINS about server errors
  only when DEBUG is off, so ``run`` sets ``DJANGO_DEBUG=0``.
- ``DJANGO_DB_PATH``: the SQLite file (``db.sqlite3`` next to ``manage.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent

# A development-only key: this site never runs anywhere but 127.0.0.1.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-site-development-key-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1").lower() not in {"0", "false", "no", "off", ""}
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "demo_site",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH") or BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_REDIRECT_URL = "/accounts/me/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------ mail
# The one setting that matters: everything that sends mail (send_mail, EmailMessage.send,
# mail_admins on errors, the password reset form, `manage.py sendtestemail`) goes through it.
# Django 5.2 (and 6.0) name it in EMAIL_BACKEND; Django 6.1 deprecates that and the
# EMAIL_* connection settings in favour of MAILERS, where the same backend takes OPTIONS.
SMTP_HOST = os.environ.get("SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("SMTP_PORT", "1025"))
if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {
            "BACKEND": "smtp_backends.django.AsyncSMTPBackend",
            "OPTIONS": {"host": SMTP_HOST, "port": SMTP_PORT, "timeout": 10},
        },
    }
else:
    EMAIL_BACKEND = "smtp_backends.django.AsyncSMTPBackend"
    EMAIL_HOST = SMTP_HOST
    EMAIL_PORT = SMTP_PORT
    EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = "Example Site <noreply@example.com>"
SERVER_EMAIL = "errors@example.com"
# Django's default logging mails ADMINS about every 500 when DEBUG is off (its
# "mail_admins" handler on the "django.request" logger); nothing else is needed.
if django.VERSION >= (6, 0):
    ADMINS = ["admin@example.com"]
else:
    ADMINS = [("Site Admin", "admin@example.com")]

# Where the contact form sends to, and who gets the newsletter.
CONTACT_EMAIL = "staff@example.com"
