"""Creates the demo user ``alice`` (alice@example.com, password ``wonderland-1865``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations

USERNAME = "alice"
EMAIL = "alice@example.com"
PASSWORD = "wonderland-1865"


def create_demo_user(apps: Any, schema_editor: Any) -> None:
    """Add alice unless she exists (historical models have no ``set_password``)."""
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    user_model = apps.get_model(app_label, model_name)
    user_model.objects.get_or_create(
        username=USERNAME,
        defaults={"email": EMAIL, "password": make_password(PASSWORD), "first_name": "Alice"},
    )


def remove_demo_user(apps: Any, schema_editor: Any) -> None:
    """Undo :func:`create_demo_user`."""
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    apps.get_model(app_label, model_name).objects.filter(username=USERNAME).delete()


class Migration(migrations.Migration):
    """The demo user, for the password reset walk-through."""

    # The user model in its current shape (auth.User, as this site does not swap it).
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_demo_user, remove_demo_user)]
