"""The example Flask app: a contact form and a newsletter, sent with ``smtp_backends.flask``.

Run it with ``flask --app flask_demo run`` from ``example_projects/flask_app`` (or
``example_projects/flask_app/run``, which also starts the development mail server).

Settings come from the environment: ``SMTP_HOST`` / ``SMTP_PORT`` (127.0.0.1:1025) and
``MAIL_DEFAULT_SENDER``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, render_template, request

from smtp_backends.flask import Mail, Message

CONTACT_EMAIL = "staff@example.com"
SUBSCRIBERS: tuple[str, ...] = tuple(f"subscriber{n:02d}@example.com" for n in range(1, 26))

mail = Mail()


def _settings_from_env() -> dict[str, Any]:
    return {
        "MAIL_SERVER": os.environ.get("SMTP_HOST", "127.0.0.1"),
        # MAIL_PORT must be an int: smtp_backends.flask refuses the string "1025".
        "MAIL_PORT": int(os.environ.get("SMTP_PORT", "1025")),
        "MAIL_DEFAULT_SENDER": os.environ.get(
            "MAIL_DEFAULT_SENDER", "Example App <noreply@example.com>"
        ),
        "MAIL_TIMEOUT": 10,
    }


def _form_errors(form: Mapping[str, str], required: tuple[str, ...]) -> dict[str, str]:
    errors = {name: "This field is required." for name in required if not form.get(name, "")}
    email = form.get("email")
    if email is not None and "email" not in errors:
        local, _, domain = email.strip().partition("@")
        if not local or "." not in domain or any(c in email for c in " \r\n<>,"):
            errors["email"] = "Enter a valid email address."
    return errors


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, then ``config`` on top.

    Args:
        config: extra Flask settings (``TESTING``, ``MAIL_*``...), applied last.
    """
    app = Flask(__name__)
    app.config.update(_settings_from_env())
    if config:
        app.config.update(config)
    mail.init_app(app)

    @app.get("/")
    def home() -> str:
        """The start page."""
        return render_template("home.html", subscriber_count=len(SUBSCRIBERS))

    @app.route("/contact/", methods=["GET", "POST"])
    def contact() -> str | tuple[str, int]:
        """A sync view: one message to the staff, the visitor's address in Reply-To."""
        form = {name: request.form.get(name, "").strip() for name in ("name", "email", "subject")}
        form["message"] = request.form.get("message", "")
        if request.method == "POST":
            errors = _form_errors(form, ("name", "email", "subject", "message"))
            if errors:
                return render_template("contact.html", form=form, errors=errors), 400
            message = Message(
                subject=f"[Contact] {form['subject']}",
                recipients=[CONTACT_EMAIL],
                reply_to=(form["name"], form["email"]),
                body=f"From: {form['name']} <{form['email']}>\n\n{form['message']}\n",
            )
            mail.send(message)  # over the app's pooled connection
            return render_template("contact_thanks.html", name=form["name"])
        return render_template("contact.html", form=form, errors={})

    @app.route("/newsletter/", methods=["GET", "POST"])
    async def newsletter() -> str | tuple[str, int]:
        """An async view: one message per subscriber, over one connection.

        ``mail.aconnect()`` borrows a pooled connection for the whole batch; each
        ``await conn.send()`` leaves this request's event loop free meanwhile.
        """
        form = {"subject": request.form.get("subject", "").strip()}
        form["body"] = request.form.get("body", "")
        context: dict[str, Any] = {"form": form, "errors": {}, "sent": None}
        context["subscriber_count"] = len(SUBSCRIBERS)
        if request.method == "POST":
            context["errors"] = _form_errors(form, ("subject", "body"))
            if context["errors"]:
                return render_template("newsletter.html", **context), 400
            paragraphs = [part.strip() for part in form["body"].split("\n\n") if part.strip()]
            sent = 0
            async with mail.aconnect() as connection:
                for address in SUBSCRIBERS:
                    message = Message(subject=form["subject"], recipients=[address])
                    message.body = render_template(
                        "mail/newsletter.txt", paragraphs=paragraphs, recipient=address, **form
                    )
                    message.html = render_template(
                        "mail/newsletter.html", paragraphs=paragraphs, recipient=address, **form
                    )
                    refused = await connection.send(message)
                    sent += 0 if refused else 1
            context["sent"] = sent
        return render_template("newsletter.html", **context)

    return app
